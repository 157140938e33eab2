import { availableParallelism } from 'node:os';
import type { Delivery } from '../messages/mod.ts';
import type { ReplicaEnv } from './env.ts';
import { nextStage, type Item, type PipelineDefinition } from './pipeline.ts';
import { StageActor, type ReplicaStats } from './stage-actor.ts';
import { resolveBodies } from './bodies.ts';
import { Standby } from './standby.ts';

/**
 * Whether Generator replica `index` of this process stands by (see Standby): those beyond
 * the machine's cores do, unless the pipeline sets `roles.generator.standby: false`.
 */
export function isStandby(def: PipelineDefinition, index: number, cores = availableParallelism()): boolean {
  return def.roles?.generator?.standby !== false && index >= cores;
}

/**
 * Derives content. Each replica is a worker thread, so CPU-bound `generate` handlers run in
 * parallel across replicas (the pool is the replica set, sized by `--replicas generate=N`);
 * async handlers overlap up to `maxInFlight` per replica. No lock is held while a handler
 * runs: outputs are published afterwards, and only the Writer touches storage. Replicas
 * beyond the machine's cores take work only while it has CPU to spare (see Standby).
 */
export class Generator extends StageActor {
  readonly standby: Standby | undefined;

  constructor(env: ReplicaEnv, options: { standby?: boolean } = {}) {
    super(env, options.standby ? { pausable: true } : {});
    this.standby = options.standby ? new Standby(this.consumer, { cores: availableParallelism() }) : undefined;
  }

  protected handle(batch: Delivery[]): Promise<unknown[]> {
    const spec = this.env.def.generator!;
    return this.each(batch, async (d) => {
      const body = await resolveBodies(this.env, d.env.body);
      const out = await spec.generate({ key: d.env.key, body }, this.ctx) as Array<Item<unknown>>;
      await this.emit(nextStage(this.env.def, 'generator'), out ?? [], d);
    });
  }

  protected override async onStart(): Promise<void> {
    this.standby?.start(); // paused before the consumer's first pull
    await super.onStart();
  }

  protected override async onDrain(): Promise<void> {
    this.standby?.stop();
    await super.onDrain();
  }

  protected override async onClose(): Promise<void> {
    this.standby?.stop();
    await super.onClose();
  }

  override stats(): ReplicaStats {
    const s = super.stats();
    return this.standby ? { ...s, standby: this.standby.active ? 'active' : 'parked' } : s;
  }
}
