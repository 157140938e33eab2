import { Pool } from 'undici';
import type { IncomingHttpHeaders } from 'node:http';
import { codes, TroupeError } from '../../messages/errors.ts';
import { readFileUrl, tooLarge } from './file.ts';
import { delay, Semaphore, TokenBucket } from './limits.ts';
import { resolveFetcherOptions, type FetcherOptions, type ResolvedFetcherOptions, type ResolvedRate } from './options.ts';
import {
  backoffMs, FetchError, isRetryableNetworkError, isTimeoutError, parseRetryAfter, plural,
  REDIRECT_STATUSES, RETRY_AFTER_STATUSES, RETRY_STATUSES,
} from './retry.ts';

// Re-exported for callers that build a fetcher and its shared headers from one import.
export { headersProvider, type HeadersProvider, type HeadersSource } from './headers.ts';
export { FetchError } from './retry.ts';
export type { FetcherOptions } from './options.ts';

/** One HTTP (or `file://`) request. */
export interface FetchRequest {
  url: string;
  /** @default 'GET' */
  method?: string;
  /** Request headers; they override the shared ones of the `headers` option. */
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

/** A successful (2xx or 304) response with its whole body. */
export interface FetchResponse {
  /** The final URL, after redirects. */
  url: string;
  status: number;
  /** Lower-case names; repeated headers joined with `, `. */
  headers: Record<string, string>;
  body: Uint8Array;
  /** Requests sent (redirect hops not counted); never more than `maxAttempts`. */
  attempts: number;
  /** Wall time of the whole fetch, queueing and retries included. */
  ms: number;
}

export interface FetcherStats {
  /** Requests sent to servers (every attempt and redirect hop). */
  requests: number;
  /** Attempts that were followed by another try. */
  retries: number;
  succeeded: number;
  failed: number;
  /** Requests in flight per origin right now. */
  inFlight: Record<string, number>;
  /** Callers waiting for a concurrency slot per origin right now. */
  queued: Record<string, number>;
}

interface Origin {
  readonly pool: Pool;
  readonly slots: Semaphore;
  readonly bucket: TokenBucket;
  inFlight: number;
  /** Fetches waiting for or holding a slot of this origin. */
  users: number;
  /** When the last user let go (performance.now()). */
  idleSince: number;
}

/** How one attempt ended, when it did not end the fetch. */
type Outcome =
  | { kind: 'done'; status: number; headers: Record<string, string>; body: Uint8Array }
  | { kind: 'redirect'; status: number; location: string }
  | { kind: 'auth'; status: number }
  | { kind: 'retry'; status?: number; reason: string; retryAfterMs?: number; timeout: boolean; cause?: unknown }
  | { kind: 'budget' };

/** Aborts an attempt when the fetch's retry-time budget runs out. */
const BUDGET = Symbol('budget');

/**
 * The Fetcher's HTTP engine: one undici `Pool` per origin with a concurrency limit and a
 * token-bucket rate limit per origin, timeouts, bounded retries (attempts and total time,
 * exponential backoff with full jitter, `Retry-After`), manual redirects, a body size
 * limit and shared request headers refreshed once on 401/403. `file://` URLs read local
 * files. Every failure it gives up on is a {@link FetchError} (a `PermanentError`): the
 * caller dead-letters it instead of retrying, so a request is never tried more than
 * `maxAttempts` times.
 */
export class HttpFetcher {
  readonly options: ResolvedFetcherOptions;
  readonly #origins = new Map<string, Origin>();
  readonly #abort = new AbortController();
  #closing: Promise<void> | undefined;
  readonly #stats = { requests: 0, retries: 0, succeeded: 0, failed: 0 };
  #share = 1;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(options: FetcherOptions = {}) {
    this.options = resolveFetcherOptions(options);
  }

  /** How many fetchers divide each per-origin rate limit (this one included). */
  get share(): number {
    return this.#share;
  }

  /**
   * Divides every per-origin rate limit (the default and the `perOrigin` ones) among `n`
   * fetchers that call the same origins, this one included: each gets `perSecond / n` and
   * `burst / n` (at least 1). Applies at once to origins already in use.
   */
  setShare(n: number): void {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`HttpFetcher.setShare: ${n} is not a positive integer`);
    if (n === this.#share) return;
    this.#share = n;
    for (const [key, o] of this.#origins) {
      const rate = this.#rateOf(key);
      if (Number.isFinite(rate.perSecond)) o.bucket.setRate(rate.perSecond, rate.burst);
    }
  }

  /** The rate of `origin` for this fetcher's share. */
  #rateOf(origin: string): ResolvedRate {
    const rate = this.options.rateByOrigin.get(origin) ?? this.options.rate;
    const n = this.#share;
    return n === 1 ? rate : { perSecond: rate.perSecond / n, burst: Math.max(1, Math.floor(rate.burst / n)) };
  }

  /**
   * Fetches `req.url` and resolves with the whole response, or rejects with a
   * {@link FetchError} (or the signal's reason when `signal` aborts, or `TROUPE_CLOSED`).
   */
  async fetch(req: FetchRequest, signal?: AbortSignal): Promise<FetchResponse> {
    if (this.#closing) throw new TroupeError(codes.CLOSED, 'the fetcher is closed');
    const started = performance.now();
    const sig = signal ? AbortSignal.any([signal, this.#abort.signal]) : this.#abort.signal;
    let url: URL;
    try {
      url = new URL(req.url);
    } catch (err) {
      throw new FetchError(`invalid URL ${JSON.stringify(req.url)}`, { code: codes.HTTP, url: String(req.url), attempts: 0, cause: err });
    }
    try {
      const res = url.protocol === 'file:'
        ? await this.#readFile(url, started, sig)
        : await this.#fetchHttp(url, req, started, sig);
      this.#stats.succeeded++;
      return res;
    } catch (err) {
      this.#stats.failed++;
      throw err;
    }
  }

  stats(): FetcherStats {
    const inFlight: Record<string, number> = {};
    const queued: Record<string, number> = {};
    for (const [origin, o] of this.#origins) {
      inFlight[origin] = o.inFlight;
      queued[origin] = o.slots.waiting;
    }
    return { ...this.#stats, inFlight, queued };
  }

  /**
   * Rejects queued and in-flight fetches with `TROUPE_CLOSED` and closes every pool. Wait
   * for your own fetches before calling it for a graceful stop. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#abort.abort(new TroupeError(codes.CLOSED, 'the fetcher was closed'));
      clearInterval(this.#sweeper);
      const pools = [...this.#origins.values()].map((o) => o.pool);
      this.#origins.clear();
      await Promise.all(pools.map((p) => p.close()));
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #readFile(url: URL, started: number, signal: AbortSignal): Promise<FetchResponse> {
    this.#stats.requests++;
    const file = await readFileUrl(url, this.options.maxBodyBytes, signal);
    return {
      url: url.href, status: 200, body: file.body, attempts: 1, ms: Math.round(performance.now() - started),
      headers: { 'content-length': String(file.body.length), 'last-modified': new Date(file.mtimeMs).toUTCString() },
    };
  }

  async #fetchHttp(first: URL, req: FetchRequest, started: number, signal: AbortSignal): Promise<FetchResponse> {
    const opts = this.options;
    let url = first;
    let method = (req.method ?? 'GET').toUpperCase();
    let body = req.body;
    let ownHeaders = lowerCase(req.headers ?? {});
    let shared = opts.headers ? await opts.headers.get() : undefined;
    let attempts = 0;
    let redirects = 0;
    let refreshed = false;
    // Budgeted time: attempts and backoff waits. Waiting for a slot or a rate token is
    // not counted: a rate limit slows callers down, it never makes them fail.
    let spent = 0;
    let last: Exclude<Outcome, { kind: 'done' | 'budget' }> | undefined;

    const giveUp = (why?: string): FetchError => {
      const reasons = [last === undefined ? undefined : describe(last, method, url), why].filter((r) => r !== undefined);
      const ms = Math.round(performance.now() - started);
      const timeout = why !== undefined || (last?.kind === 'retry' && last.timeout);
      return new FetchError(`gave up after ${plural(attempts, 'attempt')} in ${ms} ms: ${reasons.join('; ')}`, {
        code: timeout ? codes.TIMEOUT : codes.HTTP, url: url.href, attempts,
        status: last !== undefined && 'status' in last ? last.status : undefined,
        cause: last?.kind === 'retry' ? last.cause : undefined,
      });
    };

    for (;;) {
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new FetchError(`unsupported URL scheme ${url.protocol} in ${url.href}`, { code: codes.HTTP, url: url.href, attempts });
      }
      const origin = this.#origin(url.origin);
      let outcome: Outcome;
      origin.users++;
      try {
        await origin.slots.acquire(signal);
      } catch (err) {
        this.#letGo(origin);
        throw err;
      }
      try {
        await origin.bucket.take(signal);
        const budget = opts.maxRetryTimeMs - spent;
        if (budget <= 0) throw giveUp(`the retry budget of ${opts.maxRetryTimeMs} ms is spent`);
        const headers = { 'user-agent': opts.userAgent, ...(shared === undefined ? {} : lowerCase(shared)), ...ownHeaders };
        const t0 = performance.now();
        try {
          outcome = await this.#attempt(origin, url, method, headers, body, budget, attempts + 1, signal);
        } finally {
          spent += performance.now() - t0;
        }
      } finally {
        origin.slots.release();
        this.#letGo(origin);
      }

      if (outcome.kind === 'done') {
        return { url: url.href, status: outcome.status, headers: outcome.headers, body: outcome.body, attempts: attempts + 1, ms: Math.round(performance.now() - started) };
      }
      if (outcome.kind === 'redirect') {
        if (++redirects > opts.maxRedirects) {
          throw new FetchError(`too many redirects (more than ${opts.maxRedirects}) from ${first.href}, last to ${outcome.location}`,
            { code: codes.HTTP, url: url.href, status: outcome.status, attempts: attempts + 1 });
        }
        const next = new URL(outcome.location, url);
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          throw new FetchError(`refused redirect from ${url.href} to ${next.href}`, { code: codes.HTTP, url: url.href, status: outcome.status, attempts: attempts + 1 });
        }
        if (outcome.status === 303 || ((outcome.status === 301 || outcome.status === 302) && method === 'POST')) {
          if (method !== 'HEAD') method = 'GET';
          body = undefined;
          ownHeaders = without(ownHeaders, ['content-type', 'content-length', 'content-encoding']);
        }
        if (next.origin !== url.origin) {
          // Credentials meant for one origin are not sent to another.
          shared = undefined;
          ownHeaders = without(ownHeaders, ['authorization', 'cookie', 'proxy-authorization']);
        }
        url = next;
        continue;
      }

      attempts++;
      if (outcome.kind === 'budget') throw giveUp(`no answer from ${method} ${url.href} before the retry budget of ${opts.maxRetryTimeMs} ms ran out`);
      last = outcome;
      if (outcome.kind === 'auth') {
        const source = opts.headers;
        if (source === undefined || refreshed || shared === undefined) {
          throw new FetchError(`HTTP ${outcome.status} from ${method} ${url.href}`, { code: codes.HTTP, url: url.href, status: outcome.status, attempts });
        }
        refreshed = true;
        if (attempts >= opts.maxAttempts) throw giveUp();
        // Another request may have refreshed the headers already: then use those.
        const current = await source.get();
        if (current !== shared) shared = current;
        else if (source.refresh !== undefined) shared = await source.refresh();
        else throw new FetchError(`HTTP ${outcome.status} from ${method} ${url.href}`, { code: codes.HTTP, url: url.href, status: outcome.status, attempts });
        this.#stats.retries++;
        continue;
      }
      if (attempts >= opts.maxAttempts) throw giveUp();
      const remaining = opts.maxRetryTimeMs - spent;
      let wait: number;
      if (outcome.retryAfterMs !== undefined) {
        wait = outcome.retryAfterMs;
        if (wait >= remaining) throw giveUp(`Retry-After of ${wait} ms exceeds the remaining retry budget of ${Math.round(remaining)} ms`);
      } else {
        wait = backoffMs(attempts, opts.retryBaseMs, opts.maxRetryTimeMs);
        if (wait >= remaining) throw giveUp(`the retry budget of ${opts.maxRetryTimeMs} ms is spent`);
      }
      this.#stats.retries++;
      await delay(wait, signal);
      spent += wait;
    }
  }

  /** Sends one request and reads its answer; throws only for permanent failures and aborts. */
  async #attempt(
    origin: Origin, url: URL, method: string, headers: Record<string, string>, body: string | Uint8Array | undefined,
    budgetMs: number, attempt: number, signal: AbortSignal,
  ): Promise<Outcome> {
    const opts = this.options;
    const budget = new AbortController();
    const timer = setTimeout(() => budget.abort(BUDGET), budgetMs);
    const sig = AbortSignal.any([signal, budget.signal]);
    origin.inFlight++;
    this.#stats.requests++;
    try {
      const res = await origin.pool.request({
        path: `${url.pathname}${url.search}`, method, headers, body: body ?? null, signal: sig,
        headersTimeout: opts.headersTimeoutMs, bodyTimeout: opts.bodyTimeoutMs,
      });
      const status = res.statusCode;
      const resHeaders = flatten(res.headers);
      if ((status >= 200 && status < 300) || status === 304) {
        const length = Number(resHeaders['content-length']);
        if (length > opts.maxBodyBytes) {
          res.body.destroy();
          throw tooLarge(url, length, opts.maxBodyBytes, attempt, status);
        }
        let size = 0;
        const chunks: Buffer[] = [];
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          size += chunk.length;
          if (size > opts.maxBodyBytes) {
            res.body.destroy();
            throw tooLarge(url, size, opts.maxBodyBytes, attempt, status);
          }
          chunks.push(chunk);
        }
        const all = Buffer.concat(chunks, size);
        return { kind: 'done', status, headers: resHeaders, body: new Uint8Array(all.buffer, all.byteOffset, all.byteLength) };
      }
      // Reads a little of an unwanted body so the connection can be reused; a large one is cut off.
      try {
        await res.body.dump({ limit: 64 * 1024 });
      } catch {
        // Only the status matters here; undici drops a connection whose body failed.
      }
      const location = resHeaders['location'];
      if (REDIRECT_STATUSES.has(status) && location !== undefined) return { kind: 'redirect', status, location };
      if (status === 401 || status === 403) return { kind: 'auth', status };
      if (RETRY_STATUSES.has(status)) {
        const retryAfterMs = RETRY_AFTER_STATUSES.has(status) ? parseRetryAfter(resHeaders['retry-after']) : undefined;
        return { kind: 'retry', status, reason: `HTTP ${status}`, timeout: false, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
      }
      throw new FetchError(`HTTP ${status} from ${method} ${url.href}`, { code: codes.HTTP, url: url.href, status, attempts: attempt });
    } catch (err) {
      if (err instanceof TroupeError) throw err;
      if (signal.aborted) throw signal.reason;
      if (budget.signal.aborted) return { kind: 'budget' };
      const code = (err as { code?: string }).code;
      const reason = `${code ?? (err as Error).name}: ${(err as Error).message}`;
      if (!isRetryableNetworkError(err)) {
        throw new FetchError(`${reason} (${method} ${url.href})`, { code: codes.HTTP, url: url.href, attempts: attempt, cause: err });
      }
      return { kind: 'retry', reason, timeout: isTimeoutError(err), cause: err };
    } finally {
      clearTimeout(timer);
      origin.inFlight--;
    }
  }

  #letGo(origin: Origin): void {
    if (--origin.users === 0) origin.idleSince = performance.now();
  }

  /**
   * Drops origins nobody used for `originIdleMs` (closing their pools): the map holds the
   * origins in use recently, not every origin a long crawl ever met.
   */
  #sweep(): void {
    const cutoff = performance.now() - this.options.originIdleMs;
    for (const [key, o] of this.#origins) {
      if (o.users > 0 || o.idleSince > cutoff) continue;
      this.#origins.delete(key);
      void o.pool.close().catch(() => undefined);
    }
    if (this.#origins.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #origin(key: string): Origin {
    let o = this.#origins.get(key);
    if (o === undefined) {
      if (this.#sweeper === undefined) {
        this.#sweeper = setInterval(() => this.#sweep(), Math.min(this.options.originIdleMs, 10_000));
        this.#sweeper.unref();
      }
      const opts = this.options;
      // Made at the full rate, then shared: a bucket can lower its rate but not raise it past that.
      const full = opts.rateByOrigin.get(key) ?? opts.rate;
      const rate = this.#rateOf(key);
      const bucket = new TokenBucket(full.perSecond, full.burst);
      if (this.#share > 1 && Number.isFinite(rate.perSecond)) bucket.setRate(rate.perSecond, rate.burst);
      o = {
        pool: new Pool(key, {
          connections: opts.connectionsPerOrigin,
          connectTimeout: opts.connectTimeoutMs,
          headersTimeout: opts.headersTimeoutMs,
          bodyTimeout: opts.bodyTimeoutMs,
        }),
        slots: new Semaphore(opts.concurrencyPerOrigin),
        bucket,
        inFlight: 0,
        users: 0,
        idleSince: performance.now(),
      };
      this.#origins.set(key, o);
    }
    return o;
  }
}

function describe(o: Exclude<Outcome, { kind: 'done' | 'budget' }>, method: string, url: URL): string {
  if (o.kind === 'retry') return `${o.reason} from ${method} ${url.href}`;
  return `HTTP ${o.status} from ${method} ${url.href}`;
}

function lowerCase(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = v;
  return out;
}

function without(h: Record<string, string>, names: string[]): Record<string, string> {
  const out = { ...h };
  for (const n of names) delete out[n];
  return out;
}

function flatten(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}
