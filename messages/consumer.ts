import type { Consumer, JetStreamClient, JsMsg } from '@nats-io/jetstream';
import { setTimeout as sleep } from 'node:timers/promises';
import { encode } from './codec.ts';
import { decodeEnvelope, type Envelope } from './envelope.ts';
import { codes, isRetryable, toWire, TroupeError, type WireError, RetryableError } from './errors.ts';
import { subjects, type Subjects } from './subjects.ts';
import type { StageConfig } from './topology.ts';

/** One message handed to a handler. */
export interface Delivery {
  readonly env: Envelope<unknown>;
  /** 1 on first delivery. */
  readonly attempt: number;
  /** Tells the server the message is still being worked on (resets its ack timer). */
  working(): void;
}

/** Handles a batch; returns, per delivery, `undefined` for success or the error it failed with. */
export type BatchHandler = (batch: Delivery[], signal: AbortSignal) => Promise<Array<unknown>>;

export interface ConsumerOptions {
  /** Messages this replica holds at once (being handled or batched). @default 64 */
  maxInFlight?: number;
  /** Messages per handler call. 1 handles each on its own, concurrently. @default 1 */
  batchSize?: number;
  /** How long a partial batch waits for more messages, ms. @default 20 */
  batchWaitMs?: number;
  /** Delay before a failed message is redelivered: `min(base * 2^(attempt-1), max)` with jitter. @default 500 */
  retryBaseMs?: number;
  /** @default 30_000 */
  retryMaxMs?: number;
  /** How long one pull request stays open, ms. @default 5_000 */
  pullExpiresMs?: number;
  /**
   * Messages the client may buffer beyond those held, so that a freed slot is refilled at
   * once. A replica holds at most `maxInFlight + prefetch` messages.
   * @default min(maxInFlight, 256)
   */
  prefetch?: number;
}

/** A dead letter: the original message, why it failed and how often it was tried. */
export interface DeadLetter {
  pipeline: string;
  stage: string;
  key: string | null;
  error: WireError;
  attempts: number;
  ts: number;
  /** The decoded envelope when the message was a valid one. */
  envelope: Envelope<unknown> | null;
  /** The original bytes, exactly as received. */
  data: Uint8Array;
}

export interface ConsumerStats {
  done: number;
  retried: number;
  dead: number;
  inFlight: number;
  peakInFlight: number;
}

export type Outcome = { kind: 'done' | 'retried' | 'dead'; key: string | null; error?: WireError; attempt: number };

const defaults = Object.freeze({ maxInFlight: 64, batchSize: 1, batchWaitMs: 20, retryBaseMs: 500, retryMaxMs: 30_000, pullExpiresMs: 5_000 });

/**
 * The consume loop of one replica of one stage. Handles at most `maxInFlight` messages at
 * once and buffers at most `prefetch` more, acks each message only after the
 * handler resolved (its effect is durable), keeps long handlers alive with `working()`,
 * naks retryable failures with a growing delay and sends permanent failures, bad messages
 * and exhausted retries to the dead-letter subject.
 */
export class WorkConsumer {
  readonly stage: StageConfig;
  readonly subjects: Subjects;
  readonly stats: ConsumerStats = { done: 0, retried: 0, dead: 0, inFlight: 0, peakInFlight: 0 };
  readonly #js: JetStreamClient;
  readonly #handler: BatchHandler;
  readonly #opts: Required<Omit<ConsumerOptions, 'prefetch'>>;
  readonly #prefetch: number;
  readonly #abort = new AbortController();
  #onOutcome: ((o: Outcome) => void) | undefined;
  #batch: JsMsg[] = [];
  #batchTimer: NodeJS.Timeout | undefined;
  #batchesRunning = 0;
  #slotFreed: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  #pullIter: { stop(): void } | undefined;
  /** Every message taken and not yet settled, batched or being handled. */
  readonly #held = new Set<JsMsg>();
  #keepAlive: NodeJS.Timeout | undefined;

  constructor(js: JetStreamClient, pipeline: string, stage: StageConfig, handler: BatchHandler, options: ConsumerOptions = {}) {
    this.#js = js;
    this.stage = stage;
    this.subjects = subjects(pipeline);
    this.#handler = handler;
    this.#opts = { ...defaults, ...options };
    if (this.#opts.batchSize > this.#opts.maxInFlight) this.#opts.batchSize = this.#opts.maxInFlight;
    this.#prefetch = options.prefetch ?? Math.min(this.#opts.maxInFlight, 256);
  }

  /** Called after each message is settled (for events and progress). */
  onOutcome(fn: (o: Outcome) => void): void {
    this.#onOutcome = fn;
  }

  /** Starts pulling. Resolves once the consumer is bound. */
  async start(): Promise<void> {
    const consumer = await this.#js.consumers.get(this.subjects.workStream(this.stage.name), this.subjects.consumer(this.stage.name));
    // Tells the server every held message is still being worked on — those waiting in a
    // batch behind a slow one too — so none is redelivered (and handled twice) meanwhile.
    this.#keepAlive = setInterval(() => { for (const m of this.#held) m.working(); }, Math.max(500, this.stage.ackWaitMs / 3));
    this.#loop = this.#pull(consumer);
  }

  /** Stops pulling, finishes what it holds, resolves when every held message is settled. */
  async drain(): Promise<void> {
    this.#stopping = true;
    this.#pullIter?.stop();
    this.#wake();
    await this.#loop;
    this.#flushBatch();
    while (this.stats.inFlight > 0) await this.#waitSlot();
    clearInterval(this.#keepAlive);
  }

  /** Stops at once: held messages are left un-acked and will be redelivered. */
  close(): void {
    this.#stopping = true;
    clearInterval(this.#keepAlive);
    this.#abort.abort(new TroupeError(codes.CLOSED, `consumer of stage ${this.stage.name} closed`));
    this.#pullIter?.stop();
    this.#wake();
  }

  async #pull(consumer: Consumer): Promise<void> {
    const { maxInFlight, batchSize, pullExpiresMs } = this.#opts;
    const full = () => this.stats.inFlight >= maxInFlight ||
      // Batched handlers run one batch at a time: hold no more than the next batch meanwhile.
      (batchSize > 1 && this.#batchesRunning > 0 && this.#batch.length >= batchSize);
    while (!this.#stopping) {
      try {
        // consume() keeps pull requests open and re-pulls as the buffer drains, so free slots
        // are refilled without a round trip; the buffer is bounded by `prefetch`.
        const iter = await consumer.consume({ max_messages: this.#prefetch, expires: pullExpiresMs });
        this.#pullIter = iter;
        if (this.#stopping) iter.stop();
        for await (const m of iter) {
          while (full() && !this.#stopping) await this.#waitSlot();
          // Buffered messages still yielded after stop() go straight back to the server.
          if (this.#stopping) m.nak();
          else this.#take(m);
        }
      } catch (err) {
        if (this.#stopping) break;
        // A pull can fail while the server restarts; the connection reconnects on its own.
        console.error(`troupe: pulling stage ${this.stage.name} failed, retrying: ${(err as Error).message}`);
        await sleep(250);
      } finally {
        this.#pullIter = undefined;
      }
    }
  }

  #take(m: JsMsg): void {
    if (this.#abort.signal.aborted) {
      m.nak(); // arrived after close: hand it straight back
      return;
    }
    this.stats.inFlight++;
    this.#held.add(m);
    this.stats.peakInFlight = Math.max(this.stats.peakInFlight, this.stats.inFlight);
    this.#batch.push(m);
    if (this.#batch.length >= this.#opts.batchSize) this.#flushBatch();
    else this.#batchTimer ??= setTimeout(() => this.#flushBatch(), this.#opts.batchWaitMs);
  }

  #flushBatch(): void {
    clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    if (this.#batch.length === 0) return;
    if (this.#opts.batchSize > 1 && this.#batchesRunning > 0) {
      // One batch at a time: the running one flushes this when it ends.
      return;
    }
    const batch = this.#batch;
    this.#batch = [];
    this.#batchesRunning++;
    void this.#run(batch).finally(() => {
      this.#batchesRunning--;
      if (this.#opts.batchSize > 1 && this.#batch.length > 0) this.#flushBatch();
    });
  }

  async #run(msgs: JsMsg[]): Promise<void> {
    const ready: Array<{ m: JsMsg; d: Delivery }> = [];
    for (const m of msgs) {
      const attempt = m.info.deliveryCount;
      let env: Envelope<unknown>;
      try {
        env = decodeEnvelope(m.data, this.stage.maxMessageSize);
      } catch (err) {
        await this.#dead(m, null, err, attempt);
        continue;
      }
      if (attempt > this.stage.maxAttempts) {
        await this.#dead(m, env, new TroupeError(codes.RETRYABLE,
          `delivered ${attempt} times, above maxAttempts ${this.stage.maxAttempts} (the replica handling it stopped)`), attempt);
        continue;
      }
      ready.push({ m, d: { env, attempt, working: () => m.working() } });
    }
    if (ready.length === 0) return;
    let results: unknown[];
    try {
      results = await this.#handler(ready.map((r) => r.d), this.#abort.signal);
    } catch (err) {
      results = ready.map(() => err);
    }
    if (this.#abort.signal.aborted) return; // closed: leave everything un-acked for redelivery
    await Promise.all(ready.map(({ m, d }, i) => this.#settle(m, d, results[i])));
  }

  async #settle(m: JsMsg, d: Delivery, err: unknown): Promise<void> {
    this.#held.delete(m);
    if (err === undefined) {
      m.ack();
      this.stats.done++;
      this.#release({ kind: 'done', key: d.env.key, attempt: d.attempt });
      return;
    }
    if (!isRetryable(err) || d.attempt >= this.stage.maxAttempts) {
      await this.#dead(m, d.env, err, d.attempt);
      return;
    }
    const hinted = err instanceof RetryableError ? err.retryAfterMs : undefined;
    const backoff = Math.min(this.#opts.retryBaseMs * 2 ** (d.attempt - 1), this.#opts.retryMaxMs);
    m.nak(hinted ?? Math.round(backoff * (0.5 + Math.random() / 2)));
    this.stats.retried++;
    this.#release({ kind: 'retried', key: d.env.key, error: toWire(err), attempt: d.attempt });
  }

  async #dead(m: JsMsg, env: Envelope<unknown> | null, err: unknown, attempts: number): Promise<void> {
    this.#held.delete(m);
    const letter: DeadLetter = {
      pipeline: this.subjects.pipeline, stage: this.stage.name, key: env?.key ?? null,
      error: toWire(err), attempts, ts: Date.now(), envelope: env, data: m.data,
    };
    try {
      await this.#js.publish(this.subjects.dead(this.stage.name), encode(letter), { msgID: `dead:${this.stage.name}:${m.seq}` });
      m.ack();
      this.stats.dead++;
      this.#release({ kind: 'dead', key: letter.key, error: letter.error, attempt: attempts });
    } catch (pubErr) {
      // The dead-letter store refused: keep the message (redelivered later) rather than lose it.
      console.error(`troupe: could not dead-letter a message of stage ${this.stage.name}: ${(pubErr as Error).message}`);
      m.nak(this.#opts.retryMaxMs);
      this.stats.retried++;
      this.#release({ kind: 'retried', key: letter.key, error: letter.error, attempt: attempts });
    }
  }

  #release(o: Outcome): void {
    this.stats.inFlight--;
    this.#onOutcome?.(o);
    this.#wake();
  }

  #waitSlot(): Promise<void> {
    return new Promise((resolve) => {
      const prev = this.#slotFreed;
      this.#slotFreed = () => { prev?.(); resolve(); };
    });
  }

  #wake(): void {
    const f = this.#slotFreed;
    this.#slotFreed = undefined;
    f?.();
  }
}
