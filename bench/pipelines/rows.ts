// Scenario 4's pipeline: only its Writer runs (the benchmark preloads the `write` stage);
// each command is one `{ key, title, body ~200 bytes }` row upserted with upsertRows.
import { defineEntity, p } from '@mikro-orm/core';
import { definePipeline } from '../../actors/mod.ts';
import { upsertRows } from '../../storage/mod.ts';

export const BenchNote = defineEntity({
  name: 'BenchNote', tableName: 'bench_note',
  properties: { key: p.string().primary(), title: p.string(), body: p.text() },
});

interface Row { key: string; title: string; body: string }

export default definePipeline<Row, Row>({
  name: 'benchrows',
  scanner: { async *scan() { /* the benchmark fills the write stage itself */ } },
  writer: {
    entities: [BenchNote],
    async apply(batch, tx) {
      await upsertRows(tx.em, BenchNote, batch.map((b) => b.body));
    },
  },
  // The stage must hold the whole preload; batches of 1,000 like the ceiling's transactions.
  roles: { writer: { maxMessages: 250_000, maxInFlight: 2_000, batchSize: 1_000 } },
});
