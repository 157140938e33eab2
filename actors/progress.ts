import cliProgress from 'cli-progress';

/** What the progress display shows for one stage. */
export interface StageView {
  stage: string;
  done: number;
  retried: number;
  dead: number;
  /** Items in flight and queued: estimated from messages × the items per message replicas saw. */
  inFlight: number;
  queued: number;
  /** Messages queued or un-acked, exactly (0 only when the stage holds nothing). */
  messages: number;
  /** Replicas that sent a heartbeat recently. */
  replicas: number;
}

/** Items a message carries on average (a frame carries several); 1 before any was seen. */
export function itemsPerMessage(messages: number, items: number): number {
  return messages > 0 && items > 0 ? items / messages : 1;
}

/** Items/s over the last few seconds and the ETA of what is queued. */
function rateOf(samples: Array<[number, number]>): number {
  if (samples.length < 2) return 0;
  const [t0, d0] = samples[0]!;
  const [t1, d1] = samples[samples.length - 1]!;
  return t1 > t0 ? ((d1 - d0) * 1000) / (t1 - t0) : 0;
}

function eta(remaining: number, rate: number): string {
  if (remaining === 0) return '0s';
  if (rate <= 0) return '?';
  const s = Math.round(remaining / rate);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m` : s >= 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s}s`;
}

/**
 * Live per-stage progress: bars on a TTY, a plain line every `plainEveryMs` otherwise (CI logs).
 */
export class Progress {
  readonly #mode: 'tty' | 'plain' | 'none';
  readonly #pipeline: string;
  readonly #samples = new Map<string, Array<[number, number]>>();
  readonly #bars = new Map<string, cliProgress.SingleBar>();
  #multi: cliProgress.MultiBar | undefined;
  #lastPlain = 0;
  readonly #plainEveryMs: number;

  constructor(pipeline: string, mode: 'auto' | 'tty' | 'plain' | 'none', plainEveryMs = Number(process.env.TROUPE_PROGRESS_MS ?? 5_000)) {
    this.#pipeline = pipeline;
    this.#mode = mode === 'auto' ? (process.stderr.isTTY ? 'tty' : 'plain') : mode;
    this.#plainEveryMs = plainEveryMs;
    if (this.#mode === 'tty') {
      this.#multi = new cliProgress.MultiBar({
        stream: process.stderr, hideCursor: true, clearOnComplete: false, autopadding: true,
        format: ' {stage} |{bar}| {value}/{total} done · {inFlight} in flight · {queued} queued · {failed} failed · {rate}/s · ETA {eta} · {replicas} repl.',
      }, cliProgress.Presets.shades_classic);
    }
  }

  update(views: StageView[]): void {
    const now = Date.now();
    const lines: string[] = [];
    for (const v of views) {
      const samples = this.#samples.get(v.stage) ?? [];
      samples.push([now, v.done]);
      while (samples.length > 1 && now - samples[0]![0] > 5_000) samples.shift();
      this.#samples.set(v.stage, samples);
      const rate = rateOf(samples);
      const payload = { stage: v.stage.padEnd(8), inFlight: v.inFlight, queued: v.queued, failed: v.retried + v.dead, rate: rate.toFixed(0), eta: eta(v.queued + v.inFlight, rate), replicas: v.replicas };
      if (this.#multi) {
        const total = Math.max(1, v.done + v.queued + v.inFlight);
        const bar = this.#bars.get(v.stage) ?? this.#multi.create(total, 0, payload);
        this.#bars.set(v.stage, bar);
        bar.setTotal(total);
        bar.update(v.done, payload);
      } else {
        lines.push(`${v.stage} ${v.done} done, ${v.inFlight} in flight, ${v.queued} queued, ${v.retried} retried, ${v.dead} dead, ${rate.toFixed(0)}/s, ETA ${payload.eta}`);
      }
    }
    if (this.#mode === 'plain' && now - this.#lastPlain >= this.#plainEveryMs) {
      this.#lastPlain = now;
      console.error(`[${new Date(now).toISOString()}] ${this.#pipeline}: ${lines.join(' | ')}`);
    }
  }

  stop(): void {
    this.#multi?.stop();
  }
}
