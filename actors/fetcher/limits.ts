/** Waits `ms`; rejects with the signal's own reason when it aborts first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Counts permits; `acquire` waits in FIFO order until one is free. */
export class Semaphore {
  readonly size: number;
  #used = 0;
  readonly #waiters: Array<() => void> = [];

  constructor(size: number) {
    this.size = size;
  }

  get inUse(): number {
    return this.#used;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  /** Resolves once a permit is held; rejects with the signal's reason if aborted first. */
  acquire(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.#used < this.size) {
      this.#used++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(grant);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(grant);
    });
  }

  release(): void {
    const next = this.#waiters.shift();
    // The permit passes straight to the next waiter, so `used` stays the same.
    if (next) next();
    else this.#used--;
  }
}

/** Timers fire a millisecond or more apart: the bucket keeps at least this long's tokens. */
const TIMER_SLACK_MS = 4;

function storeOf(perSecond: number, burst: number): number {
  return Math.max(burst, Math.ceil((perSecond * TIMER_SLACK_MS) / 1000));
}

/**
 * The one-second window, with 50 ms to spare for requests that reach the server late: the
 * server counts a request when its handler runs, so an event-loop stall on either side
 * bunches requests sent apart. With 10 ms to spare, the 48k-job benchmark (2,000/s, on two
 * cores shared with the Writer's threads and nats-server) once saw 2,008 in one second and
 * 11 answers of 429. The spare costs at most 5% of a limit's rate.
 */
export const WINDOW_MS = 1_050;

/**
 * A token bucket: `perSecond` tokens a second, at most `burst` stored, and never more than
 * `max(perSecond, burst)` tokens taken in any sliding one-second window (what an API's
 * "N requests per second" means). Callers wait in FIFO order; a token is taken only when it
 * is really there (checked against the clock when the waiter wakes, as Node timers may fire
 * early or, after a stall, many at once).
 *
 * The bucket stores at least `perSecond × 4 ms` tokens whatever `burst` says: a timer fires
 * at most about once a millisecond, and with a smaller store the tokens that arrive between
 * two timers would be lost (at 2,000/s with burst 1, the rate would top out near 800/s).
 * Waiting only slows the caller; it fails only when the caller's signal aborts.
 */
export class TokenBucket {
  #perSecond: number;
  #burst: number;
  #store: number;
  #tokens: number;
  #at = performance.now();
  readonly #queue: Array<{ grant(): void }> = [];
  #timer: NodeJS.Timeout | undefined;
  /**
   * When the last `#window.length` tokens were taken (a ring), for the one-second cap. It is
   * sized for the rate given at construction; {@link setRate} may only lower the rate below
   * that, so the cap always fits.
   */
  readonly #window: Float64Array;
  #cap: number;
  #next = 0;

  constructor(perSecond: number, burst: number) {
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#store = storeOf(perSecond, burst);
    this.#tokens = burst;
    // Bounded: above 100,000/s the one-second cap is left to the bucket alone.
    const cap = Math.max(Math.floor(perSecond), burst);
    this.#window = new Float64Array(Number.isFinite(cap) && cap <= 100_000 ? cap : 0).fill(-Infinity);
    this.#cap = this.#window.length;
  }

  get perSecond(): number {
    return this.#perSecond;
  }

  get burst(): number {
    return this.#burst;
  }

  /**
   * Changes the rate, at most to the one the bucket was made with (a share of a limit that
   * replicas on several machines divide among them). Lowering it takes effect for the next
   * token: the tokens already taken in the last second count against the lower cap, so the
   * one-second window never holds more than the new `max(perSecond, burst)` from then on.
   */
  setRate(perSecond: number, burst: number): void {
    if (!(perSecond > 0) || !(burst >= 1)) throw new RangeError(`TokenBucket.setRate: bad rate ${perSecond}/s, burst ${burst}`);
    const cap = Math.max(Math.floor(perSecond), burst);
    if (this.#window.length > 0 && cap > this.#window.length) throw new RangeError(`TokenBucket.setRate: ${perSecond}/s is above the rate the bucket was made with`);
    this.#waitMs(); // bring the tokens up to now at the old rate
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#store = storeOf(perSecond, burst);
    this.#tokens = Math.min(this.#tokens, this.#store);
    if (this.#window.length > 0) this.#cap = cap;
    // Waiters may go sooner (or later): time them again.
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pump();
  }

  /** Callers waiting for a token. */
  get waiting(): number {
    return this.#queue.length;
  }

  take(signal?: AbortSignal): Promise<void> {
    if (this.#perSecond === Infinity) return Promise.resolve();
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#queue.length === 0 && this.#waitMs() === 0) {
      this.#use();
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        grant: (): void => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
        if (this.#queue.length === 0 && this.#timer !== undefined) {
          clearTimeout(this.#timer);
          this.#timer = undefined;
        }
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#queue.length === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#pump();
    }, Math.max(1, Math.ceil(this.#waitMs())));
  }

  #pump(): void {
    while (this.#queue.length > 0 && this.#waitMs() === 0) {
      this.#use();
      this.#queue.shift()!.grant();
    }
    this.#schedule();
  }

  /** How long until a token may be taken: 0 when one may be taken now. */
  #waitMs(): number {
    const now = performance.now();
    this.#tokens = Math.min(this.#store, this.#tokens + ((now - this.#at) / 1000) * this.#perSecond);
    this.#at = now;
    const bucket = this.#tokens >= 1 ? 0 : ((1 - this.#tokens) / this.#perSecond) * 1000;
    // The token taken `cap` tokens ago must be a full second old.
    const size = this.#window.length;
    const window = size > 0 ? Math.max(0, this.#window[(this.#next - this.#cap + size) % size]! + WINDOW_MS - now) : 0;
    return Math.max(bucket, window);
  }

  #use(): void {
    this.#tokens -= 1;
    if (this.#window.length === 0) return;
    this.#window[this.#next] = performance.now();
    this.#next = (this.#next + 1) % this.#window.length;
  }
}
