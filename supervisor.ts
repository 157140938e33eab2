import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { codes, deadLetterStranded, decode, encode, ensureTopology, openNats, TroupeError, WorkProducer, type NatsHandle } from './messages/mod.ts';
import { stageConfigs } from './actors/env.ts';
import { FINISH_KEY } from './actors/exporter.ts';
import { replicasOf, rolesOf, STAGE_OF, type PipelineDefinition, type Role, type Stage } from './actors/pipeline.ts';
import { itemsPerMessage, Progress, type StageView } from './actors/progress.ts';
import { loadPipeline, type ReplicaConfig } from './actors/replica.ts';
import type { ReplicaStats } from './actors/stage-actor.ts';
import { ReplicaThread } from './actors/thread-handle.ts';
import { natsUrlFile } from './actors/monitor.ts';

export interface SupervisorOptions {
  /** Path of the pipeline module (default export: `definePipeline(...)`). */
  pipelinePath: string;
  /** `start` runs the whole job; `worker` joins a running one with replicas of some roles. */
  mode?: 'start' | 'worker';
  /** NATS URL; an embedded server in `stateDir` when absent (start mode only). */
  natsUrl?: string | undefined;
  /** Output folder (sandbox root, database). @default out/<pipeline> */
  out?: string | undefined;
  /** State folder (embedded NATS storage). @default <out>/.troupe */
  stateDir?: string | undefined;
  /** Replicas per role, overriding the pipeline's. */
  replicas?: Partial<Record<Role, number>>;
  /** Pipeline parameters (`--url X`). */
  params?: Record<string, string>;
  /** How long draining may take before replicas are stopped anyway, ms. @default 30_000 */
  graceMs?: number;
  /** Progress display: bars on a TTY, plain lines otherwise, or none. @default 'auto' */
  progress?: 'auto' | 'tty' | 'plain' | 'none';
  /** A replica that does not answer within this time is restarted, ms. @default 15_000 */
  unresponsiveMs?: number;
}

export interface Summary {
  pipeline: string;
  ok: boolean;
  reason?: string;
  wallMs: number;
  stages: Record<string, { done: number; retried: number; dead: number }>;
  deadLetters: number;
  itemsPerSecond: number;
  peakRssBytes: number;
  restarts: number;
}

const STAGES_IN_ORDER: Array<Role> = ['scanner', 'fetcher', 'generator', 'exporter', 'writer'];

function option(message: string): TroupeError {
  return new TroupeError(codes.BAD_OPTION, message);
}

/** Parses `fetch=8,generate=2` (stage or role names) into replicas per role. */
export function parseReplicas(spec: string, def?: PipelineDefinition): Partial<Record<Role, number>> {
  const out: Partial<Record<Role, number>> = {};
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [name, count] = part.split('=');
    const role = (Object.entries(STAGE_OF).find(([, st]) => st === name)?.[0] ?? name) as Role;
    if (!['scanner', 'fetcher', 'generator', 'writer', 'exporter'].includes(role)) {
      throw option(`--replicas: unknown role or stage "${name}" (use fetch, generate, write, export)`);
    }
    if (def && def[role] === undefined) throw option(`--replicas: pipeline ${def.name} has no ${role}`);
    const n = Number(count);
    if (!Number.isSafeInteger(n) || n < 0) throw option(`--replicas: ${name} needs a non-negative integer (got "${count}")`);
    if ((role === 'writer' || role === 'scanner') && n > 1) throw option(`--replicas: ${name} can only have one replica`);
    out[role] = n;
  }
  return out;
}

/**
 * Runs a pipeline: creates its topology, starts replicas of each role on worker threads,
 * restarts failed or unresponsive ones under an intensity limit (escalating past it), shows
 * progress, ends a finite job by itself and shuts down gracefully on the first signal.
 */
export class Supervisor {
  readonly opts: SupervisorOptions;
  def!: PipelineDefinition;
  nats!: NatsHandle;
  out!: string;
  runId = `r${Date.now().toString(36)}`;
  readonly #threads = new Map<string, ReplicaThread>();
  readonly #restartTimes: number[] = [];
  readonly #heartbeats = new Map<string, ReplicaStats & { ts: number }>();
  #restarts = 0;
  #stopping = false;
  #escalation: string | undefined;
  #started = Date.now();
  #peakRss = 0;
  /** Messages the server gave up on, moved to dead letters at the end (see deadLetterStranded). */
  #stranded = 0;
  #wake: (() => void) | undefined;
  /** True once the job ended by itself (source exhausted, no work left). */
  #finished = false;
  #runFile: string | undefined;
  #progress: Progress | undefined;

  constructor(opts: SupervisorOptions) {
    this.opts = opts;
  }

  /** Runs until the job ends (or, in worker mode, until stopped). */
  async run(): Promise<Summary> {
    this.def = await loadPipeline(resolve(this.opts.pipelinePath));
    const params = this.#params();
    const mode = this.opts.mode ?? 'start';
    const replicas = { ...Object.fromEntries(rolesOf(this.def).map((r) => [r, replicasOf(this.def, r)])), ...this.opts.replicas } as Record<Role, number>;
    for (const role of Object.keys(this.opts.replicas ?? {}) as Role[]) {
      if (this.def[role] === undefined) throw option(`--replicas: pipeline ${this.def.name} has no ${role}`);
    }
    if (mode === 'worker') {
      if (!this.opts.natsUrl) throw option('troupe worker needs --nats URL (or TROUPE_NATS_URL): it joins a running pipeline');
      if (!this.opts.replicas || Object.keys(this.opts.replicas).length === 0) throw option('troupe worker needs --replicas, e.g. --replicas fetch=4,generate=2');
      if (this.opts.replicas.writer || this.opts.replicas.scanner) throw option('troupe worker cannot run the Writer or the Scanner: a pipeline has exactly one of each, run by troupe start');
    }
    this.out = resolve(this.opts.out ?? `out/${this.def.name}`);
    await mkdir(this.out, { recursive: true });
    const stateDir = resolve(this.opts.stateDir ?? `${this.out}/.troupe`);
    await mkdir(stateDir, { recursive: true });
    this.nats = await openNats({ url: this.opts.natsUrl, stateDir, name: `troupe ${this.def.name} supervisor` });
    if (this.nats.server) await writeFile(natsUrlFile(stateDir), this.nats.url);
    if (mode === 'start') await this.#resumeRun(stateDir);
    const summary = await this.#supervise(mode, replicas, params).finally(async () => {
      this.#progress?.stop();
      await this.nats.close();
    });
    return summary;
  }

  /**
   * The run id scopes message deduplication (message id = stage + run + key). A job that was
   * interrupted or killed resumes under the same run, so what the new process re-publishes of
   * the old one's work is deduplicated by the server; a job that finished starts a new run.
   */
  async #resumeRun(stateDir: string): Promise<void> {
    this.#runFile = join(stateDir, 'run');
    const previous = (await readFile(this.#runFile, 'utf8').catch(() => '')).trim();
    if (/^r[0-9a-z]+$/.test(previous)) this.runId = previous;
    else await writeFile(this.#runFile, this.runId);
  }

  #params(): Record<string, string> {
    const declared = this.def.params ?? {};
    const given = this.opts.params ?? {};
    for (const k of Object.keys(given)) {
      if (!(k in declared)) {
        const known = Object.keys(declared).map((p) => `--${p}`).join(', ') || 'none';
        throw option(`unknown option --${k} for pipeline ${this.def.name} (its options: ${known})`);
      }
    }
    const out: Record<string, string> = {};
    for (const [k, spec] of Object.entries(declared)) {
      const v = given[k] ?? spec.default;
      if (v === undefined && spec.required) throw option(`--${k} is required by pipeline ${this.def.name}: ${spec.description}`);
      const problem = v === undefined ? undefined : spec.check?.(v);
      if (problem) throw option(problem);
      if (v !== undefined) out[k] = v;
    }
    return out;
  }

  async #supervise(mode: 'start' | 'worker', replicas: Record<Role, number>, params: Record<string, string>): Promise<Summary> {
    const s = new WorkProducer(this.nats.js, this.def.name).subjects;
    if (mode === 'worker') this.runId = await this.#jobRun(s.control('status')) ?? this.runId;
    await ensureTopology(this.nats.jsm, this.def.name, [...stageConfigs(this.def).values()]);
    const hb = this.nats.nc.subscribe(`troupe.${this.def.name}.events.*.heartbeat`, {
      callback: (_e, m) => {
        try {
          const st = decode(m.data) as ReplicaStats & { ts: number };
          this.#heartbeats.set(st.replica, st);
        } catch { /* a foreign publisher's garbage is not ours to act on */ }
      },
    });
    const finished = this.nats.nc.subscribe(s.events('job', 'finished'), { callback: () => { if (mode === 'worker') this.#stop('the job finished'); } });
    // Request/reply control: `nats req troupe.P.control.stop ''` drains the job like Ctrl+C.
    const control = mode === 'start' ? [
      this.nats.nc.subscribe(s.control('stop'), { callback: (_e, m) => { m.respond(encode({ ok: true, stopping: true })); this.#stop('interrupted'); } }),
      this.nats.nc.subscribe(s.control('drain'), { callback: (_e, m) => { m.respond(encode({ ok: true, stopping: true })); this.#stop('interrupted'); } }),
      this.nats.nc.subscribe(s.control('status'), {
        callback: (_e, m) => { void this.#views().then((views) => m.respond(encode({ pipeline: this.def.name, run: this.runId, stopping: this.#stopping, stages: views }))); },
      }),
    ] : [];
    const onSignal = () => {
      if (this.#stopping) {
        console.error('troupe: second signal, exiting now; un-acked work is redelivered on the next start');
        process.exit(130);
      }
      console.error('troupe: stopping — finishing in-flight work (press Ctrl+C again to exit at once)');
      this.#stop('interrupted');
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const fetchShare = replicas.fetcher ?? 0;
    const base = { pipelinePath: resolve(this.opts.pipelinePath), natsUrl: this.nats.url, params, out: this.out, run: this.runId, fetchShare };
    try {
      // The Writer first (it takes the lease and creates the schema), the Scanner last (its
      // items need consumers); the stages between start together.
      const spawnAll = (roles: Role[]) => Promise.all(roles.filter((r) => this.def[r] !== undefined)
        .flatMap((role) => Array.from({ length: replicas[role] ?? 0 }, (_, i) => this.#spawn({ ...base, role, index: i }))));
      if (mode === 'start') await spawnAll(['writer']);
      await spawnAll(['fetcher', 'generator', 'exporter']);
      if (mode === 'start') await spawnAll(['scanner']);
      this.#progress = new Progress(this.def.name, this.opts.progress ?? 'auto');
      await this.#watch(mode);
    } catch (err) {
      this.#escalation ??= (err as Error).message;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await this.#shutdown();
      if (mode === 'start' && !this.#escalation) this.nats.nc.publish(s.events('job', 'finished'), encode({ run: this.runId }));
      if (this.#finished && this.#runFile) await rm(this.#runFile, { force: true });
      hb.unsubscribe();
      finished.unsubscribe();
      for (const c of control) c.unsubscribe();
    }
    return this.#summary();
  }

  /**
   * The run id of the job a worker joins. Replicas scope the ids of what they publish by run,
   * so a worker must share it: an item redelivered from one process to the other then
   * republishes its outputs under the same ids, which the server deduplicates.
   */
  async #jobRun(subject: string): Promise<string | undefined> {
    try {
      const reply = decode((await this.nats.nc.request(subject, undefined, { timeout: 5_000 })).data) as { run?: unknown };
      if (typeof reply.run === 'string') return reply.run;
    } catch { /* no supervisor answered */ }
    console.error(`troupe worker: no troupe start of pipeline ${this.def.name} answered; outputs of items redelivered between processes may be written twice`);
    return undefined;
  }

  async #spawn(config: ReplicaConfig): Promise<void> {
    const thread = new ReplicaThread(config);
    this.#threads.set(thread.name, thread);
    await thread.start().catch(async (err: Error) => {
      await thread.kill();
      throw err;
    });
    void thread.ended.then((reason) => this.#onEnded(thread, reason));
  }

  #onEnded(thread: ReplicaThread, reason: string | undefined): void {
    // A failed actor leaves its thread (and that thread's NATS connection) alive: end it, or
    // every restart leaks one and the process never exits.
    if (reason !== undefined) void thread.worker.terminate();
    if (this.#threads.get(thread.name) !== thread || this.#stopping || reason === undefined) return;
    const now = Date.now();
    const { maxRestarts = 5, withinMs = 10_000 } = this.def.restarts ?? {};
    this.#restartTimes.push(now);
    while (this.#restartTimes.length && this.#restartTimes[0]! < now - withinMs) this.#restartTimes.shift();
    if (this.#restartTimes.length > maxRestarts) {
      this.#escalation = `replica ${thread.name} failed and the restart limit (${maxRestarts} in ${withinMs / 1000} s) is reached: ${reason}`;
      this.#stop(this.#escalation);
      return;
    }
    this.#restarts++;
    const delay = Math.min(100 * 2 ** (this.#restartTimes.length - 1), 5_000);
    console.error(`troupe: replica ${thread.name} ended (${firstLine(reason)}); restarting in ${delay} ms`);
    void sleep(delay).then(async () => {
      if (this.#stopping) return;
      try {
        await this.#spawn({ ...thread.config, incarnation: (thread.config.incarnation ?? 0) + 1 });
      } catch (err) {
        this.#onEnded(thread, `restart failed: ${(err as Error).message}`);
      }
    });
  }

  #stop(reason: string): void {
    if (this.#stopping) return;
    this.#stopping = true;
    if (reason !== 'interrupted' && reason !== 'the job finished') console.error(`troupe: stopping: ${reason}`);
    this.#wake?.();
  }

  /** Polls replicas (restarting unresponsive ones), updates progress and detects the end. */
  async #watch(mode: 'start' | 'worker'): Promise<void> {
    let idleChecks = 0;
    let finishSent = false;
    const unresponsive = this.opts.unresponsiveMs ?? 15_000;
    while (!this.#stopping) {
      await new Promise<void>((r) => { this.#wake = r; setTimeout(r, 250); });
      this.#peakRss = Math.max(this.#peakRss, process.memoryUsage().rss);
      await Promise.all([...this.#threads.values()].map((t) => t.poll(unresponsive).catch((err: Error) => {
        if (!this.#stopping) t.fail(`unresponsive: ${err.message}`);
      })));
      const views = await this.#views();
      this.#progress?.update(views);
      if (mode === 'worker') continue;
      const scanner = [...this.#threads.values()].find((t) => t.config.role === 'scanner');
      const exhausted = (scanner?.stats as { exhausted?: boolean } | undefined)?.exhausted === true;
      const empty = views.every((v) => v.messages === 0);
      idleChecks = exhausted && empty ? idleChecks + 1 : 0;
      if (idleChecks >= 2) {
        // A message every replica that took it stopped on reaches max_deliver and counts as
        // neither queued nor in flight: it goes to dead letters here, not silently left behind.
        for (const stage of stageConfigs(this.def).values()) {
          const n = await deadLetterStranded(this.nats.js, this.nats.jsm, this.def.name, stage).catch((err: Error) => {
            console.error(`troupe: stage ${stage.name}: could not check for undelivered messages: ${err.message}`);
            return 0;
          });
          if (n === 0) continue;
          this.#stranded += n;
          console.error(`troupe: stage ${stage.name}: ${n} message(s) delivered ${stage.maxAttempts + 1} times, each time to a replica that stopped, went to dead letters (troupe dead list ${this.def.name})`);
        }
        if (this.def.exporter?.finish && !finishSent) {
          finishSent = true;
          idleChecks = 0;
          await new WorkProducer(this.nats.js, this.def.name, { dedupeScope: this.runId }).publish('export', `${FINISH_KEY}${this.runId}`, { run: this.runId });
          continue;
        }
        this.#finished = true;
        this.#stop('the job finished');
      }
    }
  }

  async #views(): Promise<StageView[]> {
    const s = new WorkProducer(this.nats.js, this.def.name).subjects;
    const totals = new Map<string, { done: number; retried: number; dead: number; replicas: number; messages: number; items: number }>();
    const now = Date.now();
    for (const t of this.#threads.values()) if (t.stats) this.#heartbeats.set(t.stats.replica, { ...t.stats, ts: now });
    for (const hb of this.#heartbeats.values()) {
      const cur = totals.get(hb.stage) ?? { done: 0, retried: 0, dead: 0, replicas: 0, messages: 0, items: 0 };
      cur.done += hb.done; cur.retried += hb.retried; cur.dead += hb.dead;
      cur.messages += hb.messages ?? 0; cur.items += hb.items ?? 0;
      if (now - hb.ts < 5_000 && hb.state !== 'stopped' && hb.state !== 'failed') cur.replicas++;
      totals.set(hb.stage, cur);
    }
    const views: StageView[] = [];
    for (const stage of stageConfigs(this.def).keys()) {
      // Counted from the consumer, not the stream: after a crash nats-server 2.9 can keep
      // messages its consumer already acked, which would count as queued for ever.
      const cinfo = await this.nats.jsm.consumers.info(s.workStream(stage), s.consumer(stage));
      const t = totals.get(stage) ?? { done: 0, retried: 0, dead: 0, replicas: 0, messages: 0, items: 0 };
      const perMessage = itemsPerMessage(t.messages, t.items);
      views.push({
        stage, done: t.done, retried: t.retried, dead: t.dead, replicas: t.replicas,
        inFlight: Math.round(cinfo.num_ack_pending * perMessage), queued: Math.round(cinfo.num_pending * perMessage),
        messages: cinfo.num_pending + cinfo.num_ack_pending,
      });
    }
    const scan = totals.get('scan');
    if (scan) views.unshift({ stage: 'scan', done: scan.done, retried: 0, dead: 0, replicas: scan.replicas, inFlight: 0, queued: 0, messages: 0 });
    return views;
  }

  async #shutdown(): Promise<void> {
    const grace = this.opts.graceMs ?? 30_000;
    const deadline = Date.now() + grace;
    // The Scanner stops reading first; then every stage finishes what it holds at once: what
    // a stage publishes downstream meanwhile stays queued for the next run.
    const drain = (roles: Role[]) => Promise.all([...this.#threads.values()].filter((t) => roles.includes(t.config.role))
      .map((t) => t.drain(Math.max(1_000, deadline - Date.now()))));
    await drain(['scanner']);
    await drain(STAGES_IN_ORDER.filter((r) => r !== 'scanner'));
    this.#threads.clear();
  }

  #summary(): Summary {
    const wallMs = Date.now() - this.#started;
    const stages: Summary['stages'] = {};
    for (const hb of this.#heartbeats.values()) {
      const cur = stages[hb.stage] ?? { done: 0, retried: 0, dead: 0 };
      cur.done += hb.done; cur.retried += hb.retried; cur.dead += hb.dead;
      stages[hb.stage] = cur;
    }
    const deadLetters = Object.values(stages).reduce((a, s) => a + s.dead, 0) + this.#stranded;
    const written = stages.write?.done ?? 0;
    const summary: Summary = {
      pipeline: this.def.name, ok: this.#escalation === undefined, wallMs, stages, deadLetters,
      itemsPerSecond: wallMs > 0 ? Math.round((written / wallMs) * 1000) : 0,
      peakRssBytes: this.#peakRss, restarts: this.#restarts,
    };
    if (this.#escalation) summary.reason = this.#escalation;
    return summary;
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** Formats a summary for people. */
export function formatSummary(s: Summary): string {
  const lines = [`${s.ok ? '✔' : '✖'} ${s.pipeline} ${s.ok ? 'finished' : 'stopped'} in ${(s.wallMs / 1000).toFixed(1)} s` + (s.reason ? `: ${s.reason}` : '')];
  for (const [stage, v] of Object.entries(s.stages)) lines.push(`  ${stage.padEnd(9)} done ${v.done}  retried ${v.retried}  dead ${v.dead}`);
  lines.push(`  dead letters ${s.deadLetters}  restarts ${s.restarts}  written/s ${s.itemsPerSecond}  peak RSS ${(s.peakRssBytes / 2 ** 20).toFixed(0)} MiB  host ${hostname()}`);
  return lines.join('\n');
}

export type { Stage };
