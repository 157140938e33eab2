import { cpus } from 'node:os';

/** CPU time of the whole machine so far, ms summed over its cores: idle, and all of it. */
export interface CpuTimes { idle: number; total: number }

/**
 * The machine's CPU times from `os.cpus()`: every process counts, nats-server too. Time
 * waiting for a disk (iowait) is in neither. In a container pinned to some of the host's CPUs
 * this is the host's idle time, which can wake a standby when its own CPUs are busy: it then
 * behaves like any other replica.
 */
export function machineCpuTimes(): CpuTimes {
  let idle = 0;
  let total = 0;
  for (const { times: t } of cpus()) {
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { idle, total };
}

/** What a standby pauses and resumes: a pausable WorkConsumer. */
export interface Pausable { pause(): void; resume(): void }

export interface StandbyOptions {
  /** The machine's cores, to turn idle shares into idle cores. */
  cores: number;
  /** 0 for the first replica beyond the cores, 1 for the next…: each needs more idle CPU to wake. @default 0 */
  rank?: number;
  /** @default machineCpuTimes */
  sample?: () => CpuTimes;
  /** Sampling period, ms. @default 250 */
  everyMs?: number;
  /** Resumes once `wakeIdleCores × (rank + 1)` cores were idle for this long, ms. @default 2_000 */
  wakeAfterMs?: number;
  /** Pauses again once fewer than `parkIdleCores` cores were idle for this long, ms. @default 1_000 */
  parkAfterMs?: number;
  /** @default 0.5 */
  wakeIdleCores?: number;
  /** @default 0.25 */
  parkIdleCores?: number;
  /** Longest wait to wake after a run of short wakes (see Standby), ms. @default 30_000 */
  maxWakeAfterMs?: number;
}

/**
 * A Generator replica beyond the machine's cores: it takes work only while the machine has
 * CPU to spare. CPU-bound `generate` calls on more threads than cores only take turns on the
 * same cores: each extra thread compiles the same code again and is preempted more, and the
 * stage ran 4–9% slower with 3 or 6 threads on 2 cores than with 2 (README, "What the floors
 * are made of"). A standby starts paused and resumes once at least half a core (a core for
 * the second standby, and so on) has been idle for 2 s: handlers that wait without using CPU,
 * or a slow source. It pauses again after 1 s with less than a quarter of a core idle, giving
 * back what it has not started (see WorkConsumer.pause). A standby that pauses within 10 s
 * of waking waits twice as long before it wakes again, up to 30 s, so one that can only find
 * idle CPU by leaving it does not come and go every few seconds; 30 s of work resets that.
 */
export class Standby {
  readonly #target: Pausable;
  readonly #opts: Required<StandbyOptions>;
  #timer: NodeJS.Timeout | undefined;
  #last: CpuTimes | undefined;
  #lastAt = 0;
  /** When the current condition (idle enough to wake, or busy enough to park) began, or undefined. */
  #since: number | undefined;
  #wakeAfterMs: number;
  #wokeAt = 0;
  active = false;
  /** Times it resumed its consumer. */
  wakes = 0;

  constructor(target: Pausable, options: StandbyOptions) {
    this.#target = target;
    this.#opts = {
      rank: 0, sample: machineCpuTimes, everyMs: 250, wakeAfterMs: 2_000, parkAfterMs: 1_000, wakeIdleCores: 0.5, parkIdleCores: 0.25, maxWakeAfterMs: 30_000,
      ...options,
    };
    this.#wakeAfterMs = this.#opts.wakeAfterMs;
  }

  /** Pauses the consumer and starts watching the machine. */
  start(now = performance.now()): void {
    this.#target.pause();
    this.active = false;
    this.#last = this.#opts.sample();
    this.#lastAt = now;
    this.#timer = setInterval(() => this.poll(performance.now()), this.#opts.everyMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Samples if a period has passed since the last sample. The Generator also calls it
   * between items: a synchronous `generate` keeps the timer from firing for a whole frame.
   */
  poll(now: number): void {
    if (now - this.#lastAt >= this.#opts.everyMs) this.tick(now);
  }

  /** One sample: decides from the idle cores since the last one. Public for tests. */
  tick(now: number): void {
    const cur = this.#opts.sample();
    const last = this.#last;
    const from = this.#lastAt;
    this.#last = cur;
    this.#lastAt = now;
    if (last === undefined || cur.total <= last.total) return;
    const idleCores = ((cur.idle - last.idle) / (cur.total - last.total)) * this.#opts.cores;
    const { wakeIdleCores, parkIdleCores, parkAfterMs, rank, maxWakeAfterMs } = this.#opts;
    const toward = this.active ? idleCores < parkIdleCores : idleCores >= wakeIdleCores * (rank + 1);
    if (!toward) {
      this.#since = undefined;
      return;
    }
    this.#since ??= from; // the condition held over the whole sample
    if (now - this.#since < (this.active ? parkAfterMs : this.#wakeAfterMs)) return;
    this.#since = undefined;
    this.active = !this.active;
    if (this.active) {
      this.wakes++;
      this.#wokeAt = now;
      this.#target.resume();
    } else {
      const stint = now - this.#wokeAt;
      if (stint < 10_000) this.#wakeAfterMs = Math.min(this.#wakeAfterMs * 2, maxWakeAfterMs);
      else if (stint >= 30_000) this.#wakeAfterMs = this.#opts.wakeAfterMs;
      this.#target.pause();
    }
  }
}
