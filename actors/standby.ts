import { cpus } from 'node:os';

/** CPU time of the whole machine so far, ms summed over its cores: idle, and all of it. */
export interface CpuTimes { idle: number; total: number }

/** The machine's CPU times from `os.cpus()`: every process counts, nats-server too. */
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
  /** @default machineCpuTimes */
  sample?: () => CpuTimes;
  /** Sampling period, ms. @default 250 */
  everyMs?: number;
  /** Resumes once at least `wakeIdleCores` cores were idle for this long, ms. @default 2_000 */
  wakeAfterMs?: number;
  /** Pauses again once fewer than `parkIdleCores` cores were idle for this long, ms. @default 1_000 */
  parkAfterMs?: number;
  /** @default 0.5 */
  wakeIdleCores?: number;
  /** @default 0.25 */
  parkIdleCores?: number;
}

/**
 * A Generator replica beyond the machine's cores: it takes work only while the machine has
 * CPU to spare. CPU-bound `generate` calls on more threads than cores only take turns on the
 * same cores: each extra thread compiles the same code again and is preempted more, and the
 * stage went 4–9% slower with 3 or 6 threads on 2 cores than with 2 (README, "What the floors
 * are made of"). A standby starts paused and resumes when at least half a core has been idle
 * for 2 s (handlers that wait without using CPU: a synchronous child process, a remote call
 * made synchronously, a slow source); it pauses again after 1 s without a quarter of a core
 * idle. Pausing lets it finish what it holds; no pull request stays open (see
 * ConsumerOptions.pausable), so nothing waits in a paused replica.
 */
export class Standby {
  readonly #target: Pausable;
  readonly #opts: Required<StandbyOptions>;
  #timer: NodeJS.Timeout | undefined;
  #last: CpuTimes | undefined;
  /** When the current condition (idle enough to wake, or busy enough to park) began, or undefined. */
  #since: number | undefined;
  active = false;
  /** Times it resumed its consumer. */
  wakes = 0;

  constructor(target: Pausable, options: StandbyOptions) {
    this.#target = target;
    this.#opts = { sample: machineCpuTimes, everyMs: 250, wakeAfterMs: 2_000, parkAfterMs: 1_000, wakeIdleCores: 0.5, parkIdleCores: 0.25, ...options };
  }

  /** Pauses the consumer and starts watching the machine. */
  start(): void {
    this.#target.pause();
    this.active = false;
    this.#last = this.#opts.sample();
    this.#timer = setInterval(() => this.tick(performance.now()), this.#opts.everyMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One sample: decides from the idle cores since the last one. Public for tests. */
  tick(now: number): void {
    const cur = this.#opts.sample();
    const last = this.#last;
    this.#last = cur;
    if (last === undefined || cur.total <= last.total) return;
    const idleCores = ((cur.idle - last.idle) / (cur.total - last.total)) * this.#opts.cores;
    const { wakeIdleCores, parkIdleCores, wakeAfterMs, parkAfterMs } = this.#opts;
    const toward = this.active ? idleCores < parkIdleCores : idleCores >= wakeIdleCores;
    if (!toward) {
      this.#since = undefined;
      return;
    }
    this.#since ??= now;
    if (now - this.#since < (this.active ? parkAfterMs : wakeAfterMs)) return;
    this.#since = undefined;
    this.active = !this.active;
    if (this.active) {
      this.wakes++;
      this.#target.resume();
    } else {
      this.#target.pause();
    }
  }
}
