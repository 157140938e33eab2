import type { Delivery } from '../messages/mod.ts';
import type { ReplicaEnv } from './env.ts';
import type { Item, ReadContext } from './pipeline.ts';
import { readContext, type ReadHandle } from './read.ts';
import { StageActor } from './stage-actor.ts';

/** Key of the message that asks the Exporter to run `finish` once the job has no work left. */
export const FINISH_KEY = '__troupe_finish__';

/**
 * Pushes results outward. Handles items the Writer emitted to `export`, and runs `finish`
 * when the supervisor sends the finish message; files it makes go back through the Writer.
 */
export class Exporter extends StageActor {
  #read: ReadHandle | undefined;

  constructor(env: ReplicaEnv) {
    super(env);
  }

  async #ctx(): Promise<ReadContext> {
    this.#read ??= await readContext(this.env, this.abort.signal);
    return this.#read.ctx;
  }

  protected handle(batch: Delivery[]): Promise<unknown[]> {
    const spec = this.env.def.exporter!;
    return this.each(batch, async (d) => {
      const ctx = await this.#ctx();
      if (d.env.key.startsWith(FINISH_KEY)) {
        if (!spec.finish) return;
        let page: Array<Item<unknown>> = [];
        for await (const item of spec.finish(ctx)) {
          page.push(item as Item<unknown>);
          if (page.length >= 100) {
            await this.emit('write', page, d);
            page = [];
          }
        }
        await this.emit('write', page, d);
        return;
      }
      if (!spec.export) return;
      const out = await spec.export({ key: d.env.key, body: d.env.body }, ctx);
      await this.emit('write', out as Array<Item<unknown>>, d);
    });
  }

  protected override async onClose(): Promise<void> {
    await super.onClose();
    await this.#read?.close();
  }
}
