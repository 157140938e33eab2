import type { Delivery } from '../messages/mod.ts';
import type { ReplicaEnv } from './env.ts';
import { nextStage, type Item } from './pipeline.ts';
import { StageActor } from './stage-actor.ts';
import { resolveBodies } from './bodies.ts';

/**
 * Derives content. Each replica is a worker thread, so CPU-bound `generate` handlers run in
 * parallel across replicas (the pool is the replica set, sized by `--replicas generate=N`);
 * async handlers overlap up to `maxInFlight` per replica. No lock is held while a handler
 * runs: outputs are published afterwards, and only the Writer touches storage.
 */
export class Generator extends StageActor {
  constructor(env: ReplicaEnv) {
    super(env);
  }

  protected handle(batch: Delivery[]): Promise<unknown[]> {
    const spec = this.env.def.generator!;
    return this.each(batch, async (d) => {
      const body = await resolveBodies(this.env, d.env.body);
      const out = await spec.generate({ key: d.env.key, body }, this.ctx) as Array<Item<unknown>>;
      await this.emit(nextStage(this.env.def, 'generator'), out ?? [], d);
    });
  }
}
