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

/**
 * A token bucket: `perSecond` tokens a second, at most `burst` stored. Callers wait in FIFO
 * order; a token is taken only when it is really there (checked against the clock when the
 * waiter wakes, as Node timers may fire early or, after a stall, many at once), so the
 * tokens taken in any window of `t` seconds never exceed `burst + perSecond * t`.
 * Waiting only slows the caller; it fails only when the caller's signal aborts.
 */
export class TokenBucket {
  readonly perSecond: number;
  readonly burst: number;
  #tokens: number;
  #at = performance.now();
  readonly #queue: Array<{ grant(): void }> = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(perSecond: number, burst: number) {
    this.perSecond = perSecond;
    this.burst = burst;
    this.#tokens = burst;
  }

  /** Callers waiting for a token. */
  get waiting(): number {
    return this.#queue.length;
  }

  take(signal?: AbortSignal): Promise<void> {
    if (this.perSecond === Infinity) return Promise.resolve();
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#queue.length === 0 && this.#refill() >= 1) {
      this.#tokens -= 1;
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
    const ms = Math.max(1, Math.ceil(((1 - this.#refill()) / this.perSecond) * 1000));
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#pump();
    }, ms);
  }

  #pump(): void {
    while (this.#queue.length > 0 && this.#refill() >= 1) {
      this.#tokens -= 1;
      this.#queue.shift()!.grant();
    }
    this.#schedule();
  }

  #refill(): number {
    const now = performance.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#at) / 1000) * this.perSecond);
    this.#at = now;
    return this.#tokens;
  }
}
