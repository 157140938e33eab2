import type { JetStreamClient } from '@nats-io/jetstream';
import { setTimeout as sleep } from 'node:timers/promises';
import { encode } from './codec.ts';
import { ENVELOPE_VERSION, encodeFrameItem, envelopeOfItem, frameContext, makeEnvelope } from './envelope.ts';
import { codes, TroupeError } from './errors.ts';
import { frameId, messageId, subjects, type Subjects } from './subjects.ts';

export interface ProducerOptions {
  /** Items held at once (in a frame, publishing, or waiting for a full stage); further calls wait. @default 256 */
  maxPending?: number;
  /** First wait after the target stage refused a message as full, ms; doubles up to maxBackoffMs. @default 50 */
  minBackoffMs?: number;
  /** @default 2_000 */
  maxBackoffMs?: number;
  /** Server-ack timeout per publish attempt, ms. @default 5_000 */
  publishTimeoutMs?: number;
  /**
   * Largest encoded message, bytes, per stage or for all; a larger item is refused with
   * TROUPE_TOO_LARGE, and no frame grows past it. @default 1 MiB
   */
  maxMessageSize?: number | ((stage: string) => number);
  /**
   * Most items in one frame (one JetStream message), for every stage or per stage (see
   * `frameLimits` in actors/env.ts for troupe's own). 1 turns framing off. @default 64
   */
  maxFrameItems?: number | ((stage: string) => number);
  /** Most bytes in one frame, for every stage or per stage; larger items travel alone. @default 64 KiB */
  maxFrameBytes?: number | ((stage: string) => number);
  /** Frames per stage awaiting the server's ack at once; items published meanwhile join the next frame. @default 2 */
  framesInFlight?: number;
  /**
   * Least time between two frames to one stage that are not full, ms: a busy stage's items
   * gather into frames for up to this long; an idle stage's first item goes at once. @default 5
   */
  lingerMs?: number;
  /**
   * Part of every message id besides stage and key (troupe uses the run id): a key re-published
   * within one run is stored once; a new run may publish it again.
   * @default ''
   */
  dedupeScope?: string;
}

export interface PublishOptions {
  attempt?: number;
  trace?: string | undefined;
  /**
   * Called each time the target stage is full and the publish waits. A consumer uses it to
   * tell the server it is still working on the message that produced this output.
   */
  onStall?: (() => void) | undefined;
  /** Gives up waiting (with the signal's reason) when aborted. */
  signal?: AbortSignal | undefined;
}

const defaults = Object.freeze({
  maxPending: 256, minBackoffMs: 50, maxBackoffMs: 2_000, publishTimeoutMs: 5_000, maxMessageSize: 1024 * 1024,
  maxFrameItems: 64, maxFrameBytes: 64 * 1024, framesInFlight: 2, lingerMs: 5, dedupeScope: '',
});

/** Checks a count option (for `stage`, when given per stage); returns it, or throws naming it. */
function checkLimit(k: string, v: unknown, stage?: string): number {
  const name = `producer option ${k}${stage === undefined ? '' : ` (stage ${stage})`}`;
  if (!Number.isInteger(v) || (v as number) < 1) throw new TroupeError(codes.BAD_OPTION, `${name} must be a positive integer, got ${String(v)}`);
  if (k === 'maxFrameItems' && (v as number) > 65_535) throw new TroupeError(codes.BAD_OPTION, `${name} must be at most 65535, got ${String(v)}`);
  return v as number;
}

/** Whether a publish failed because the stream is at its message or byte limit. */
export function isStreamFull(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : '';
  return /maximum (messages|bytes) exceeded|insufficient resources/i.test(msg);
}

/**
 * Whether a publish may succeed if tried again. nats.js v3 reports "no responders" on a
 * JetStream publish as `JetStreamNotEnabled`; the server answers that way for a moment while
 * it recovers its streams after a restart, or while a stream is being created, so it is
 * transient here (`connectNats` checks once, at start, that JetStream is enabled at all).
 */
function isTransient(err: unknown): boolean {
  const name = err instanceof Error ? err.name : '';
  const msg = err instanceof Error ? err.message : '';
  return name === 'TimeoutError' || name === 'NoRespondersError' || name === 'JetStreamNotEnabled'
    || /timeout|no responders|disconnect|reconnect/i.test(msg);
}

/** An item waiting to be sent: its frame-item bytes, and what it needs to travel alone (see frameContext). */
interface Waiter { id: string; data: Uint8Array; ts: number; attempt: number; options: PublishOptions }

/** Items bound for one stage that travel as one JetStream message. */
interface Frame {
  waiters: Waiter[];
  ids: Set<string>;
  bytes: number;
  sealed: boolean;
  done: Promise<{ duplicate: boolean }>;
  settle: (err: unknown, duplicate?: boolean) => void;
}

/** Frames bound for one stage: queued in order, at most `framesInFlight` publishing. */
interface Lane {
  queue: Frame[];
  inFlight: number;
  scheduled: boolean;
  timer: NodeJS.Timeout | undefined;
  lastSent: number;
  /** This stage's frame limits: items, and bytes (never above its largest message). */
  maxItems: number;
  maxBytes: number;
}

/**
 * Publishes work items into stages. Items published close together travel as one frame (a
 * msgpack array of envelopes in one JetStream message), so the per-message cost of the
 * server and the client is paid once per frame: a frame is sent as soon as the stage has a
 * free publish slot, and items arriving while its publishes are in flight join the next
 * frame. A single item is sent as a plain envelope.
 *
 * Bounds what it holds; when a stage is full (its stream refuses with discard-new) it waits
 * with backoff and retries, holding the caller — never dropping the item and never holding
 * more than `maxPending` items. That wait is the backpressure signal that travels up to the
 * Scanner.
 */
export class WorkProducer {
  readonly subjects: Subjects;
  readonly #js: JetStreamClient;
  readonly #opts: Required<ProducerOptions>;
  readonly #lanes = new Map<string, Lane>();
  #pending = 0;
  #waiters: Array<() => void> = [];
  readonly #contextSizes = new Map<string, number>();
  /** Times a publish found its stage full. */
  stalls = 0;
  /** Messages (frames) published. */
  frames = 0;
  /** Highest number of items this producer held at once (pending + waiting for a slot). */
  peakHeld = 0;
  #held = 0;

  constructor(js: JetStreamClient, pipeline: string, options: ProducerOptions = {}) {
    this.#js = js;
    this.subjects = subjects(pipeline);
    this.#opts = { ...defaults, ...options };
    for (const k of ['maxPending', 'framesInFlight'] as const) checkLimit(k, this.#opts[k]);
    // Per-stage functions are checked on their first use, for the stage they are asked about.
    for (const k of ['maxFrameItems', 'maxFrameBytes'] as const) {
      const v = this.#opts[k];
      if (typeof v !== 'function') checkLimit(k, v);
    }
    if (!(this.#opts.lingerMs >= 0)) throw new TroupeError(codes.BAD_OPTION, `producer option lingerMs must be a number ≥ 0, got ${this.#opts.lingerMs}`);
  }

  /** Items currently held by this producer: publishing, or waiting for a free slot. */
  get held(): number {
    return this.#held;
  }

  #frameLimit(k: 'maxFrameItems' | 'maxFrameBytes', stage: string): number {
    const v = this.#opts[k];
    return typeof v === 'function' ? checkLimit(k, v(stage), stage) : v;
  }

  /** What an item of this stage gains when it travels alone (see envelopeOfItem), bytes. */
  #contextSize(stage: string): number {
    let n = this.#contextSizes.get(stage);
    if (n === undefined) {
      // Every field of the context has a fixed size but `ts`, whose encoding is 9 bytes from 2^32 ms on.
      n = encode(frameContext(makeEnvelope({ pipeline: this.subjects.pipeline, stage, key: '-', body: null }))).byteLength - 1;
      this.#contextSizes.set(stage, n);
    }
    return n;
  }

  /** An item that travels alone: a whole envelope (see envelopeOfItem). */
  #alone(stage: string, w: Waiter): Uint8Array {
    return envelopeOfItem(w.data, frameContext({ pipeline: this.subjects.pipeline, stage, ts: w.ts, v: ENVELOPE_VERSION, attempt: w.attempt }));
  }

  #maxSize(stage: string): number {
    const m = this.#opts.maxMessageSize;
    return typeof m === 'function' ? m(stage) : m;
  }

  /** Publishes one item into `stage`; resolves when the server has stored it (or deduplicated it). */
  async publish(stage: string, key: string, body: unknown, options: PublishOptions = {}): Promise<{ duplicate: boolean }> {
    // The envelope id is the JetStream message id of an item travelling alone: the same item
    // published again in the same run (a retry, a replayed handler, a resumed job) carries the
    // same id, which the server deduplicates inside its window and the Writer's ledger
    // recognises after it.
    const id = messageId(stage, this.#opts.dedupeScope ? `${this.#opts.dedupeScope}\u0000${key}` : key);
    const env = makeEnvelope({ pipeline: this.subjects.pipeline, stage, key, body, attempt: options.attempt ?? 1, trace: options.trace, id });
    // Encoded as a frame item; an item that travels alone gains the rest at sending.
    const data = encodeFrameItem(env);
    const alone = data.byteLength + this.#contextSize(stage);
    const max = this.#maxSize(stage);
    if (alone > max) {
      throw new TroupeError(codes.TOO_LARGE,
        `message for stage ${stage} key ${key} is ${alone} bytes, above the limit of ${max}; ` +
        'store large bodies by reference');
    }
    this.#held++;
    this.peakHeld = Math.max(this.peakHeld, this.#held);
    try {
      await this.#acquire();
      try {
        return await abortable(this.#add(stage, { id, data, ts: env.ts, attempt: env.attempt, options }), options.signal);
      } finally {
        this.#release();
      }
    } finally {
      this.#held--;
    }
  }

  /** Puts an item into the stage's open frame (or a new one) and makes sure it gets sent. */
  #add(stage: string, w: Waiter): Promise<{ duplicate: boolean }> {
    let lane = this.#lanes.get(stage);
    if (!lane) {
      const maxItems = this.#frameLimit('maxFrameItems', stage);
      const maxBytes = Math.min(this.#frameLimit('maxFrameBytes', stage), this.#maxSize(stage) - 5);
      this.#lanes.set(stage, lane = { queue: [], inFlight: 0, scheduled: false, timer: undefined, lastSent: 0, maxItems, maxBytes });
    }
    const { maxItems, maxBytes: limit } = lane;
    let frame = lane.queue.at(-1);
    if (frame && !frame.sealed && frame.ids.has(w.id)) {
      // The same item twice in one frame: stored once, like the server's deduplication.
      return frame.done.then(() => ({ duplicate: true }));
    }
    if (!frame || frame.sealed || frame.waiters.length >= maxItems || frame.bytes + w.data.byteLength > limit) {
      frame = newFrame();
      lane.queue.push(frame);
    }
    frame.waiters.push(w);
    frame.ids.add(w.id);
    frame.bytes += w.data.byteLength;
    if (frame.waiters.length >= maxItems || frame.bytes >= limit) frame.sealed = true;
    if (lane.inFlight < this.#opts.framesInFlight && !lane.scheduled) {
      // Sent on the next turn of the event loop at the earliest, so that items published in
      // this turn share the frame.
      lane.scheduled = true;
      setImmediate(() => this.#kick(stage, lane));
    }
    return frame.done;
  }

  #kick(stage: string, lane: Lane): void {
    lane.scheduled = false;
    while (lane.inFlight < this.#opts.framesInFlight && lane.queue.length > 0) {
      const frame = lane.queue[0]!;
      const wait = lane.lastSent + this.#opts.lingerMs - performance.now();
      if (!frame.sealed && wait > 0) {
        // A frame went out less than lingerMs ago: let this one gather more items first.
        lane.timer ??= setTimeout(() => { lane.timer = undefined; this.#kick(stage, lane); }, Math.ceil(wait));
        return;
      }
      lane.queue.shift();
      frame.sealed = true;
      lane.inFlight++;
      lane.lastSent = performance.now();
      void this.#send(stage, frame).then(
        (ack) => frame.settle(undefined, ack.duplicate),
        (err) => frame.settle(err),
      ).finally(() => {
        lane.inFlight--;
        this.#kick(stage, lane);
      });
    }
  }

  async #send(stage: string, frame: Frame): Promise<{ duplicate: boolean }> {
    const { waiters } = frame;
    const one = waiters.length === 1;
    const data = one ? this.#alone(stage, waiters[0]!) : frameBytes(waiters.map((w) => w.data), frame.bytes);
    const msgID = one ? waiters[0]!.id : frameId(waiters.map((w) => w.id));
    const subject = this.subjects.work(stage);
    let backoff = this.#opts.minBackoffMs;
    for (;;) {
      // Every caller gave up (closed): stop retrying on their behalf.
      const signal = waiters[0]!.options.signal;
      if (signal?.aborted && waiters.every((w) => w.options.signal?.aborted)) throw signal.reason;
      try {
        const ack = await this.#js.publish(subject, data, { msgID, timeout: this.#opts.publishTimeoutMs });
        this.frames++;
        return { duplicate: ack.duplicate };
      } catch (err) {
        if (isStreamFull(err)) {
          this.stalls++;
          for (const w of waiters) w.options.onStall?.();
        } else if (!isTransient(err)) {
          throw err;
        }
        // Same msgID on retry: if the first attempt was stored after all, the server dedupes.
        await sleep(backoff * (0.5 + Math.random() / 2));
        backoff = Math.min(backoff * 2, this.#opts.maxBackoffMs);
      }
    }
  }

  async #acquire(): Promise<void> {
    if (this.#pending < this.#opts.maxPending) {
      this.#pending++;
      return;
    }
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  #release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#pending--;
  }
}

function newFrame(): Frame {
  let settle!: Frame['settle'];
  const done = new Promise<{ duplicate: boolean }>((resolve, reject) => {
    settle = (err, duplicate = false) => (err === undefined ? resolve({ duplicate }) : reject(err));
  });
  done.catch(() => {}); // callers that gave up (aborted) no longer listen
  return { waiters: [], ids: new Set(), bytes: 0, sealed: false, done, settle };
}

/** A msgpack array of already-encoded envelopes. */
function frameBytes(items: Uint8Array[], bytes: number): Uint8Array {
  const n = items.length;
  const head = n < 16 ? [0x90 | n] : [0xdc, n >> 8, n & 0xff];
  const out = new Uint8Array(head.length + bytes);
  out.set(head, 0);
  let at = head.length;
  for (const it of items) {
    out.set(it, at);
    at += it.byteLength;
  }
  return out;
}

function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
