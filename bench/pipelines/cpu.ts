// Scenario 3's pipeline: the Scanner pages through `count` numbers, the Generator burns a
// fixed CPU task per item (`iters` rounds of an integer hash, ~2 ms, calibrated by the runner), the
// Writer upserts one row per item. No Fetcher.
import { createHash } from 'node:crypto';
import { defineEntity, p } from '@mikro-orm/core';
import { definePipeline } from '../../actors/mod.ts';
import { upsertRows } from '../../storage/mod.ts';

export const CpuRow = defineEntity({ name: 'CpuRow', properties: { key: p.string().primary(), digest: p.string() } });

/**
 * The fixed CPU task: `iters` rounds of an FNV-1a-style integer hash over 1,024 words, then a
 * SHA-256 of the result. Pure computation without allocation, so it measures threads, not GC.
 */
export function burn(seed: string, iters: number): string {
  let h = 2166136261;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 16777619);
  for (let r = 0; r < iters; r++) {
    for (let w = 0; w < 1024; w++) h = Math.imul(h ^ (w + r), 16777619) >>> 0;
  }
  return createHash('sha256').update(String(h)).digest('hex').slice(0, 32);
}

interface Num { n: number }
interface Row { key: string; digest: string }

export default definePipeline<Num, Row>({
  name: 'benchcpu',
  params: {
    count: { description: 'items', default: '2000' },
    iters: { description: 'hash rounds per item (1,024 words each)', default: '1000' },
  },
  scanner: {
    async *scan(ctx) {
      const count = Number(ctx.params.count);
      for (let next = 0; next < count; next += 500) {
        const items = [];
        for (let i = next; i < Math.min(count, next + 500); i++) items.push({ key: `n${i}`, body: { n: i } });
        yield { items };
      }
    },
  },
  generator: {
    generate(input, ctx) {
      return [{ key: input.key, body: { key: input.key, digest: burn(input.key, Number(ctx.params.iters)) } }];
    },
  },
  writer: {
    entities: [CpuRow],
    async apply(batch, tx) {
      await upsertRows(tx.em, CpuRow, batch.map((b) => b.body));
    },
  },
  roles: { generator: { maxInFlight: 4 } },
});
