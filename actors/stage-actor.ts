import { encode, WorkConsumer, type Delivery, type Outcome } from '../messages/mod.ts';
import { jobContext, stageConfigs, type ReplicaEnv } from './env.ts';
import { Lifecycle } from './lifecycle.ts';
import { maxInFlightOf, STAGE_OF, type Item, type JobContext, type Stage } from './pipeline.ts';

/** Counters a replica reports in its heartbeat. */
export interface ReplicaStats {
  replica: string;
  role: string;
  stage: string;
  state: string;
  done: number;
  retried: number;
  dead: number;
  inFlight: number;
  /** Items this replica published downstream. */
  emitted: number;
  /** Messages taken and the items they carried: how many items a queued message holds, on average. */
  messages: number;
  items: number;
  /** Fetchers with rate limits: how many Fetchers divide each limit, this one included. */
  rateShare?: number;
  /** Generators beyond the machine's cores: taking work (`active`) or not (see Standby). */
  standby?: 'active' | 'parked';
}

/**
 * An actor that consumes one work stage: pulls with a bounded in-flight set, runs
 * `process` for each delivery, publishes its outputs downstream (waiting while the next
 * stage is full, and telling the server it is still working), and only then acks.
 */
export abstract class StageActor extends Lifecycle {
  readonly env: ReplicaEnv;
  readonly stage: Stage;
  protected consumer!: WorkConsumer;
  protected readonly abort = new AbortController();
  protected ctx: JobContext;
  emitted = 0;

  constructor(env: ReplicaEnv, options: { batchSize?: number; batchWaitMs?: number; prefetch?: number; pausable?: boolean } = {}) {
    super(env.replicaId);
    this.env = env;
    const role = env.role as keyof typeof STAGE_OF;
    this.stage = STAGE_OF[role];
    this.ctx = jobContext(env, this.abort.signal);
    const cfg = stageConfigs(env.def).get(this.stage)!;
    this.consumer = new WorkConsumer(env.nats.js, env.def.name, cfg, (batch) => this.handle(batch), {
      maxInFlight: maxInFlightOf(env.def, env.role),
      ...options,
    });
    this.consumer.onOutcome((o) => this.#event(o));
  }

  /** Handles one batch; returns per-delivery `undefined` or the error. */
  protected abstract handle(batch: Delivery[]): Promise<unknown[]>;

  /**
   * Publishes outputs to `stage`, holding the input (working) while that stage is full. The
   * input's handler slot goes to the next item meanwhile: waiting for the server is not work.
   */
  protected async emit(stage: Stage, items: Array<Item<unknown>>, d?: Delivery): Promise<void> {
    d?.yieldSlot();
    await Promise.all(items.map((it) => this.env.producer.publish(stage, it.key, it.body, {
      onStall: d ? () => d.working() : undefined, signal: this.abort.signal,
    })));
    this.emitted += items.length;
  }

  /** Runs `fn` for each delivery with at most `concurrency` at once; collects outcomes. */
  protected async each(batch: Delivery[], fn: (d: Delivery) => Promise<void>): Promise<unknown[]> {
    return Promise.all(batch.map(async (d) => {
      try {
        await fn(d);
        return undefined;
      } catch (err) {
        return err;
      }
    }));
  }

  protected async onStart(): Promise<void> {
    await this.consumer.start();
  }

  protected async onDrain(): Promise<void> {
    await this.consumer.drain();
  }

  protected async onClose(): Promise<void> {
    this.abort.abort();
    this.consumer.close();
  }

  stats(): ReplicaStats {
    const s = this.consumer.stats;
    return { replica: this.env.replicaId, role: this.env.role, stage: this.stage, state: this.state,
      done: s.done, retried: s.retried, dead: s.dead, inFlight: s.inFlight, emitted: this.emitted, messages: s.messages, items: s.items };
  }

  #event(o: Outcome): void {
    if (o.kind === 'done') return; // successes are counted in heartbeats, not one event each
    const subject = this.env.nats.nc.isClosed() ? undefined : this.consumer.subjects.events(this.stage, o.kind === 'dead' ? 'dead' : 'error');
    if (subject) this.env.nats.nc.publish(subject, encode({ replica: this.env.replicaId, ...o }));
  }
}
