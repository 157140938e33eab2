import { availableParallelism } from 'node:os';
import type { Delivery } from '../messages/mod.ts';
import type { ReplicaEnv } from './env.ts';
import { nextStage, type Item, type PipelineDefinition } from './pipeline.ts';
import { StageActor, type ReplicaStats } from './stage-actor.ts';
import { resolveBodies } from './bodies.ts';
import { Standby, type StandbyOptions } from './standby.ts';

/**
 * The standby settings of Generator replica `index` of this process (see Standby): those
 * beyond the machine's cores stand by, unless the pipeline sets `roles.generator.standby:
 * false`; undefined for the others.
 */
export function standbyOf(def: PipelineDefinition, index: number, cores = availableParallelism()): StandbyOptions | undefined {
  return def.roles?.generator?.standby !== false && index >= cores ? { cores, rank: index - cores } : undefined;
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

  constructor(env: ReplicaEnv, options: { standby?: StandbyOptions | undefined } = {}) {
    super(env, options.standby ? { pausable: true } : {});
    this.standby = options.standby ? new Standby(this.consumer, options.standby) : undefined;
  }

  protected handle(batch: Delivery[]): Promise<unknown[]> {
    const spec = this.env.def.generator!;
    return this.each(batch, async (d) => {
      this.standby?.poll(performance.now());
      const body = await resolveBodies(this.env, d.env.body);
      const out = await spec.generate({ key: d.env.key, body }, this.ctx) as Array<Item<unknown>>;
      await this.emit(nextStage(this.env.def, 'generator'), out ?? [], d);
    });
  }

  protected override async onStart(): Promise<void> {
    if (this.standby) {
      this.standby.start(); // paused before the consumer's first pull
      this.ctx.log(`stands by: replicas beyond this machine's ${availableParallelism()} cores take work only while a core is idle (roles.generator.standby: false to change that)`);
    }
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
