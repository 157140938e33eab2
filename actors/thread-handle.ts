import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { Worker } from 'node:worker_threads';
import { THREAD_LIMITS } from './memory.ts';
import type { ReplicaConfig } from './replica.ts';
import type { ReplicaStats } from './stage-actor.ts';
import type { ReplicaApi } from './thread.ts';

const THREAD_ENTRY = new URL('./thread.ts', import.meta.url);

/**
 * The supervisor's handle on one replica thread. `ended` resolves once — with undefined when
 * the replica stopped as asked, or with the reason it died (thread error or exit, actor
 * failure) — so the supervisor can restart it.
 */
export class ReplicaThread {
  readonly config: ReplicaConfig;
  readonly name: string;
  readonly worker: Worker;
  readonly api: Comlink.Remote<ReplicaApi>;
  readonly ended: Promise<string | undefined>;
  #end!: (reason: string | undefined) => void;
  #stopping = false;
  #done = false;
  #released = false;
  #lastStats: ReplicaStats | undefined;

  constructor(config: ReplicaConfig) {
    this.config = config;
    this.name = `${config.role}-${config.index}`;
    this.ended = new Promise((r) => { this.#end = (reason) => { this.#done = true; r(reason); }; });
    this.worker = new Worker(THREAD_ENTRY, { workerData: config, stderr: false, stdout: false, resourceLimits: THREAD_LIMITS });
    this.api = Comlink.wrap<ReplicaApi>(nodeEndpoint(this.worker));
    this.worker.on('error', (err) => this.#end(`thread error: ${err.stack ?? err.message}`));
    this.worker.on('exit', (code) => this.#end(this.#stopping ? undefined : `thread exited with code ${code}`));
  }

  /** Starts the replica's actor; rejects with the reason when it cannot start. */
  async start(): Promise<void> {
    await Promise.race([
      this.api.start(),
      this.ended.then((r) => { throw new Error(r ?? 'stopped while starting'); }),
    ]);
    void this.api.closed().then((failure) => { if (failure && !this.#stopping) this.#end(`actor failed: ${failure}`); }, () => undefined);
  }

  /** Last counters, refreshed by {@link poll}. */
  get stats(): ReplicaStats | undefined {
    return this.#lastStats;
  }

  /** Asks the replica for its counters; rejects if it does not answer within `timeoutMs`. */
  async poll(timeoutMs: number): Promise<ReplicaStats | undefined> {
    // A thread that has ended answers no more: asking would only wait out the timeout.
    if (this.#done) return this.#lastStats;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs); });
    try {
      const s = await Promise.race([this.api.stats(), timeout]);
      if (s) this.#lastStats = s;
      return s;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Finishes held work, then ends the thread; past `graceMs`, ends it anyway. */
  async drain(graceMs: number): Promise<void> {
    this.#stopping = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#done ? undefined : this.api.drain().catch(() => undefined),
      this.ended,
      new Promise<void>((r) => { timer = setTimeout(r, graceMs); }),
    ]);
    clearTimeout(timer);
    await this.poll(1_000).catch(() => undefined);
    await this.kill();
  }

  /** Ends the thread now; what it held is redelivered later. */
  async kill(): Promise<void> {
    this.#stopping = true;
    // A released proxy throws on any use, releasing it again included (kill can follow drain).
    if (!this.#released) {
      this.#released = true;
      this.api[Comlink.releaseProxy]();
    }
    await this.worker.terminate();
    this.#end(undefined);
  }

  /** Marks an end that the supervisor caused (e.g. an unresponsive replica). */
  fail(reason: string): void {
    this.#end(reason);
    void this.worker.terminate();
  }
}
