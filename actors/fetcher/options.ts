import { codes, TroupeError } from '../../messages/errors.ts';
import type { HeadersSource } from './headers.ts';
import { WINDOW_MS } from './limits.ts';

/** A token-bucket rate: `perSecond` tokens are added each second, at most `burst` are kept. */
export interface RateLimit {
  /** Requests per second. `Infinity` means no limit. */
  perSecond: number;
  /** Requests that may start at once after an idle period. @default 1 */
  burst?: number;
}

/** Per-origin request rates: a default for every origin and overrides for some. */
export interface RateOptions extends Partial<RateLimit> {
  /** Overrides by origin (`https://api.example.com`); keys are normalised with `new URL(k).origin`. */
  perOrigin?: Record<string, RateLimit>;
}

/** Options of {@link HttpFetcher}. All optional; see each `@default`. */
export interface FetcherOptions {
  /** Pooled keep-alive connections per origin. @default 64 */
  connectionsPerOrigin?: number;
  /** Requests in flight per origin at once; more callers wait their turn. @default 64 */
  concurrencyPerOrigin?: number;
  /** Requests per second per origin (token bucket). Waiting for a token slows, never fails. @default unlimited */
  rate?: RateOptions;
  /** @default 10_000 */
  connectTimeoutMs?: number;
  /** Time until the response headers arrive. @default 30_000 */
  headersTimeoutMs?: number;
  /** Longest pause between two body chunks. @default 30_000 */
  bodyTimeoutMs?: number;
  /** Absolute cap on tries of one request (first try included). @default 4 */
  maxAttempts?: number;
  /** Absolute cap on the time one request may spend trying and waiting between tries. @default 60_000 */
  maxRetryTimeMs?: number;
  /** Base of the exponential backoff with full jitter between tries. @default 250 */
  retryBaseMs?: number;
  /** Largest body accepted; larger ones fail permanently with `TROUPE_TOO_LARGE`. @default 16 MiB */
  maxBodyBytes?: number;
  /**
   * An origin's connection pool and limiter state are dropped after this long without a
   * request in flight or waiting, so a crawl across many origins keeps only the recent ones.
   * At least 1,050 ms (one rate window: a limit then starts afresh safely). @default 30_000
   */
  originIdleMs?: number;
  /** Redirects followed per request. @default 5 */
  maxRedirects?: number;
  /** @default 'troupe/0.1 (+https://github.com/troupe)' */
  userAgent?: string;
  /** Headers shared by every request (auth tokens…); refreshed once on a 401/403. */
  headers?: HeadersSource;
}

export interface ResolvedRate {
  perSecond: number;
  burst: number;
}

/** The complete internal options, after defaults and validation. */
export interface ResolvedFetcherOptions {
  readonly connectionsPerOrigin: number;
  readonly concurrencyPerOrigin: number;
  readonly rate: ResolvedRate;
  readonly rateByOrigin: ReadonlyMap<string, ResolvedRate>;
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly maxAttempts: number;
  readonly maxRetryTimeMs: number;
  readonly retryBaseMs: number;
  readonly maxBodyBytes: number;
  readonly maxRedirects: number;
  readonly originIdleMs: number;
  readonly userAgent: string;
  readonly headers: HeadersSource | undefined;
}

export const fetcherDefaults = Object.freeze({
  connectionsPerOrigin: 64,
  concurrencyPerOrigin: 64,
  rate: Object.freeze({ perSecond: Infinity, burst: 1 }),
  connectTimeoutMs: 10_000,
  headersTimeoutMs: 30_000,
  bodyTimeoutMs: 30_000,
  maxAttempts: 4,
  maxRetryTimeMs: 60_000,
  retryBaseMs: 250,
  originIdleMs: 30_000,
  maxBodyBytes: 16 * 1024 * 1024,
  maxRedirects: 5,
  userAgent: 'troupe/0.1 (+https://github.com/troupe)',
});

const PREFIX = 'options.fetcher';

function bad(name: string, rule: string): TroupeError {
  return new TroupeError(codes.BAD_OPTION, `${PREFIX}.${name} must be ${rule}`);
}

function atLeast(name: string, value: number, min: number): number {
  if (value < min) throw bad(name, `at least ${min}`);
  return value;
}

function positiveInt(name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw bad(name, 'a positive integer');
  return v;
}

function nonNegativeInt(name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(name, 'a non-negative integer');
  return v;
}

function rateOf(name: string, v: unknown, fallback: ResolvedRate): ResolvedRate {
  if (typeof v !== 'object' || v === null) throw bad(name, 'an object { perSecond, burst }');
  const { perSecond, burst } = v as Partial<RateLimit>;
  const ps = perSecond ?? fallback.perSecond;
  if (typeof ps !== 'number' || Number.isNaN(ps) || ps <= 0) throw bad(`${name}.perSecond`, 'a positive number (Infinity for no limit)');
  return { perSecond: ps, burst: positiveInt(`${name}.burst`, burst, fallback.burst) };
}

/** Merges `options` over the frozen defaults once, refusing any invalid value with a message naming it. */
export function resolveFetcherOptions(options: FetcherOptions = {}): ResolvedFetcherOptions {
  if (typeof options !== 'object' || options === null) throw new TroupeError(codes.BAD_OPTION, `${PREFIX} must be an object`);
  const d = fetcherDefaults;
  const rate = options.rate === undefined ? d.rate : rateOf('rate', options.rate, d.rate);
  const rateByOrigin = new Map<string, ResolvedRate>();
  const perOrigin = options.rate?.perOrigin;
  if (perOrigin !== undefined) {
    if (typeof perOrigin !== 'object' || perOrigin === null) throw bad('rate.perOrigin', 'an object keyed by origin');
    for (const [key, value] of Object.entries(perOrigin)) {
      const name = `rate.perOrigin[${JSON.stringify(key)}]`;
      let origin: string;
      try {
        origin = new URL(key).origin;
      } catch {
        throw bad(name, 'keyed by an origin such as "https://api.example.com"');
      }
      if (origin === 'null') throw bad(name, 'keyed by an http(s) origin');
      rateByOrigin.set(origin, rateOf(name, value, { perSecond: rate.perSecond, burst: rate.burst }));
    }
  }
  const userAgent = options.userAgent ?? d.userAgent;
  if (typeof userAgent !== 'string' || userAgent.length === 0 || /[\r\n]/.test(userAgent)) throw bad('userAgent', 'a non-empty single-line string');
  const headers = options.headers;
  if (headers !== undefined && (typeof headers !== 'object' || headers === null || typeof headers.get !== 'function' ||
    (headers.refresh !== undefined && typeof headers.refresh !== 'function'))) {
    throw bad('headers', 'an object with get() and optionally refresh()');
  }
  return Object.freeze({
    connectionsPerOrigin: positiveInt('connectionsPerOrigin', options.connectionsPerOrigin, d.connectionsPerOrigin),
    concurrencyPerOrigin: positiveInt('concurrencyPerOrigin', options.concurrencyPerOrigin, d.concurrencyPerOrigin),
    rate,
    rateByOrigin,
    connectTimeoutMs: positiveInt('connectTimeoutMs', options.connectTimeoutMs, d.connectTimeoutMs),
    headersTimeoutMs: positiveInt('headersTimeoutMs', options.headersTimeoutMs, d.headersTimeoutMs),
    bodyTimeoutMs: positiveInt('bodyTimeoutMs', options.bodyTimeoutMs, d.bodyTimeoutMs),
    maxAttempts: positiveInt('maxAttempts', options.maxAttempts, d.maxAttempts),
    maxRetryTimeMs: positiveInt('maxRetryTimeMs', options.maxRetryTimeMs, d.maxRetryTimeMs),
    retryBaseMs: positiveInt('retryBaseMs', options.retryBaseMs, d.retryBaseMs),
    originIdleMs: atLeast('originIdleMs', positiveInt('originIdleMs', options.originIdleMs, d.originIdleMs), WINDOW_MS),
    maxBodyBytes: positiveInt('maxBodyBytes', options.maxBodyBytes, d.maxBodyBytes),
    maxRedirects: nonNegativeInt('maxRedirects', options.maxRedirects, d.maxRedirects),
    userAgent,
    headers,
  });
}
