import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReplicaEnv } from './env.ts';
import { stageConfigs } from './env.ts';
import { Lifecycle } from './lifecycle.ts';
import { CHECKPOINT_KEY, nextStage, type Item, type ScanPage } from './pipeline.ts';
import { readContext, type ReadHandle } from './read.ts';
import type { ReplicaStats } from './stage-actor.ts';

/** Name under which the Scanner's cursor is checkpointed. */
export const SCANNER_CHECKPOINT = 'scanner';

/** How long a draining Scanner waits for the page it is publishing. */
const DRAIN_WAIT_MS = 10_000;
/** How long a starting Scanner waits for the Writer to settle what an earlier run queued. */
const RESUME_WAIT_MS = 60_000;

/**
 * Streams items from the pipeline's source page by page. Each item is published with
 * backpressure (a full downstream stage stops the Scanner from reading further), and after
 * each page its cursor is checkpointed through the Writer, so a restarted job resumes
 * without re-reading its source. A page with no items means "nothing now": the Scanner
 * finishes once the whole pipeline is idle and the source still has nothing.
 */
export class Scanner extends Lifecycle {
  readonly env: ReplicaEnv;
  readonly #abort = new AbortController();
  #read: ReadHandle | undefined;
  #loop: Promise<void> | undefined;
  #stop = false;
  published = 0;
  pages = 0;
  /** True once the source is exhausted (as opposed to stopped by a signal). */
  exhausted = false;

  constructor(env: ReplicaEnv) {
    super(env.replicaId);
    this.env = env;
  }

  protected async onStart(): Promise<void> {
    this.#read = await readContext(this.env, this.#abort.signal);
    this.#loop = this.#resume().then((cursor) => this.#run(cursor)).then(
      () => { if (!this.#stop) { this.exhausted = true; void this.drain(); } },
      (err) => void this.fail(err as Error));
  }

  /**
   * The cursor to resume from. Checkpoints travel through the write stage behind other
   * commands, so after an unclean stop newer ones may still be queued there; reading the
   * database before the Writer has applied them would read pages again whose items are
   * already queued (and queue them twice). So first wait, bounded, until the Writer has
   * settled every message queued before this start.
   */
  async #resume(): Promise<unknown> {
    const { jsm } = this.env.nats;
    const stream = this.env.producer.subjects.workStream('write');
    const before = (await jsm.streams.info(stream)).state.last_seq;
    const deadline = Date.now() + RESUME_WAIT_MS;
    for (;;) {
      const { state } = await jsm.streams.info(stream);
      if (state.messages === 0 || state.first_seq > before || this.#stop) break;
      if (Date.now() > deadline) {
        this.#read!.ctx.log('the write stage did not settle what an earlier run queued; resuming from the last committed checkpoint');
        break;
      }
      await sleep(100, undefined, { signal: this.#abort.signal }).catch(() => undefined);
    }
    const rows = await this.#read!.ctx.query<{ cursor: string }>(
      'select cursor from troupe_checkpoint where name = ?', [SCANNER_CHECKPOINT]).catch(() => []);
    const cursor = rows[0] ? JSON.parse(rows[0].cursor) : undefined;
    if (cursor !== undefined) this.#read!.ctx.log(`resuming from checkpoint ${JSON.stringify(cursor)}`);
    return cursor;
  }

  async #run(cursor: unknown): Promise<void> {
    const ctx = { ...this.#read!.ctx, cursor };
    const iter = this.env.def.scanner.scan(ctx)[Symbol.asyncIterator]();
    try {
      while (!this.#stop) {
        const r = await iter.next();
        if (r.done) return;
        if (r.value.items.length > 0) {
          await this.#publish(r.value);
          continue;
        }
        await this.#checkpoint(r.value);
        // Nothing now. Finished only if no stage holds work (which could make more) and the
        // source, asked once more after that, still has nothing.
        if (await this.#idle()) {
          const again = await iter.next();
          if (again.done) return;
          if (again.value.items.length === 0 && (await this.#idle())) return;
          await this.#publish(again.value);
        } else {
          await sleep(200, undefined, { signal: this.#abort.signal }).catch(() => undefined);
        }
      }
    } finally {
      await iter.return?.();
    }
  }

  async #publish(page: ScanPage<unknown>): Promise<void> {
    const stage = nextStage(this.env.def, 'scanner');
    await Promise.all(page.items.map((it: Item<unknown>) =>
      this.env.producer.publish(stage, it.key, it.body, { signal: this.#abort.signal })));
    this.published += page.items.length;
    this.pages++;
    await this.#checkpoint(page);
  }

  async #checkpoint(page: ScanPage<unknown>): Promise<void> {
    if (page.cursor === undefined) return;
    const json = JSON.stringify(page.cursor);
    const key = `${CHECKPOINT_KEY}${SCANNER_CHECKPOINT}/${createHash('sha1').update(json).digest('hex')}`;
    await this.env.producer.publish('write', key, { name: SCANNER_CHECKPOINT, cursor: page.cursor }, { signal: this.#abort.signal });
  }

  /** True when no work stage holds a message (queued or un-acked). */
  async #idle(): Promise<boolean> {
    for (const stage of stageConfigs(this.env.def).keys()) {
      // The consumer's counts, not the stream's (see Supervisor#views).
      const subjects = this.env.producer.subjects;
      const c = await this.env.nats.jsm.consumers.info(subjects.workStream(stage), subjects.consumer(stage));
      if (c.num_pending + c.num_ack_pending > 0) return false;
    }
    return true;
  }

  protected async onDrain(): Promise<void> {
    this.#stop = true;
    if (this.exhausted) return;
    // Stop reading the source, but first finish publishing the page in progress: its items
    // are partly queued already, and re-reading it next run would queue them a second time.
    // A page that cannot be finished in time is abandoned (the next run reads it again).
    const loop = this.#loop?.catch(() => undefined);
    await Promise.race([loop, sleep(DRAIN_WAIT_MS, undefined, { ref: false })]);
    this.#abort.abort();
    await loop;
  }

  protected async onClose(): Promise<void> {
    this.#stop = true;
    this.#abort.abort();
    await this.#read?.close();
  }

  stats(): ReplicaStats & { exhausted: boolean } {
    return { replica: this.env.replicaId, role: 'scanner', stage: 'scan', state: this.state, done: this.published,
      retried: 0, dead: 0, inFlight: this.env.producer.held, emitted: this.published, messages: 0, items: 0, exhausted: this.exhausted };
  }
}
