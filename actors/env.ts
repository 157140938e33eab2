import { hostname } from 'node:os';
import { join } from 'node:path';
import { stageConfig, WorkProducer, type NatsHandle, type StageConfig } from '../messages/mod.ts';
import { maxInFlightOf, rolesOf, STAGE_OF, type JobContext, type PipelineDefinition, type Role, type Stage } from './pipeline.ts';

/** Everything one replica needs to run: the pipeline, its NATS handle and the job's settings. */
export interface ReplicaEnv {
  readonly def: PipelineDefinition;
  readonly nats: NatsHandle;
  readonly role: Role;
  /** Unique id of this replica (host, pid, role, index). */
  readonly replicaId: string;
  readonly params: Readonly<Record<string, string>>;
  readonly out: string;
  readonly run: string;
  readonly producer: WorkProducer;
}

/** The stage configuration of each consuming role of a pipeline. */
export function stageConfigs(def: PipelineDefinition): Map<Stage, StageConfig> {
  const out = new Map<Stage, StageConfig>();
  for (const role of rolesOf(def)) {
    if (role === 'scanner') continue;
    const stage = STAGE_OF[role];
    const { replicas: _r, maxInFlight: _m, batchSize: _b, batchWaitMs: _w, standby: _s, ...limits } = def.roles?.[role] ?? {};
    const cfg = stageConfig(stage, limits, `roles.${role}`);
    // The stage must be able to hold what its replicas pull at once.
    if (cfg.maxAckPending < maxInFlightOf(def, role)) cfg.maxAckPending = maxInFlightOf(def, role);
    out.set(stage, cfg);
  }
  return out;
}

/**
 * How troupe's replicas frame the items they publish (see WorkProducer): 64 items or 64 KiB
 * to a stage that replicas take one item at a time, so that no replica takes far more than
 * its share; 256 items or 256 KiB to the Writer's stage, which one Writer takes in batches
 * (500 by default) with no one to share with. Per message, nats-server, the client's
 * parser, the decoder and the ack then work once per 256 rows: the Writer actor of the
 * benchmark went from 69–75k to 84–89k rows/s (3 interleaved pairs); 512 items were no faster,
 * and nats-server's CPU per row rose. A frame never exceeds the stage's `maxMessageSize`.
 */
export const frameLimits = Object.freeze({
  maxFrameItems: (stage: string): number => (stage === STAGE_OF.writer ? 256 : 64),
  maxFrameBytes: (stage: string): number => (stage === STAGE_OF.writer ? 256 * 1024 : 64 * 1024),
});

/** The job's database file inside the output folder. */
export function dbPath(out: string, pipeline: string): string {
  return join(out, `${pipeline}.db`);
}

/** `host/pid/role-index`, plus `.n` for the n-th restart of that replica (counters restart at 0). */
export function replicaId(role: Role, index: number, incarnation = 0): string {
  return `${hostname()}/${process.pid}/${role}-${index}${incarnation > 0 ? `.${incarnation}` : ''}`;
}

export function jobContext(env: ReplicaEnv, signal: AbortSignal): JobContext {
  return {
    pipeline: env.def.name, params: env.params, out: env.out, run: env.run, signal,
    log: (m) => console.error(`[${env.def.name} ${env.replicaId}] ${m}`),
  };
}
