/**
 * Typed errors with stable codes. Errors cross the wire as `{code, message, retryable}`
 * (see {@link toWire}) and are rebuilt with {@link fromWire} on the other side.
 */

export const codes = {
  BAD_MESSAGE: 'TROUPE_BAD_MESSAGE',
  BAD_SHAPE: 'TROUPE_BAD_SHAPE',
  BAD_VERSION: 'TROUPE_BAD_VERSION',
  TOO_LARGE: 'TROUPE_TOO_LARGE',
  STREAM_FULL: 'TROUPE_STREAM_FULL',
  BAD_OPTION: 'TROUPE_BAD_OPTION',
  BAD_NAME: 'TROUPE_BAD_NAME',
  PERMANENT: 'TROUPE_PERMANENT',
  RETRYABLE: 'TROUPE_RETRYABLE',
  TIMEOUT: 'TROUPE_TIMEOUT',
  HTTP: 'TROUPE_HTTP',
  LEASE_HELD: 'TROUPE_LEASE_HELD',
  LEASE_LOST: 'TROUPE_LEASE_LOST',
  PATH_ESCAPE: 'TROUPE_PATH_ESCAPE',
  NO_NATS_SERVER: 'TROUPE_NO_NATS_SERVER',
  CLOSED: 'TROUPE_CLOSED',
  ESCALATED: 'TROUPE_ESCALATED',
  HANDLER: 'TROUPE_HANDLER',
} as const;

export type ErrorCode = (typeof codes)[keyof typeof codes];

export interface TroupeErrorOptions extends ErrorOptions {
  /** Whether trying the same work again may succeed. @default false */
  retryable?: boolean;
}

/** Base class of every error troupe raises on purpose. */
export class TroupeError extends Error {
  override name = 'TroupeError';
  readonly code: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, options: TroupeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** A failure that no retry can fix (validation, 4xx, a path outside the sandbox). */
export class PermanentError extends TroupeError {
  override name = 'PermanentError';
  constructor(message: string, options: ErrorOptions & { code?: string } = {}) {
    super(options.code ?? codes.PERMANENT, message, { ...options, retryable: false });
  }
}

/** A failure worth retrying later (a timeout, a 503, a full downstream stage). */
export class RetryableError extends TroupeError {
  override name = 'RetryableError';
  /** Server-suggested delay before the next attempt, in ms (e.g. from Retry-After). */
  readonly retryAfterMs: number | undefined;
  constructor(message: string, options: ErrorOptions & { code?: string; retryAfterMs?: number } = {}) {
    super(options.code ?? codes.RETRYABLE, message, { ...options, retryable: true });
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** What an error looks like on the wire. */
export interface WireError {
  code: string;
  message: string;
  retryable: boolean;
}

/**
 * Whether an error is worth retrying. Troupe errors say so themselves; any other error
 * thrown by a handler is treated as retryable (it may be a transient bug or outage) and is
 * bounded by the stage's max deliveries.
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof TroupeError) return err.retryable;
  if (isWireError(err)) return err.retryable;
  return true;
}

export function toWire(err: unknown): WireError {
  if (err instanceof TroupeError) return { code: err.code, message: err.message, retryable: err.retryable };
  if (err instanceof Error) return { code: codes.HANDLER, message: `${err.name}: ${err.message}`, retryable: true };
  return { code: codes.HANDLER, message: String(err), retryable: true };
}

export function fromWire(w: WireError): TroupeError {
  return new TroupeError(w.code, w.message, { retryable: w.retryable });
}

function isWireError(v: unknown): v is WireError {
  return typeof v === 'object' && v !== null && typeof (v as WireError).code === 'string' &&
    typeof (v as WireError).retryable === 'boolean';
}
