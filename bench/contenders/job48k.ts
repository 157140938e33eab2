// Scenario 6: 48,382 items from servers/api.ts (10 ms latency, at most 2,000 requests in any
// 1 s window, 429 above) into SQLite, three ways:
// - troupe: pipelines/job48k.ts through the Supervisor (what `troupe start` runs), the
//   Fetcher configured with rate { perSecond: 2000 };
// - sequential: a plain loop (request, parse, insert), timed on its first `sample` items and
//   extrapolated to all of them;
// - pool: 16 such loops sharing the item list (a Promise pool), each insert its own commit.
// As `troupe start` does (cli.ts): its replica threads load their modules from Node's compile cache.
import '../../compile-cache.ts';
import Database from 'better-sqlite3';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { Supervisor } from '../../supervisor.ts';
import { args, report, round } from '../lib.ts';

interface Args { mode: 'troupe' | 'sequential' | 'pool'; api: string; items: number; sample?: number; url?: string; fetchReplicas?: number }
const a = args<Args>();
const dir = await mkdtemp(join(tmpdir(), 'troupe-bench-48k-'));
const extra: Record<string, unknown> = {};
let seconds: number;

if (a.mode === 'troupe') {
  const sup = new Supervisor({
    pipelinePath: new URL('../pipelines/job48k.ts', import.meta.url).pathname, natsUrl: a.url, out: dir,
    params: { api: a.api, count: String(a.items) }, progress: 'none',
    ...(a.fetchReplicas ? { replicas: { fetcher: a.fetchReplicas } } : {}),
  });
  const s = await sup.run();
  seconds = s.wallMs / 1000;
  const db = new Database(join(dir, 'job48k.db'), { readonly: true });
  extra.rows = (db.prepare('select count(*) as n from api_item').get() as { n: number }).n;
  db.close();
  Object.assign(extra, { ok: s.ok, deadLetters: s.deadLetters, restarts: s.restarts, retried: Object.values(s.stages).reduce((n, v) => n + v.retried, 0) });
} else {
  const db = new Database(join(dir, 'loop.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('create table api_item (id text primary key, name text not null, value integer not null, tags text not null)');
  const insert = db.prepare('insert into api_item (id, name, value, tags) values (?, ?, ?, ?) on conflict (id) do update set name = excluded.name, value = excluded.value, tags = excluded.tags');
  const pool = new Pool(a.api, { connections: 16 });
  let statuses429 = 0;
  const one = async (i: number): Promise<void> => {
    for (;;) {
      const res = await pool.request({ path: `/items/${i}`, method: 'GET' });
      if (res.statusCode === 429) {
        statuses429++;
        await res.body.dump();
        await new Promise((r) => setTimeout(r, 1_000));
        continue;
      }
      const data = await res.body.json() as { id: string; name: string; value: number; tags: string[] };
      insert.run(data.id, data.name, data.value, JSON.stringify(data.tags));
      return;
    }
  };
  const n = a.mode === 'sequential' ? Math.min(a.sample ?? 2_000, a.items) : a.items;
  const t0 = performance.now();
  if (a.mode === 'sequential') {
    for (let i = 0; i < n; i++) await one(i);
  } else {
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => { while (next < n) await one(next++); }));
  }
  const measured = (performance.now() - t0) / 1000;
  seconds = measured * (a.items / n);
  extra.rows = (db.prepare('select count(*) as n from api_item').get() as { n: number }).n;
  Object.assign(extra, { measuredItems: n, measuredSeconds: round(measured), extrapolated: n < a.items, clientSaw429: statuses429 });
  await pool.close();
  db.close();
}
await rm(dir, { recursive: true, force: true });
report({ mode: a.mode, items: a.items, seconds: round(seconds), itemsPerSec: Math.round(a.items / seconds), ...extra });
