// Scenario 6's pipeline: `count` item ids → Fetcher (GET <api>/items/<id>, at most 2,000
// requests/s to the host) → Generator (parses the JSON into a row) → Writer (upserts rows).
import { defineEntity, p } from '@mikro-orm/core';
import { definePipeline } from '../../actors/mod.ts';
import { upsertRows } from '../../storage/mod.ts';

export const ApiItem = defineEntity({
  name: 'ApiItem', tableName: 'api_item',
  properties: { id: p.string().primary(), name: p.string(), value: p.integer(), tags: p.json<string[]>() },
});

interface Id { id: string }
interface Row { id: string; name: string; value: number; tags: string[] }

export default definePipeline<Id, Row>({
  name: 'job48k',
  params: {
    api: { description: 'API origin, e.g. http://127.0.0.1:8080' },
    count: { description: 'items', default: '48382' },
  },
  scanner: {
    async *scan(ctx) {
      const count = Number(ctx.params.count);
      const start = (ctx.cursor as number | undefined) ?? 0;
      for (let next = start; next < count; next += 1_000) {
        const items = [];
        for (let i = next; i < Math.min(count, next + 1_000); i++) items.push({ key: `item-${i}`, body: { id: String(i) } });
        yield { items, cursor: next + items.length };
      }
    },
  },
  fetcher: {
    request: (item, ctx) => ({ url: `${ctx.params.api}/items/${item.body.id}` }),
    http: { rate: { perSecond: 2_000 } },
  },
  generator: {
    generate(input) {
      const res = input.body.response!;
      const data = JSON.parse(Buffer.from(res.body).toString('utf8')) as Row;
      return [{ key: input.key, body: { id: data.id, name: data.name, value: data.value, tags: data.tags } }];
    },
  },
  writer: {
    entities: [ApiItem],
    async apply(batch, tx) {
      await upsertRows(tx.em, ApiItem, batch.map((b) => b.body));
    },
  },
});
