import { Svcm, type Service } from '@nats-io/services';
import { pathToFileURL } from 'node:url';
import { encode, openNats, WorkProducer, codes, TroupeError } from '../messages/mod.ts';
import type { ReplicaEnv } from './env.ts';
import { frameLimits, replicaId, stageConfigs } from './env.ts';
import type { Lifecycle } from './lifecycle.ts';
import { validatePipeline, type PipelineDefinition, type Role, type Stage } from './pipeline.ts';
import type { ReplicaStats } from './stage-actor.ts';

/** What a replica is told at start (passed as workerData). */
export interface ReplicaConfig {
  pipelinePath: string;
  role: Role;
  index: number;
  natsUrl: string;
  params: Record<string, string>;
  out: string;
  run: string;
  /** Fetcher replicas sharing the per-origin rate limits. */
  fetchShare?: number;
  /** Restarts of this replica so far. @default 0 */
  incarnation?: number;
  /** Heartbeat period, ms. @default 1000 */
  heartbeatMs?: number;
}

type RoleActor = Lifecycle & { stats(): ReplicaStats };

/** Loads a pipeline module: its default export must be a `definePipeline(...)` result. */
export async function loadPipeline(path: string): Promise<PipelineDefinition> {
  let mod: { default?: unknown };
  try {
    mod = await import(pathToFileURL(path).href);
  } catch (err) {
    throw new TroupeError(codes.BAD_OPTION, `cannot load pipeline ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!mod.default) throw new TroupeError(codes.BAD_OPTION, `pipeline ${path} has no default export (export default definePipeline({...}))`);
  return validatePipeline(mod.default as PipelineDefinition);
}

/**
 * The actor of a replica's role. Each role's module is imported on demand, so a thread loads
 * only what its role needs (a Fetcher thread neither the ORM nor comlink): start-up of a job's
 * threads is dominated by module loading.
 */
async function createActor(env: ReplicaEnv, c: ReplicaConfig): Promise<RoleActor> {
  switch (c.role) {
    case 'scanner': return new (await import('./scanner.ts')).Scanner(env);
    case 'fetcher': return new (await import('./fetcher.ts')).Fetcher(env, c.fetchShare === undefined ? {} : { replicasSharingLimits: c.fetchShare });
    case 'generator': {
      const { Generator, standbyOf } = await import('./generator.ts');
      return new Generator(env, { standby: standbyOf(env.def, c.index) });
    }
    case 'writer': return new (await import('./writer.ts')).Writer(env);
    default: return new (await import('./exporter.ts')).Exporter(env);
  }
}

/**
 * One replica of one role: loads the pipeline, connects to NATS, runs the role's actor and
 * publishes a heartbeat with its counters. Runs inside a worker thread (see thread.ts).
 */
export class Replica {
  readonly config: ReplicaConfig;
  actor: RoleActor | undefined;
  env: ReplicaEnv | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #service: Service | undefined;

  constructor(config: ReplicaConfig) {
    this.config = config;
  }

  async start(): Promise<void> {
    const c = this.config;
    const def = await loadPipeline(c.pipelinePath);
    const nats = await openNats({ url: c.natsUrl, stateDir: c.out, name: `troupe ${def.name} ${c.role}-${c.index}` });
    const limits = stageConfigs(def);
    const producer = new WorkProducer(nats.js, def.name, {
      ...frameLimits, dedupeScope: c.run, maxMessageSize: (stage) => limits.get(stage as Stage)?.maxMessageSize ?? 1024 * 1024,
    });
    const env: ReplicaEnv = { def, nats, role: c.role, replicaId: replicaId(c.role, c.index, c.incarnation), params: c.params, out: c.out, run: c.run, producer };
    this.env = env;
    const actor = await createActor(env, c);
    this.actor = actor;
    await actor.start();
    const subject = producer.subjects.events(actor.stats().stage, 'heartbeat');
    this.#heartbeat = setInterval(() => {
      if (!nats.nc.isClosed()) nats.nc.publish(subject, encode({ ...actor.stats(), ts: Date.now(), pid: process.pid }));
    }, c.heartbeatMs ?? 1_000);
    this.#heartbeat.unref();
    this.#service = await registerService(env, actor, c);
  }

  stats(): ReplicaStats | undefined {
    return this.actor?.stats();
  }

  async drain(): Promise<void> {
    await this.actor?.drain();
    await this.#shutdown();
  }

  async close(): Promise<void> {
    await this.actor?.close();
    await this.#shutdown();
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#heartbeat);
    await this.#service?.stop().catch(() => undefined);
    const nats = this.env?.nats;
    if (nats && !nats.nc.isClosed()) {
      // A last heartbeat so watchers see the final counters.
      if (this.actor) nats.nc.publish(this.env!.producer.subjects.events(this.actor.stats().stage, 'heartbeat'), encode({ ...this.actor.stats(), ts: Date.now(), pid: process.pid }));
      await nats.close();
    }
  }
}

/** troupe's version, reported by every replica's micro service. */
export const VERSION = '0.1.0';

/**
 * Registers the replica as a NATS micro service (`troupe-<pipeline>-<role>`), so that
 * `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` find it, with a `stats` endpoint on
 * `troupe.<pipeline>.control.stats` that every replica answers.
 */
async function registerService(env: ReplicaEnv, actor: RoleActor, c: ReplicaConfig): Promise<Service> {
  // @nats-io/services (3.0 pre-release) pins its own copy of nats-core: same runtime object, distinct types.
  const svc = await new Svcm(env.nats.nc as unknown as ConstructorParameters<typeof Svcm>[0]).add({
    name: `troupe-${env.def.name}-${c.role}`,
    version: VERSION,
    description: `troupe ${c.role} replica of pipeline ${env.def.name}`,
    metadata: { pipeline: env.def.name, role: c.role, replica: env.replicaId, run: env.run },
    // Each replica in its own queue group: a stats request reaches every one of them.
    queue: `q${process.pid}${c.role}${c.index}`,
    statsHandler: async () => actor.stats(),
  });
  svc.addEndpoint('stats', {
    subject: env.producer.subjects.control('stats'),
    handler: (err, msg) => { if (!err) msg.respond(encode(actor.stats())); },
  });
  return svc;
}
