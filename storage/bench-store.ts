/**
 * Measures the Writer's write path against raw better-sqlite3, on 100k rows of
 * `{ key (pk), title, body ~200 bytes }` in transactions of 1,000, each in a fresh file:
 *
 * - raw: better-sqlite3 (the copy bundled with @mikro-orm/sqlite), one prepared insert per
 *   row — the ceiling;
 * - writer: `upsertRows` + `recordLedger` per batch in `store.transaction()` — the path the
 *   Writer uses, which must reach 40% of raw although it also writes a ledger row per item;
 * - orm-qb + ledger: `qb.insert().onConflict().merge()` for the rows, `recordLedger` for the ledger;
 * - orm-upsertMany: `em.upsertMany` alone, for reference.
 *
 * Run: `npx node storage/bench-store.ts [rows] [rounds]` (defaults 100000 and 3); each
 * contender reports its best round.
 */

import { createRequire } from 'node:module';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineEntity, p, type EntityManager } from '@mikro-orm/sqlite';
import { openStore, recordLedger, upsertRows, type SqliteDatabase } from './store.ts';

const Note = defineEntity({
  name: 'BenchNote',
  tableName: 'bench_note',
  properties: { key: p.string().primary(), title: p.string(), body: p.text() },
});

const N = Number(process.argv[2] ?? 100_000);
const RAW = 'raw better-sqlite3 (prepared insert, tx of 1000)';
const WRITER = 'writer: upsertRows + recordLedger';
const QB = 'orm qb upsert + recordLedger';
const UPSERT_MANY = 'orm em.upsertMany (no ledger, one round)';
const BATCH = 1_000;
const BODY = 'lorem ipsum dolor sit amet '.repeat(8).slice(0, 200);

function batch(offset: number): Array<{ key: string; title: string; body: string }> {
  const n = Math.min(BATCH, N - offset);
  return Array.from({ length: n }, (_, i) => ({ key: `item-${offset + i}`, title: `Title ${offset + i}`, body: BODY }));
}

function ledger(rows: Array<{ key: string }>) {
  return rows.map((r) => ({ key: r.key, stage: 'write', status: 'done', attempts: 1 }));
}

async function raw(path: string): Promise<number> {
  // better-sqlite3 is a dependency of @mikro-orm/sqlite, resolved from there.
  const Database = createRequire(import.meta.resolve('@mikro-orm/sqlite'))('better-sqlite3') as
    new (path: string) => SqliteDatabase & { transaction<A extends unknown[]>(fn: (...a: A) => void): (...a: A) => void };
  const db = new Database(`${path}.db`);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('create table bench_note (key text not null primary key, title text not null, body text not null)');
  const insert = db.prepare('insert into bench_note (key, title, body) values (?, ?, ?)');
  const tx = db.transaction((rows: Array<{ key: string; title: string; body: string }>) => {
    for (const r of rows) insert.run(r.key, r.title, r.body);
  });
  const t0 = performance.now();
  for (let o = 0; o < N; o += BATCH) tx(batch(o));
  const rate = N / ((performance.now() - t0) / 1000);
  db.close();
  return rate;
}

async function orm(dir: string, name: string, write: (em: EntityManager, rows: ReturnType<typeof batch>) => Promise<unknown>): Promise<number> {
  const store = await openStore({ dbPath: join(dir, `${name}.db`), entities: [Note] });
  const t0 = performance.now();
  for (let o = 0; o < N; o += BATCH) {
    const rows = batch(o);
    await store.transaction((em) => write(em, rows));
  }
  const rate = N / ((performance.now() - t0) / 1000);
  const count = (store.db.prepare('select count(*) as n from bench_note').get() as { n: number }).n;
  await store.close();
  if (count !== N) throw new Error(`${name}: expected ${N} rows, found ${count}`);
  return rate;
}

const ROUNDS = Number(process.argv[3] ?? 3);
const dir = await mkdtemp(join(tmpdir(), 'troupe-bench-store-'));
try {
  // Rounds alternate the contenders so that load from other processes hits them alike;
  // each reports its best round.
  const best = new Map<string, number>();
  const record = (name: string, rate: number) => best.set(name, Math.max(best.get(name) ?? 0, rate));
  for (let round = 0; round < ROUNDS; round++) {
    record(RAW, await raw(join(dir, `raw-${round}`)));
    record(WRITER, await orm(dir, `writer-${round}`, async (em, rows) => {
      await upsertRows(em, Note, rows);
      await recordLedger(em, ledger(rows));
    }));
    record(QB, await orm(dir, `qb-${round}`, async (em, rows) => {
      await em.createQueryBuilder(Note).insert(rows).onConflict(['key']).merge().execute('run');
      await recordLedger(em, ledger(rows));
    }));
  }
  record(UPSERT_MANY, await orm(dir, 'upsertMany', (em, rows) => em.upsertMany(Note, rows)));
  const rawRate = best.get(RAW)!;
  console.log(`${N} rows, batches of ${BATCH}, WAL + synchronous=NORMAL, best of ${ROUNDS} rounds, node ${process.version}`);
  for (const [name, rate] of best) {
    console.log(`${name.padEnd(50)} ${Math.round(rate).toString().padStart(8)} rows/s  ${(100 * rate / rawRate).toFixed(0).padStart(4)}% of raw`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
