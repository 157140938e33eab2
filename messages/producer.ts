import type { JetStreamClient } from '@nats-io/jetstream';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeEnvelope, makeEnvelope } from './envelope.ts';
import { codes, TroupeError } from './errors.ts';
import { messageId, subjects, type Subjects } from './subjects.ts';

export interface ProducerOptions {
  /** Publishes awaiting the server's ack at once; further calls wait for a slot. @default 256 */
  maxPending?: number;
  /** First wait after the target stage refused a message as full, ms; doubles up to maxBackoffMs. @default 50 */
  minBackoffMs?: number;
  /** @default 2_000 */
  maxBackoffMs?: number;
  /** Server-ack timeout per publish attempt, ms. @default 5_000 */
  publishTimeoutMs?: number;
  /** Largest encoded message, bytes; larger ones are refused with TROUPE_TOO_LARGE. @default 1 MiB */
  maxMessageSize?: number;
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
  maxPending: 256, minBackoffMs: 50, maxBackoffMs: 2_000, publishTimeoutMs: 5_000, maxMessageSize: 1024 * 1024, dedupeScope: '',
});

/** Whether a publish failed because the stream is at its message or byte limit. */
export function isStreamFull(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : '';
  return /maximum (messages|bytes) exceeded|insufficient resources/i.test(msg);
}

function isTransient(err: unknown): boolean {
  const name = err instanceof Error ? err.name : '';
  const msg = err instanceof Error ? err.message : '';
  return name === 'TimeoutError' || name === 'NoRespondersError' || /timeout|no responders|disconnect|reconnect/i.test(msg);
}

/**
 * Publishes work items into stages. Bounds its in-flight publishes; when a stage is full
 * (its stream refuses with discard-new) it waits with backoff and retries, holding the
 * caller — never dropping the item and never buffering past `maxPending`. That wait is the
 * backpressure signal that travels up to the Scanner.
 */
export class WorkProducer {
  readonly subjects: Subjects;
  readonly #js: JetStreamClient;
  readonly #opts: Required<ProducerOptions>;
  #pending = 0;
  #waiters: Array<() => void> = [];
  /** Times a publish found its stage full. */
  stalls = 0;
  /** Highest number of items this producer held at once (pending + waiting for a slot). */
  peakHeld = 0;
  #held = 0;

  constructor(js: JetStreamClient, pipeline: string, options: ProducerOptions = {}) {
    this.#js = js;
    this.subjects = subjects(pipeline);
    this.#opts = { ...defaults, ...options };
  }

  /** Items currently held by this producer: publishing, or waiting for a free slot. */
  get held(): number {
    return this.#held;
  }

  /** Publishes one item into `stage`; resolves when the server has stored it (or deduplicated it). */
  async publish(stage: string, key: string, body: unknown, options: PublishOptions = {}): Promise<{ duplicate: boolean }> {
    // The envelope id is the JetStream message id: the same item published again in the same
    // run (a retry, a replayed handler, a resumed job) carries the same id, which the server
    // deduplicates inside its window and the Writer's ledger recognises after it.
    const id = messageId(stage, this.#opts.dedupeScope ? `${this.#opts.dedupeScope}\u0000${key}` : key);
    const env = makeEnvelope({ pipeline: this.subjects.pipeline, stage, key, body, attempt: options.attempt ?? 1, trace: options.trace, id });
    const data = encodeEnvelope(env);
    if (data.byteLength > this.#opts.maxMessageSize) {
      throw new TroupeError(codes.TOO_LARGE,
        `message for stage ${stage} key ${key} is ${data.byteLength} bytes, above the limit of ${this.#opts.maxMessageSize}; ` +
        'store large bodies by reference');
    }
    this.#held++;
    this.peakHeld = Math.max(this.peakHeld, this.#held);
    try {
      await this.#acquire();
      try {
        return await this.#publishUntilStored(stage, id, data, options);
      } finally {
        this.#release();
      }
    } finally {
      this.#held--;
    }
  }

  async #publishUntilStored(stage: string, msgID: string, data: Uint8Array, options: PublishOptions): Promise<{ duplicate: boolean }> {
    const subject = this.subjects.work(stage);
    let backoff = this.#opts.minBackoffMs;
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        const ack = await this.#js.publish(subject, data, { msgID, timeout: this.#opts.publishTimeoutMs });
        return { duplicate: ack.duplicate };
      } catch (err) {
        if (isStreamFull(err)) {
          this.stalls++;
          options.onStall?.();
        } else if (!isTransient(err)) {
          throw err;
        }
        // Same msgID on retry: if the first attempt was stored after all, the server dedupes.
        await sleep(backoff * (0.5 + Math.random() / 2), undefined, options.signal ? { signal: options.signal } : undefined);
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
