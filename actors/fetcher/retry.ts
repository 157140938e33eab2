import { PermanentError } from '../../messages/errors.ts';

/** A fetch that failed for good: a refused status, a too large body, or retries exhausted. */
export class FetchError extends PermanentError {
  override name = 'FetchError';
  readonly url: string;
  /** The last HTTP status seen, if any response arrived. */
  readonly status: number | undefined;
  /** Requests sent for this fetch (redirect hops not counted). */
  readonly attempts: number;

  constructor(message: string, init: { code: string; url: string; status?: number | undefined; attempts: number; cause?: unknown }) {
    super(message, init.cause === undefined ? { code: init.code } : { code: init.code, cause: init.cause });
    this.url = init.url;
    this.status = init.status;
    this.attempts = init.attempts;
  }
}

/** Statuses a retry may fix. */
export const RETRY_STATUSES: ReadonlySet<number> = new Set([408, 425, 429, 500, 502, 503, 504]);
/** Statuses whose `Retry-After` is honoured. */
export const RETRY_AFTER_STATUSES: ReadonlySet<number> = new Set([429, 503]);
export const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/** Error codes of transport failures worth another try (Node's and undici's). */
const RETRY_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'ENETUNREACH', 'ENETDOWN',
  'EHOSTUNREACH', 'EHOSTDOWN', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);
const TIMEOUT_CODES: ReadonlySet<string> = new Set([
  'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
]);

export function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Whether a transport error may go away on another try. Unknown errors count as
 * transient: the attempt and time caps bound them anyway. Invalid arguments and a name
 * that does not resolve do not.
 */
export function isRetryableNetworkError(err: unknown): boolean {
  const code = errorCode(err);
  if (code === undefined) return true;
  if (RETRY_CODES.has(code)) return true;
  return !(code === 'ENOTFOUND' || code.startsWith('UND_ERR_INVALID') || code.startsWith('ERR_INVALID') ||
    code === 'UND_ERR_NOT_SUPPORTED' || code === 'UND_ERR_HEADERS_OVERFLOW');
}

export function isTimeoutError(err: unknown): boolean {
  const code = errorCode(err);
  return code !== undefined && TIMEOUT_CODES.has(code);
}

/** `Retry-After` as ms from `now`: delta seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** Exponential backoff with full jitter: uniform in `[0, base * 2^(attempt-1))`, capped. */
export function backoffMs(attempt: number, baseMs: number, capMs: number): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt - 1, 30));
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
