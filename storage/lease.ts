/**
 * Exactly one Writer per pipeline: a lease held as the key `<pipeline>.writer` in the NATS
 * KV bucket `troupe-leases`. Creating the key wins the lease; the holder renews it with
 * compare-and-set updates, and the key's revision is the fencing epoch. nats-server 2.9
 * has no per-message TTL, so a holder that dies without releasing is expired by the
 * bucket's max age (`ttl`), which every renewal restarts.
 */

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { NatsConnection } from '@nats-io/transport-node';
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { checkName, codes, TroupeError } from '../messages/mod.ts';

/** The KV bucket holding every pipeline's Writer lease. */
export const LEASE_BUCKET = 'troupe-leases';

/** Who holds a lease, as stored in the KV value. */
export interface LeaseHolder {
  host: string;
  pid: number;
  /** Identifies one Writer instance; distinguishes replicas in one process. */
  id: string;
}

/** A lease as `readLease` reports it. */
export interface LeaseInfo extends LeaseHolder {
  /** When the holder acquired it, ISO 8601. */
  since: string;
  /** The key's revision: the fencing epoch. */
  epoch: number;
}

export interface LeaseOptions {
  /**
   * How long a lease survives without renewal. Also the bucket's max age when this call
   * creates the bucket (an existing bucket keeps its own). @default 10_000
   */
  ttlMs?: number;
  /** Renewal period. @default ttlMs / 3 */
  renewEveryMs?: number;
  /** Who is acquiring. @default this host, this pid, a random id */
  holder?: Partial<LeaseHolder>;
}

type LeaseState = 'held' | 'lost' | 'released';

/**
 * The Writer lease of one pipeline. `acquire` it, call `assertHeld()` before each commit,
 * `release()` (or `await using`) at shutdown.
 */
export class WriterLease {
  readonly pipeline: string;
  readonly key: string;
  readonly holder: LeaseHolder;
  /** When this lease was acquired, ISO 8601. */
  readonly since: string;
  /** How long the lease lives unrenewed: the option, or the bucket's max age if shorter. */
  readonly ttlMs: number;
  readonly renewEveryMs: number;
  #kv: KV;
  #revision: number;
  #lastRenewal: number;
  #state: LeaseState = 'held';
  #lostError: TroupeError | undefined;
  #timer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;
  #onLost: Array<(err: TroupeError) => void> = [];

  private constructor(kv: KV, pipeline: string, holder: LeaseHolder, since: string, revision: number, startedAt: number, ttlMs: number, renewEveryMs: number) {
    this.#kv = kv;
    this.pipeline = pipeline;
    this.key = leaseKey(pipeline);
    this.holder = holder;
    this.since = since;
    this.#revision = revision;
    this.#lastRenewal = startedAt;
    this.ttlMs = ttlMs;
    this.renewEveryMs = renewEveryMs;
    this.#schedule();
  }

  /**
   * Takes the pipeline's Writer lease. A lease already held is taken over only when its
   * holder is gone: same host and a pid that no longer runs, or this very process (a
   * restarted replica). Otherwise throws `TROUPE_LEASE_HELD` naming the holder.
   */
  static async acquire(nc: NatsConnection, pipeline: string, options: LeaseOptions = {}): Promise<WriterLease> {
    checkName('pipeline', pipeline);
    let ttlMs = options.ttlMs ?? 10_000;
    if (!Number.isInteger(ttlMs) || ttlMs < 100) throw badOption('options.ttlMs must be an integer of at least 100');
    let renewEveryMs = options.renewEveryMs ?? Math.floor(ttlMs / 3);
    if (!Number.isInteger(renewEveryMs) || renewEveryMs <= 0 || renewEveryMs >= ttlMs) {
      throw badOption('options.renewEveryMs must be a positive integer below options.ttlMs');
    }
    const holder: LeaseHolder = {
      host: options.holder?.host ?? hostname(),
      pid: options.holder?.pid ?? process.pid,
      id: options.holder?.id ?? randomUUID(),
    };
    const kv = await leaseBucket(nc, ttlMs);
    // An existing bucket may expire keys sooner than this lease's ttl: renew within it.
    const bucketTtl = (await kv.status()).ttl;
    if (bucketTtl > 0 && bucketTtl < ttlMs) {
      ttlMs = bucketTtl;
      renewEveryMs = Math.min(renewEveryMs, Math.max(1, Math.floor(bucketTtl / 3)));
    }
    const key = leaseKey(pipeline);
    const since = new Date().toISOString();
    const value = JSON.stringify({ ...holder, since });

    for (let attempt = 0; ; attempt++) {
      const startedAt = Date.now();
      try {
        const rev = await kv.create(key, value);
        return new WriterLease(kv, pipeline, holder, since, rev, startedAt, ttlMs, renewEveryMs);
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
      const current = await readEntry(kv, key);
      if (current === undefined) continue; // released or expired meanwhile: create again
      if (!canTakeOver(current, holder)) {
        throw new TroupeError(codes.LEASE_HELD,
          `the Writer lease of pipeline ${pipeline} is held by host ${current.host} pid ${current.pid} since ${current.since}` +
          ` (epoch ${current.epoch}); stop that Writer or wait for its lease to expire (ttl ${ttlMs} ms)`,
          { retryable: true });
      }
      try {
        const rev = await kv.update(key, value, current.epoch);
        return new WriterLease(kv, pipeline, holder, since, rev, startedAt, ttlMs, renewEveryMs);
      } catch (err) {
        if (!isConflict(err) || attempt >= 3) throw err;
      }
    }
  }

  /** The fencing epoch: the lease key's current revision; it only grows, across holders too. */
  get epoch(): number {
    return this.#revision;
  }

  get state(): LeaseState {
    return this.#state;
  }

  /**
   * Throws `TROUPE_LEASE_LOST` unless the lease is still ours: no renewal found it taken or
   * deleted, and the last successful renewal is younger than `ttlMs`.
   */
  assertHeld(): void {
    if (this.#state === 'held' && Date.now() - this.#lastRenewal >= this.ttlMs) {
      this.#lose(new TroupeError(codes.LEASE_LOST,
        `the Writer lease of pipeline ${this.pipeline} was not renewed for ${Date.now() - this.#lastRenewal} ms (ttl ${this.ttlMs} ms)`));
    }
    if (this.#state === 'lost') throw this.#lostError!;
    if (this.#state === 'released') throw new TroupeError(codes.LEASE_LOST, `the Writer lease of pipeline ${this.pipeline} was released`);
  }

  /** Calls `cb` once when the lease is lost (not when it is released). */
  onLost(cb: (err: TroupeError) => void): void {
    if (this.#state === 'lost') queueMicrotask(() => cb(this.#lostError!));
    else this.#onLost.push(cb);
  }

  /** Renews now; resolves once the renewal has succeeded or the lease is lost. */
  renew(): Promise<void> {
    this.#renewing ??= this.#renew().finally(() => { this.#renewing = undefined; });
    return this.#renewing;
  }

  /** Stops renewing and deletes the key if it is still ours. Safe to call twice. */
  async release(): Promise<void> {
    if (this.#state === 'released') return;
    const wasHeld = this.#state === 'held';
    this.#state = 'released';
    clearTimeout(this.#timer);
    await this.#renewing?.catch(() => undefined);
    if (!wasHeld) return;
    try {
      // previousSeq: deletes only if nobody wrote the key since our last renewal.
      await this.#kv.delete(this.key, { previousSeq: this.#revision });
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      void this.renew().finally(() => { if (this.#state === 'held') this.#schedule(); });
    }, this.renewEveryMs);
    this.#timer.unref();
  }

  async #renew(): Promise<void> {
    if (this.#state !== 'held') return;
    const startedAt = Date.now();
    try {
      const rev = await this.#kv.update(this.key, JSON.stringify({ ...this.holder, since: this.since }), this.#revision);
      if (this.#state !== 'held') return;
      this.#revision = rev;
      this.#lastRenewal = startedAt;
    } catch (err) {
      if (this.#state !== 'held') return;
      if (isConflict(err)) {
        this.#lose(new TroupeError(codes.LEASE_LOST,
          `the Writer lease of pipeline ${this.pipeline} was deleted or taken by another holder (our epoch ${this.#revision})`, { cause: err }));
      } else if (Date.now() - this.#lastRenewal >= this.ttlMs) {
        this.#lose(new TroupeError(codes.LEASE_LOST,
          `the Writer lease of pipeline ${this.pipeline} could not be renewed for ${this.ttlMs} ms`, { cause: err }));
      }
      // Otherwise a transient failure (timeout, reconnect): the next tick tries again.
    }
  }

  #lose(err: TroupeError): void {
    if (this.#state !== 'held') return;
    this.#state = 'lost';
    this.#lostError = err;
    clearTimeout(this.#timer);
    for (const cb of this.#onLost.splice(0)) {
      try {
        cb(err);
      } catch (cbErr) {
        process.emitWarning(`onLost callback of the Writer lease of ${this.pipeline} threw: ${String(cbErr)}`, 'TroupeLeaseWarning');
      }
    }
  }
}

/** The current Writer lease of `pipeline`, or undefined if none is held (for `troupe status`). */
export async function readLease(nc: NatsConnection, pipeline: string): Promise<LeaseInfo | undefined> {
  checkName('pipeline', pipeline);
  let kv: KV;
  try {
    kv = await new Kvm(nc).open(LEASE_BUCKET);
    return await readEntry(kv, leaseKey(pipeline));
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return undefined;
    if (err instanceof Error && /stream not found/i.test(err.message)) return undefined;
    throw err;
  }
}

// JetStream API error "stream name already in use" (not in JetStreamApiCodes).
const STREAM_NAME_IN_USE = 10058;

/** Opens the lease bucket, creating it with `ttlMs` as its max age if it does not exist. */
async function leaseBucket(nc: NatsConnection, ttlMs: number): Promise<KV> {
  const kvm = new Kvm(nc);
  try {
    return await kvm.create(LEASE_BUCKET, { ttl: ttlMs, history: 1 });
  } catch (err) {
    // Another Writer created it meanwhile with its own ttl: use theirs.
    if (err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE) return kvm.open(LEASE_BUCKET);
    throw err;
  }
}

function leaseKey(pipeline: string): string {
  return `${pipeline}.writer`;
}

async function readEntry(kv: KV, key: string): Promise<LeaseInfo | undefined> {
  const e = await kv.get(key);
  if (e === null || e.operation !== 'PUT') return undefined;
  return { ...parseHolder(e.string()), epoch: e.revision };
}

function parseHolder(text: string): Omit<LeaseInfo, 'epoch'> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    v = undefined;
  }
  const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  return {
    host: typeof o.host === 'string' ? o.host : 'unknown',
    pid: typeof o.pid === 'number' ? o.pid : -1,
    id: typeof o.id === 'string' ? o.id : 'unknown',
    since: typeof o.since === 'string' ? o.since : 'unknown',
  };
}

/** A lease may be taken over from this host's dead process or from this very process. */
function canTakeOver(current: LeaseHolder, me: LeaseHolder): boolean {
  if (current.host !== me.host) return false;
  return current.pid === me.pid || !pidAlive(current.pid);
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

function isConflict(err: unknown): boolean {
  return err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
}

function badOption(message: string): TroupeError {
  return new TroupeError(codes.BAD_OPTION, message);
}
