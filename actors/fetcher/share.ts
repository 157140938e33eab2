/**
 * Per-origin rate limits are for the whole pipeline, wherever its Fetchers run. Fetcher
 * replicas find each other on one NATS subject and each takes `1/n` of every limit, n being
 * the Fetchers alive (this one included), so a `troupe worker` that adds Fetchers on another
 * machine slows the others down instead of pushing the API past its limit.
 *
 * The protocol, on `troupe.<pipeline>.events.fetch.share` (msgpack, visible to `troupe tap`):
 * - `hello` when a Fetcher starts; every Fetcher that hears it adds the newcomer, lowers its
 *   own share at once and answers `here` with the share it ran at until then (`was`);
 * - `here` every `announceMs`; a Fetcher not heard for `expireMs` is dropped (it died);
 * - `bye` when a Fetcher stops, so the others take its part back at once.
 *
 * The newcomer listens for `collectMs` before its first request. If a peer was running at a
 * larger share of the limit than the new count allows, it waits one rate window more: by
 * then the peer's own one-second window holds only requests made at its lowered rate, so
 * the sum over any window stays within the limit.
 *
 * A Fetcher whose connection is down hears nobody, so it sends no request until it is back
 * and has said hello again; it does not drop its peers meanwhile (the silence is its own).
 * Left open: a partition the client has not noticed yet (no disconnect event) lets it finish
 * the items it already holds while the others, not hearing it, take its part back.
 */

import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { decode, encode } from '../../messages/mod.ts';
import { delay, WINDOW_MS } from './limits.ts';

export interface LimitShareOptions {
  /** Fetchers this one knows of without asking (those its supervisor starts). @default 1 */
  known?: number;
  /** How long a newcomer listens for the others before its first request, ms. @default 150 */
  collectMs?: number;
  /** How often a Fetcher says it is alive, ms. @default 1000 */
  announceMs?: number;
  /** A Fetcher not heard for this long is taken for dead, ms. @default 3500 */
  expireMs?: number;
}

interface ShareMessage {
  op: 'hello' | 'here' | 'bye';
  replica: string;
  /** The sender's share (the count it divides by) before it heard this message's trigger. */
  was?: number;
}

/** One Fetcher's view of the Fetchers dividing its pipeline's rate limits. */
export class LimitShare {
  readonly #nc: NatsConnection;
  readonly #subject: string;
  readonly #self: string;
  readonly #known: number;
  readonly #opts: Required<Omit<LimitShareOptions, 'known'>>;
  readonly #onChange: (share: number) => void;
  /** Peers (not this one) and when they were last heard, by replica id. */
  readonly #peers = new Map<string, number>();
  #share: number;
  #sub: Subscription | undefined;
  #status: { stop?(): void } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #signal: AbortSignal | undefined;
  /** While joining: the share each peer said it ran at, first message per peer. */
  #was: Map<string, number> | undefined;
  /** Requests wait for it: joined, and connected. */
  #gate: Promise<void> = Promise.resolve();
  #reconnected: (() => void) | undefined;
  #connected = true;
  #closed = false;

  constructor(nc: NatsConnection, pipeline: string, self: string, onChange: (share: number) => void, options: LimitShareOptions = {}) {
    this.#nc = nc;
    this.#subject = `troupe.${pipeline}.events.fetch.share`;
    this.#self = self;
    this.#known = Math.max(1, options.known ?? 1);
    this.#opts = { collectMs: options.collectMs ?? 150, announceMs: options.announceMs ?? 1_000, expireMs: options.expireMs ?? 3_500 };
    this.#onChange = onChange;
    this.#share = this.#known;
  }

  /** The number of Fetchers dividing each limit, this one included. */
  get share(): number {
    return this.#share;
  }

  /** Fetchers heard from, this one included. */
  get alive(): number {
    return this.#peers.size + 1;
  }

  /**
   * Says hello and resolves when this Fetcher may send its first request (after `collectMs`,
   * plus one rate window when a running peer had to lower its rate for it).
   */
  start(signal?: AbortSignal): Promise<void> {
    this.#signal = signal;
    this.#sub = this.#nc.subscribe(this.#subject, { callback: (err, m) => { if (!err) this.#hear(m.data); } });
    this.#watchConnection();
    this.#timer = setInterval(() => this.#tick(), this.#opts.announceMs);
    this.#timer.unref();
    return this.#setGate(this.#join());
  }

  /**
   * Resolves when this Fetcher may send a request: it has joined, and its connection is up.
   * Without a connection it cannot hear the others come and go, so it sends nothing; after a
   * reconnect it joins again (the others' rates may have changed meanwhile).
   */
  ready(): Promise<void> {
    return this.#gate;
  }

  /** Says goodbye, so the others take this Fetcher's part back at once. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#status?.stop?.();
    this.#sub?.unsubscribe();
    this.#send('bye', this.#share);
    this.#reconnected?.();
  }

  async #join(): Promise<void> {
    const was = new Map<string, number>();
    this.#was = was;
    this.#send('hello', this.#share);
    try {
      await delay(this.#opts.collectMs, this.#signal);
    } finally {
      this.#was = undefined;
    }
    this.#update();
    // A peer that ran at a larger part of the limit than the count now allows.
    if ([...was.values()].some((w) => w < this.#share)) await delay(WINDOW_MS, this.#signal);
  }

  #setGate(p: Promise<void>): Promise<void> {
    p.catch(() => undefined); // callers that await it see the rejection (an abort)
    this.#gate = p;
    return p;
  }

  #watchConnection(): void {
    const status = this.#nc.status();
    this.#status = status as { stop?(): void };
    void (async () => {
      for await (const st of status) {
        if (this.#closed) break;
        if (st.type === 'disconnect' && this.#connected) {
          this.#connected = false;
          const back = new Promise<void>((resolve) => { this.#reconnected = resolve; });
          this.#setGate(back.then(() => (this.#closed ? undefined : this.#join())));
        } else if (st.type === 'reconnect' && !this.#connected) {
          this.#connected = true;
          // Nobody could be heard meanwhile: count from now, not from before the outage.
          const now = performance.now();
          for (const replica of this.#peers.keys()) this.#peers.set(replica, now);
          this.#reconnected?.();
          this.#reconnected = undefined;
        }
      }
    })().catch(() => undefined);
  }

  #hear(data: Uint8Array): void {
    if (this.#closed) return;
    let msg: ShareMessage;
    try {
      msg = decode(data) as ShareMessage;
    } catch {
      return; // not ours: ignored
    }
    if (typeof msg !== 'object' || msg === null || typeof msg.replica !== 'string' || msg.replica === this.#self) return;
    if (msg.op === 'bye') {
      this.#peers.delete(msg.replica);
    } else {
      if (this.#was && !this.#was.has(msg.replica) && typeof msg.was === 'number') this.#was.set(msg.replica, msg.was);
      this.#peers.set(msg.replica, performance.now());
      if (msg.op === 'hello') this.#send('here', this.#share);
    }
    this.#update();
  }

  #tick(): void {
    if (!this.#connected) return; // silence is ours, not the peers'
    const cutoff = performance.now() - this.#opts.expireMs;
    for (const [replica, seen] of this.#peers) if (seen < cutoff) this.#peers.delete(replica);
    this.#send('here', this.#share);
    this.#update();
  }

  #target(): number {
    return Math.max(this.#known, this.#peers.size + 1);
  }

  #update(): void {
    const next = this.#target();
    if (next === this.#share) return;
    this.#share = next;
    this.#onChange(next);
  }

  #send(op: ShareMessage['op'], was: number): void {
    if (this.#nc.isClosed()) return;
    const msg: ShareMessage = { op, replica: this.#self, was };
    this.#nc.publish(this.#subject, encode(msg));
  }
}
