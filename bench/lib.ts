// Shared by the runner and the contenders: the benchmark item, percentiles, the one-line
// JSON result protocol, /proc readings and a bounded async queue.
import { readFileSync, readdirSync } from 'node:fs';
import { encode } from '../messages/codec.ts';

/** Every contender of a scenario gets its arguments as one JSON argv entry. */
export function args<T>(): T {
  const raw = process.argv[2];
  return (raw ? JSON.parse(raw) : {}) as T;
}

/** Prints the contender's result: the runner reads the last stdout line that parses as JSON. */
export function report(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** Size of the scenario-1 item, encoded. */
export const ITEM_BYTES = 128;

export interface BenchItem {
  id: number;
  /** performance.now() when the source made it (every stage runs in one process). */
  t: number;
  pad: string;
}

/**
 * The scenario-1 item: a plain msgpack map of exactly {@link ITEM_BYTES} bytes, padded to
 * that size whatever the id.
 */
export function makeItem(id: number, t = performance.now()): Uint8Array {
  const item: BenchItem = { id, t: t + 1e-9, pad: '' };
  // The pad is 32-255 characters long, so its string header is 2 bytes (str8) instead of 1.
  item.pad = 'x'.repeat(ITEM_BYTES - encode(item).byteLength - 1);
  const bytes = encode(item);
  if (bytes.byteLength !== ITEM_BYTES) throw new Error(`bench item is ${bytes.byteLength} bytes, expected ${ITEM_BYTES}`);
  return bytes;
}

/** Latency percentiles, ms, of an unsorted sample. */
export function percentiles(samples: number[]): { p50: number; p99: number; max: number } {
  const s = Float64Array.from(samples).sort();
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
  return { p50: round(at(0.5)), p99: round(at(0.99)), max: round(s[s.length - 1] ?? NaN) };
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** VmRSS of a process in bytes, from /proc (undefined once it is gone). */
export function rssOf(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used so far, µs, from /proc (undefined once it is gone). */
export function cpuOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * (1e6 / 100);
  } catch {
    return undefined;
  }
}

/** The pid of the nats-server listening on `port` (its command line names the port). */
export function natsServerPid(port: number): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('nats-server') && argv.includes(String(port))) return Number(entry);
    } catch { /* exited meanwhile */ }
  }
  return undefined;
}

/** Latencies a Completion keeps: a uniform sample beyond this many, so that scenario 5 measures troupe's memory, not a list growing by 8 bytes per item. */
const LATENCY_SAMPLE = 100_000;

/** Resolves once `n` calls of `done()` happened; counts and times completions. */
export class Completion {
  readonly total: number;
  count = 0;
  /** Every latency up to 100,000 completions, then a uniform sample of that many (reservoir sampling). */
  readonly latencies: number[] = [];
  #resolve!: () => void;
  readonly finished: Promise<void> = new Promise((r) => { this.#resolve = r; });
  #waiters: Array<() => void> = [];

  constructor(total: number) {
    this.total = total;
  }

  done(startedAt: number): void {
    const latency = performance.now() - startedAt;
    this.count++;
    if (this.latencies.length < LATENCY_SAMPLE) this.latencies.push(latency);
    else {
      const i = Math.floor(Math.random() * this.count);
      if (i < LATENCY_SAMPLE) this.latencies[i] = latency;
    }
    this.#waiters.shift()?.();
    if (this.count === this.total) this.#resolve();
  }

  /** Waits until fewer than `window` items are outstanding, given `sent` sent so far. */
  async room(sent: number, window: number): Promise<void> {
    while (sent - this.count >= window) await new Promise<void>((r) => this.#waiters.push(r));
  }
}

/** A bounded FIFO channel: `push` waits while full, `pull` waits while empty. */
export class BoundedQueue<T> {
  readonly capacity: number;
  readonly #items: T[] = [];
  #head = 0;
  readonly #takers: Array<(v: T) => void> = [];
  readonly #givers: Array<() => void> = [];

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get size(): number {
    return this.#items.length - this.#head;
  }

  async push(v: T): Promise<void> {
    while (this.size >= this.capacity) await new Promise<void>((r) => this.#givers.push(r));
    const taker = this.#takers.shift();
    if (taker) taker(v);
    else this.#items.push(v);
  }

  async pull(): Promise<T> {
    if (this.size > 0) {
      const v = this.#items[this.#head++]!;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items.splice(0, this.#head);
        this.#head = 0;
      }
      this.#givers.shift()?.();
      return v;
    }
    return new Promise<T>((r) => this.#takers.push(r));
  }
}

/** Calls `gc` (run with --expose-gc) a few times and returns the heap in use afterwards. */
export async function postGcHeap(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage().heapUsed;
}
