import { codes, encode, TroupeError, type Delivery } from '../messages/mod.ts';
import { appliedIds, FileSandbox, KeyFilter, loadLedgerKeys, openStore, recordLedger, saveCheckpoint, WriterLease, type Store } from '../storage/mod.ts';
import { dbPath, type ReplicaEnv } from './env.ts';
import { CHECKPOINT_KEY, type Item, type Stage, type WriteTx } from './pipeline.ts';

export { CHECKPOINT_KEY };
import { StageActor } from './stage-actor.ts';


/**
 * The only mutator. Applies write commands in batches bounded by count and time, each batch
 * in one SQLite transaction together with the item ledger (and any checkpoint), writes files
 * atomically inside the output folder, acks after commit, then publishes follow-ups and a
 * `written` event. Holds the pipeline's Writer lease; stops committing if it is lost.
 */
export class Writer extends StageActor {
  #store: Store | undefined;
  #lease: WriterLease | undefined;
  /** Keys the ledger holds at the write stage: a batch of new keys skips the replay lookup. */
  readonly #written = new KeyFilter();
  readonly sandbox: FileSandbox;
  /**
   * `written` events of the transactions committed in the current batch, published right
   * after its acks in the same socket write (one write per batch instead of two; each write
   * wakes nats-server on the same cores). At most one per transaction of a batch.
   */
  readonly #announcements: Array<{ count: number; keys: string[] }> = [];

  constructor(env: ReplicaEnv) {
    const o = env.def.roles?.writer ?? {};
    super(env, { batchSize: o.batchSize ?? 500, batchWaitMs: o.batchWaitMs ?? 20 });
    this.sandbox = new FileSandbox(env.out);
    this.consumer.onSettled(() => this.#announce());
  }

  /** Epoch (fencing token) of the lease this Writer holds. */
  get epoch(): number {
    return this.#lease?.epoch ?? 0;
  }

  protected override async onStart(): Promise<void> {
    this.#lease = await WriterLease.acquire(this.env.nats.nc, this.env.def.name, {});
    this.#lease.onLost((err) => void this.fail(err));
    const cleaned = await this.sandbox.cleanTemp();
    if (cleaned > 0) this.ctx.log(`removed ${cleaned} temp file(s) left by an interrupted write`);
    this.#store = await openStore({ dbPath: dbPath(this.env.out, this.env.def.name), entities: this.env.def.writer.entities, backgroundCheckpoint: true });
    await loadLedgerKeys(this.#store, 'write', this.#written);
    await super.onStart();
  }

  protected async handle(batch: Delivery[]): Promise<unknown[]> {
    try {
      await this.#apply(batch);
      return batch.map(() => undefined);
    } catch (err) {
      if (isLeaseLost(err)) return this.#lost(err);
      if (batch.length === 1) return [err];
      // One bad command must not sink the batch: apply each alone to find it.
      const results: unknown[] = [];
      for (const d of batch) {
        try {
          await this.#apply([d]);
          results.push(undefined);
        } catch (e) {
          if (isLeaseLost(e)) return this.#lost(e);
          results.push(e);
        }
      }
      return results;
    }
  }

  /** Stops committing: the consumer is closed, so nothing of the batch is acked. */
  async #lost(err: unknown): Promise<never> {
    void this.fail(err as Error);
    throw err;
  }

  async #apply(batch: Delivery[]): Promise<void> {
    const lease = this.#lease!;
    lease.assertHeld();
    const checkpoints: Array<{ name: string; cursor: unknown }> = [];
    let fresh: Delivery[] = [];
    for (const d of batch) {
      if (d.env.key.startsWith(CHECKPOINT_KEY)) checkpoints.push(d.env.body as { name: string; cursor: unknown });
      else fresh.push(d);
    }
    const commands: Array<Item<unknown>> = [];
    const emits: Array<{ stage: Stage; item: Item<unknown> }> = [];
    await this.#store!.transaction(async (em) => {
      // A message whose id the ledger already holds for its key was applied before (committed
      // but not acked before a crash, or published again by a replayed or resumed upstream
      // after the server's duplicate window): acked, not applied again.
      const applied = await appliedIds(em, 'write', fresh.map((d) => d.env), this.#written);
      if (applied.size > 0) fresh = fresh.filter((d) => !applied.has(d.env.id));
      for (const d of fresh) commands.push({ key: d.env.key, body: d.env.body });
      const tx: WriteTx = {
        ...this.ctx, em,
        files: {
          write: (path, content) => this.sandbox.writeAtomic(path, content),
          remove: (path) => this.sandbox.remove(path),
        },
        emit: (stage, key, body) => { emits.push({ stage, item: { key, body } }); },
      };
      if (commands.length > 0) await this.env.def.writer.apply(commands, tx);
      for (const c of checkpoints) await saveCheckpoint(em, c.name, c.cursor);
      await recordLedger(em, fresh.map((d) => ({ key: d.env.key, stage: 'write', status: 'done', attempts: d.attempt, lastId: d.env.id })));
      // Before the commit: a key added for a transaction that then rolls back costs one lookup later, never a wrong answer.
      for (const d of fresh) this.#written.add(d.env.key);
      lease.assertHeld(); // fencing: never commit after the lease is gone
    });
    const byStage = new Map<Stage, Array<Item<unknown>>>();
    for (const e of emits) byStage.set(e.stage, [...(byStage.get(e.stage) ?? []), e.item]);
    for (const [stage, items] of byStage) await this.emit(stage, items);
    if (commands.length > 0) this.#announcements.push({ count: commands.length, keys: commands.slice(0, 50).map((c) => c.key) });
  }

  /** Publishes a `written` event for each transaction of the batch just acked (see onSettled). */
  #announce(): void {
    const done = this.#announcements.splice(0);
    if (this.env.nats.nc.isClosed()) return;
    const subject = this.consumer.subjects.events('write', 'written');
    for (const w of done) this.env.nats.nc.publish(subject, encode({ replica: this.env.replicaId, epoch: this.epoch, ...w }));
  }

  protected override async onClose(): Promise<void> {
    await super.onClose();
    await this.#store?.close();
    this.#store = undefined;
    await this.#lease?.release();
  }
}

function isLeaseLost(err: unknown): boolean {
  // Callers fail the Writer at once; its consumer then leaves the batch un-acked.
  return err instanceof TroupeError && err.code === codes.LEASE_LOST;
}
