import type { Consumer, JetStreamClient, JsMsg } from '@nats-io/jetstream';
import { setTimeout as sleep } from 'node:timers/promises';
import { decode, encode } from './codec.ts';
import { inheritFrameContext, parseEnvelope, type Envelope } from './envelope.ts';
import { codes, isRetryable, toWire, TroupeError, type WireError, RetryableError } from './errors.ts';
import { deadLetterId, frameId, subjects, type Subjects } from './subjects.ts';
import type { StageConfig } from './topology.ts';

/** One message handed to a handler. */
export interface Delivery {
  readonly env: Envelope<unknown>;
  /** 1 on first delivery. */
  readonly attempt: number;
  /** Tells the server the message is still being worked on (resets its ack timer). */
  working(): void;
  /**
   * The handler's own work is done and only waits for its outputs to be stored: its slot
   * goes to the next item meanwhile (the message stays un-acked until the handler resolves).
   */
  yieldSlot(): void;
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
   * once. Small, because a frame carries up to 64 items and buffered messages are out of
   * other replicas' reach.
   * @default ceil(min(maxInFlight, 256) / 8)
   */
  prefetch?: number;
  /**
   * Items held at once: in a handler, waiting for a slot, or waiting for their outputs to be
   * stored after `yieldSlot()`. No message is taken beyond it.
   * @default maxInFlight + 256
   */
  maxHeld?: number;
  /**
   * An item of a frame that has waited this long for a handler slot goes back to the stage
   * (in frames of at most `maxInFlight` items) for other replicas to take: a replica with
   * slow handlers never sits on a frame's worth of work while others are idle. Not in batch
   * mode. 0 turns it off. @default 1_000
   */
  giveBackMs?: number;
  /**
   * Pull with one-shot requests (`fetch`) instead of a standing one (`consume`), so that
   * {@link WorkConsumer.pause} leaves no pull request open: a message the server sends
   * to a stopped standing request is lost to this replica until its ack wait runs out. Costs
   * a round trip per `prefetch` messages. @default false
   */
  pausable?: boolean;
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
  /** Messages taken, and the items they carried (a frame carries several). */
  messages: number;
  items: number;
}

export type Outcome = { kind: 'done' | 'retried' | 'dead'; key: string | null; error?: WireError; attempt: number };

const defaults = Object.freeze({ maxInFlight: 64, batchSize: 1, batchWaitMs: 20, retryBaseMs: 500, retryMaxMs: 30_000, pullExpiresMs: 5_000, giveBackMs: 1_000, pausable: false });

const noop = () => {};

/** Longest run of handlers started one after another without a turn of the event loop, ms. */
const YIELD_EVERY_MS = 200;

/** A message taken from the stage: one envelope, or a frame of several. */
interface Frame {
  m: JsMsg;
  /** Items not yet settled. */
  open: number;
  /** Several items: a retry waits in this replica instead of a nak of the whole message. */
  multi: boolean;
  /** Set when the message must go back to the server whole (a retry cut short by drain). */
  nakMs: number | undefined;
}

/** One item of a frame, on its way through the handler. */
interface Item { frame: Frame; d: Delivery; value: unknown; since: number }

/**
 * The consume loop of one replica of one stage. A message holds one item or a frame of
 * items (see WorkProducer). Hands at most `maxInFlight` items to the handler at once and
 * buffers at most `prefetch` more messages; settles each item once the handler resolved for
 * it, and acks a message only when every item in it is settled (its effects are durable),
 * keeps long handlers alive with `working()`, retries retryable failures with a growing
 * delay (a lone item by a nak, an item of a frame in place, so its neighbours are not redone)
 * and sends permanent failures, bad messages and exhausted retries to the dead-letter subject.
 */
export class WorkConsumer {
  readonly stage: StageConfig;
  readonly subjects: Subjects;
  readonly stats: ConsumerStats = { done: 0, retried: 0, dead: 0, inFlight: 0, peakInFlight: 0, messages: 0, items: 0 };
  readonly #js: JetStreamClient;
  readonly #handler: BatchHandler;
  readonly #opts: Required<Omit<ConsumerOptions, 'prefetch' | 'maxHeld'>>;
  readonly #prefetch: number;
  readonly #maxHeld: number;
  /** Handler slots in use now: `maxInFlight`, or fewer (see {@link setSlots}). */
  #slots: number;
  readonly #abort = new AbortController();
  #onOutcome: ((o: Outcome) => void) | undefined;
  #onSettled: (() => void) | undefined;
  /** Items taken and waiting for a handler slot (or, batched, for the next batch). */
  #ready: Item[] = [];
  #running = 0;
  #batchTimer: NodeJS.Timeout | undefined;
  #batchesRunning = 0;
  #slotFreed: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  #paused = false;
  #pullIter: { stop(): void } | undefined;
  /** Every message taken and not yet settled. */
  readonly #held = new Set<JsMsg>();
  /** Items of frames waiting to be tried again. */
  readonly #retries = new Map<NodeJS.Timeout, Item>();
  #keepAlive: NodeJS.Timeout | undefined;
  #giveBackTimer: NodeJS.Timeout | undefined;
  #giveBackFailed = false;
  #pumpScheduled = false;
  #yieldedAt = performance.now();

  constructor(js: JetStreamClient, pipeline: string, stage: StageConfig, handler: BatchHandler, options: ConsumerOptions = {}) {
    this.#js = js;
    this.stage = stage;
    this.subjects = subjects(pipeline);
    this.#handler = handler;
    this.#opts = { ...defaults, ...options };
    if (this.#opts.batchSize > this.#opts.maxInFlight) this.#opts.batchSize = this.#opts.maxInFlight;
    if (this.#opts.pausable && this.#opts.batchSize > 1) throw new TroupeError(codes.BAD_OPTION, `consumer of stage ${stage.name}: pausable needs batchSize 1`);
    // In messages: a frame carries up to 64 items, so a few frames cover the free slots.
    this.#prefetch = options.prefetch ?? Math.max(1, Math.ceil(Math.min(this.#opts.maxInFlight, 256) / 8));
    this.#maxHeld = options.maxHeld ?? this.#opts.maxInFlight + 256;
    this.#slots = this.#opts.maxInFlight;
  }

  /**
   * Hands at most `n` items (1 to `maxInFlight`) to the handler at once, for handlers whose
   * useful concurrency is lower than `maxInFlight` for now (a Fetcher's share of a rate
   * limit). Items beyond that wait, and go back to the stage after `giveBackMs`, so other
   * replicas take them instead of this one holding them. Ignored for batched handlers.
   */
  setSlots(n: number): void {
    this.#slots = Math.max(1, Math.min(Math.floor(n), this.#opts.maxInFlight));
    this.#pump();
    this.#wake();
  }

  /**
   * Stops taking work until {@link resume}: items already in a handler finish and are acked;
   * items not yet started, and any that a pull still open brings in, go back to the stage
   * at once (as `giveBackMs` does) for other replicas; no new pull is made. Only for a
   * consumer made with `pausable`.
   */
  pause(): void {
    if (!this.#opts.pausable) throw new TroupeError(codes.BAD_OPTION, `consumer of stage ${this.stage.name}: pause() needs the pausable option`);
    this.#paused = true;
    clearTimeout(this.#giveBackTimer); // armed for giveBackMs: now at once
    this.#giveBackTimer = undefined;
    this.#pump();
  }

  resume(): void {
    this.#paused = false;
    this.#wake();
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** Called after each item is settled (for events and progress). */
  onOutcome(fn: (o: Outcome) => void): void {
    this.#onOutcome = fn;
  }

  /**
   * Calls `fn` right after the successes of a handler call are acked, in the same turn: what
   * it publishes leaves in the same socket write as those acks.
   */
  onSettled(fn: () => void): void {
    this.#onSettled = fn;
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
    this.#paused = false; // draining finishes what it holds, paused or not
    this.#pullIter?.stop();
    this.#wake();
    await this.#loop;
    // Retries waiting in place are not awaited: their messages go back to the server.
    for (const [timer, item] of this.#retries) {
      clearTimeout(timer);
      this.#retries.delete(timer);
      item.frame.nakMs = this.#opts.retryBaseMs;
      this.#release();
      this.#settled(item.frame);
    }
    this.#pump();
    while (this.stats.inFlight > 0) await this.#waitSlot();
    clearInterval(this.#keepAlive);
    clearTimeout(this.#giveBackTimer);
  }

  /** Stops at once: held messages are left un-acked and will be redelivered. */
  close(): void {
    this.#stopping = true;
    clearInterval(this.#keepAlive);
    clearTimeout(this.#giveBackTimer);
    for (const timer of this.#retries.keys()) clearTimeout(timer);
    this.#retries.clear();
    this.#abort.abort(new TroupeError(codes.CLOSED, `consumer of stage ${this.stage.name} closed`));
    this.#pullIter?.stop();
    this.#wake();
  }

  async #pull(consumer: Consumer): Promise<void> {
    const { maxInFlight, batchSize, pullExpiresMs } = this.#opts;
    const full = () => batchSize > 1
      // Batched handlers run one batch at a time: hold no more than the next batch meanwhile.
      ? this.stats.inFlight >= maxInFlight || (this.#batchesRunning > 0 && this.#ready.length >= batchSize)
      // Take the next message only when a handler slot is free and nothing waits for one.
      : this.#running >= this.#slots || this.#ready.length > 0 || this.stats.inFlight >= this.#maxHeld;
    while (!this.#stopping) {
      if (this.#paused) {
        await this.#waitSlot(); // woken by resume(), drain() or close()
        continue;
      }
      try {
        // consume() keeps pull requests open and re-pulls as the buffer drains, so free slots
        // are refilled without a round trip; the buffer is bounded by `prefetch`. A pausable
        // consumer pulls with one request at a time instead (see ConsumerOptions.pausable).
        const iter = this.#opts.pausable
          ? await consumer.fetch({ max_messages: this.#prefetch, expires: pullExpiresMs })
          : await consumer.consume({ max_messages: this.#prefetch, expires: pullExpiresMs });
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
    const deliveries = m.info.deliveryCount;
    let values: unknown[];
    let multi = false;
    try {
      const value = decode(m.data, this.stage.maxMessageSize);
      multi = Array.isArray(value);
      values = multi ? value as unknown[] : [value];
      if (values.length === 0) throw new TroupeError(codes.BAD_SHAPE, 'bad frame: an empty array');
      // Items of a frame leave out what they share with it (see encodeFrameItem).
      if (multi) {
        const ts = Math.round(m.info.timestampNanos / 1e6);
        for (const v of values) inheritFrameContext(v, this.subjects.pipeline, this.stage.name, ts);
      }
    } catch (err) {
      const whole: Frame = { m, open: 1, multi: false, nakMs: undefined };
      this.#hold(m, 1);
      void this.#dead(whole, undefined, undefined, err, deliveries);
      return;
    }
    const frame: Frame = { m, open: values.length, multi, nakMs: undefined };
    this.#hold(m, values.length);
    if (multi && deliveries > 1 && values.length > 1) void this.#split(frame, values, deliveries);
    else this.#enqueue(frame, values, deliveries);
  }

  /** Queues a frame's items for the handler (or dead-letters the bad and the exhausted). */
  #enqueue(frame: Frame, values: unknown[], deliveries: number): void {
    const { m } = frame;
    // Shared by the frame's items: a Writer takes ~100k items a second, and every object per item counts.
    const working = () => m.working();
    const since = performance.now();
    for (const value of values) {
      let env: Envelope<unknown>;
      try {
        env = parseEnvelope(value);
      } catch (err) {
        void this.#dead(frame, undefined, value, err, deliveries);
        continue;
      }
      // env.attempt carries attempts made before this message existed (see #split).
      const attempt = deliveries + Math.max(0, env.attempt - 1);
      const d: Delivery = { env, attempt, working, yieldSlot: noop };
      if (attempt > this.stage.maxAttempts) {
        void this.#dead(frame, d, value, new TroupeError(codes.RETRYABLE,
          `delivered ${attempt} times, above maxAttempts ${this.stage.maxAttempts} (the replica handling it stopped)`), attempt);
        continue;
      }
      this.#ready.push({ frame, d, value, since });
    }
    this.#pump();
  }

  /**
   * A frame delivered again: whatever stopped its last replica (a crash, a kill) may be one
   * poison item, and a frame would spend every item's attempts on it. Its items go back into
   * the stage one by one as single messages under their own ids (deduplicated if this runs
   * twice); the frame is acked once all are out. The delivery lost with the frame is not
   * counted against its items (most were never tried, and a replica's prefetched frames all
   * come back when it dies): each item alone gets its full `maxAttempts`. Bounded still: a
   * frame is split on its second delivery, before any item runs again.
   * When the stage refuses one (full, or the server is away), this replica handles the rest
   * in place instead: a nak would spend a delivery on waiting.
   */
  async #split(frame: Frame, values: unknown[], deliveries: number): Promise<void> {
    const subject = this.subjects.work(this.stage.name);
    // All at once, not one after another: a split that waits for each publish in turn spans
    // a round trip per item, and a replica dying meanwhile (another item of its own crashing
    // it) brought the frame back again and again until the server's max_deliver, after which
    // the items not yet out were never delivered again (test/runtime.test.ts, under load).
    const left: unknown[] = [];
    let error: unknown;
    await Promise.all(values.map(async (value) => {
      let bytes: Uint8Array;
      let msgID: string | undefined;
      try {
        const env = parseEnvelope(value);
        bytes = encode({ ...env, attempt: Math.max(1, env.attempt) + deliveries - 2 });
        msgID = env.id;
      } catch {
        bytes = encode(value); // a bad item is dead-lettered on its own
      }
      try {
        await this.#js.publish(subject, bytes, msgID === undefined ? {} : { msgID });
      } catch (err) {
        left.push(value);
        error = err;
        return;
      }
      if (this.#abort.signal.aborted) return; // closed: the frame comes back; what went out is deduplicated
      this.#release();
      this.#settled(frame);
    }));
    if (left.length > 0 && !this.#abort.signal.aborted) {
      console.error(`troupe: stage ${this.stage.name}: handling ${left.length} item(s) of a redelivered frame in place: ${(error as Error).message}`);
      this.#enqueue(frame, left, deliveries - 1);
    }
  }

  #hold(m: JsMsg, items: number): void {
    this.#held.add(m);
    this.stats.messages++;
    this.stats.items += items;
    this.stats.inFlight += items;
    this.stats.peakInFlight = Math.max(this.stats.peakInFlight, this.stats.inFlight);
  }

  /** Starts handlers for ready items while slots are free. */
  #pump(): void {
    const { batchSize } = this.#opts;
    if (batchSize === 1) {
      if (this.#paused) {
        // Paused: nothing new starts, and what waits goes back to the stage at once (after a
        // failed try, as often as giveBackMs).
        if (this.#ready.length > 0) this.#giveBackTimer ??= setTimeout(() => this.#giveBack(), this.#giveBackFailed ? Math.max(this.#opts.giveBackMs, 100) : 0);
        return;
      }
      if (this.#ready.length > 0 && this.#opts.giveBackMs > 0) this.#giveBackTimer ??= setTimeout(() => this.#giveBack(), this.#opts.giveBackMs);
      while (this.#running < this.#slots && this.#ready.length > 0) {
        const item = this.#ready.shift()!;
        this.#running++;
        let slot = true;
        const free = () => {
          if (!slot) return;
          slot = false;
          this.#running--;
          // Handlers chained in one turn share the frames their outputs go out in; a turn of
          // the event loop every YIELD_EVERY_MS lets timers run (see #pumpSoon).
          if (performance.now() - this.#yieldedAt >= YIELD_EVERY_MS) {
            this.#pumpSoon();
          } else {
            this.#pump();
            this.#wake();
          }
        };
        void this.#run([{ ...item, d: { ...item.d, yieldSlot: free } }]).finally(free);
      }
      return;
    }
    if (this.#batchesRunning > 0 || this.#ready.length === 0) return;
    if (this.#ready.length < batchSize && !this.#stopping) {
      this.#batchTimer ??= setTimeout(() => {
        this.#batchTimer = undefined;
        this.#startBatch();
      }, this.#opts.batchWaitMs);
      return;
    }
    this.#startBatch();
  }

  /**
   * Starts the next items on the next turn of the event loop, not in this one. Handlers that
   * compute synchronously (a CPU-bound `generate`) otherwise follow each other through
   * microtasks for a whole frame, and no timer runs meanwhile — not the keep-alive that stops
   * the server from redelivering what this replica holds (a frame of 30 items of 100 ms each
   * was redelivered after an ack wait of 2 s, and every item handled twice). Not after every
   * item: outputs published within one turn travel in one frame, and a turn per item of 2 ms
   * sent each output alone (2 Generator threads 13% slower); see YIELD_EVERY_MS.
   */
  #pumpSoon(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#yieldedAt = performance.now();
      this.#pumpScheduled = false;
      this.#pump();
      this.#wake();
    });
  }

  /** Puts items that waited `giveBackMs` for a slot (all waiting ones when paused) back into the stage (see giveBackMs). */
  async #giveBack(): Promise<void> {
    this.#giveBackTimer = undefined;
    const { giveBackMs, maxInFlight } = this.#opts;
    const cutoff = this.#paused ? Infinity : performance.now() - giveBackMs;
    this.#giveBackFailed = false;
    const stale = this.#stopping ? [] : this.#ready.filter((it) => it.since <= cutoff);
    if (stale.length > 0) {
      this.#ready = this.#ready.filter((it) => it.since > cutoff);
      const subject = this.subjects.work(this.stage.name);
      for (let i = 0; i < stale.length; i += maxInFlight) {
        const chunk = stale.slice(i, i + maxInFlight);
        const ids = chunk.map((it) => it.d.env.id);
        try {
          if (this.#abort.signal.aborted) return; // closed: the frames come back whole
          // The items as they came (not yet tried): one alone, or a frame of several.
          const data = encode(chunk.length === 1 ? chunk[0]!.value : chunk.map((it) => it.value));
          // Not the ids they came under: the stage's duplicate window still holds those, and
          // would drop the message (then acked here: the items lost). Tied to the message
          // they came in, so a retry of this publish is still deduplicated.
          const msgID = frameId([`giveback:${chunk[0]!.frame.m.seq}`, ...ids]);
          await this.#js.publish(subject, data, { msgID });
        } catch {
          // The stage is full or the server away: keep them and try later.
          this.#giveBackFailed = true;
          this.#ready.unshift(...stale.slice(i));
          break;
        }
        for (const it of chunk) {
          this.#release();
          this.#settled(it.frame);
        }
      }
    }
    this.#pump();
  }

  #startBatch(): void {
    clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    if (this.#batchesRunning > 0 || this.#ready.length === 0) return;
    const batch = this.#ready.splice(0, this.#opts.batchSize);
    this.#batchesRunning++;
    void this.#run(batch).finally(() => {
      this.#batchesRunning--;
      this.#pump();
      this.#wake();
    });
  }

  async #run(items: Item[]): Promise<void> {
    let results: unknown[];
    try {
      results = await this.#handler(items.map((it) => it.d), this.#abort.signal);
    } catch (err) {
      results = items.map(() => err);
    }
    if (this.#abort.signal.aborted) return; // closed: leave everything un-acked for redelivery
    // Successes settle at once, without a promise each; only failures have to wait (a dead letter's publish).
    let failures: Array<Promise<void>> | undefined;
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      const err = results[i];
      if (err === undefined) {
        this.stats.done++;
        this.#release({ kind: 'done', key: it.d.env.key, attempt: it.d.attempt });
        this.#settled(it.frame);
      } else {
        (failures ??= []).push(this.#settle(it, err));
      }
    }
    this.#onSettled?.();
    if (failures !== undefined) await Promise.all(failures);
  }

  /** Settles an item its handler failed: retried (in place or by a nak) or dead-lettered. */
  async #settle(it: Item, err: unknown): Promise<void> {
    const { d, frame } = it;
    if (!isRetryable(err) || d.attempt >= this.stage.maxAttempts) {
      await this.#dead(frame, d, it.value, err, d.attempt);
      return;
    }
    const hinted = err instanceof RetryableError ? err.retryAfterMs : undefined;
    const backoff = Math.min(this.#opts.retryBaseMs * 2 ** (d.attempt - 1), this.#opts.retryMaxMs);
    const delay = hinted ?? Math.round(backoff * (0.5 + Math.random() / 2));
    this.stats.retried++;
    this.#onOutcome?.({ kind: 'retried', key: d.env.key, error: toWire(err), attempt: d.attempt });
    if (!frame.multi) {
      frame.nakMs = delay;
      this.#release();
      this.#settled(frame);
      return;
    }
    if (this.#stopping) {
      // Draining: the frame goes back whole rather than keep the drain waiting.
      frame.nakMs = delay;
      this.#release();
      this.#settled(frame);
      return;
    }
    const timer = setTimeout(() => {
      this.#retries.delete(timer);
      this.#ready.push({ frame, value: it.value, d: { ...d, attempt: d.attempt + 1 }, since: performance.now() });
      this.#pump();
    }, delay);
    this.#retries.set(timer, it);
  }

  /** One item of the frame is settled; the message is acked (or nak'ed) with its last. */
  #settled(frame: Frame): void {
    if (--frame.open > 0) return;
    this.#held.delete(frame.m);
    if (frame.nakMs === undefined) frame.m.ack();
    else frame.m.nak(frame.nakMs);
  }

  /** Dead-letters one item (`value`, the decoded item of a frame) or the whole message. */
  async #dead(frame: Frame, d: Delivery | undefined, value: unknown, err: unknown, attempts: number): Promise<void> {
    const env = d?.env ?? null;
    // The letter keeps the item alone, as bytes that replay as a message of their own.
    const data = frame.multi ? encode(value) : frame.m.data;
    const letter: DeadLetter = {
      pipeline: this.subjects.pipeline, stage: this.stage.name, key: env?.key ?? null,
      error: toWire(err), attempts, ts: Date.now(), envelope: env, data,
    };
    try {
      const msgID = deadLetterId(this.stage.name, frame.m.seq, frame.multi && env ? env.id : undefined);
      await this.#js.publish(this.subjects.dead(this.stage.name), encode(letter), { msgID });
      this.stats.dead++;
      this.#release({ kind: 'dead', key: letter.key, error: letter.error, attempt: attempts });
    } catch (pubErr) {
      // The dead-letter store refused: keep the message (redelivered later) rather than lose it.
      console.error(`troupe: could not dead-letter a message of stage ${this.stage.name}: ${(pubErr as Error).message}`);
      frame.nakMs = this.#opts.retryMaxMs;
      this.stats.retried++;
      this.#release({ kind: 'retried', key: letter.key, error: letter.error, attempt: attempts });
    }
    this.#settled(frame);
  }

  #release(o?: Outcome): void {
    this.stats.inFlight--;
    if (o) this.#onOutcome?.(o);
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
