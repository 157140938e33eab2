// Scenario 4: rows/s into SQLite, 100k rows of { key (pk), title, body ~200 bytes }, in
// transactions of 1,000, each mode in a fresh file:
// - raw: better-sqlite3 prepared insert, one transaction per 1,000 rows — the ceiling;
// - store: the Writer's write path, upsertRows + recordLedger in store.transaction();
// - actor: the real Writer actor (as a replica, in this process) consuming the rows from its
//   NATS stage, preloaded beforehand; timed from its start (lease, schema) done to the last ack.
import Database from 'better-sqlite3';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureTopology, openNats, WorkProducer } from '../../messages/mod.ts';
import { frameLimits, stageConfigs } from '../../actors/env.ts';
import { Replica } from '../../actors/replica.ts';
import { loadPipeline } from '../../actors/replica.ts';
import { openStore, recordLedger, upsertRows } from '../../storage/mod.ts';
import { BenchNote } from '../pipelines/rows.ts';
import { args, cpuOf, natsServerPid, report, round } from '../lib.ts';

interface Args { mode: 'raw' | 'store' | 'actor'; rows: number; url?: string }
const a = args<Args>();
const BATCH = 1_000;
const BODY = 'lorem ipsum dolor sit amet '.repeat(8).slice(0, 200);
const row = (i: number) => ({ key: `item-${i}`, title: `Title ${i}`, body: BODY });
const batch = (o: number) => Array.from({ length: Math.min(BATCH, a.rows - o) }, (_, i) => row(o + i));
const dir = await mkdtemp(join(tmpdir(), 'troupe-bench-writer-'));
const extra: Record<string, unknown> = {};
let seconds: number;

if (a.mode === 'raw') {
  const db = new Database(join(dir, 'raw.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('create table bench_note (key text not null primary key, title text not null, body text not null)');
  const insert = db.prepare('insert into bench_note (key, title, body) values (?, ?, ?)');
  const tx = db.transaction((rows: ReturnType<typeof batch>) => { for (const r of rows) insert.run(r.key, r.title, r.body); });
  const t0 = performance.now();
  for (let o = 0; o < a.rows; o += BATCH) tx(batch(o));
  db.close(); // timed: it checkpoints what is left in the WAL, as the Writer path's close does
  seconds = (performance.now() - t0) / 1000;
} else if (a.mode === 'store') {
  const store = await openStore({ dbPath: join(dir, 'store.db'), entities: [BenchNote], backgroundCheckpoint: true });
  const t0 = performance.now();
  for (let o = 0; o < a.rows; o += BATCH) {
    const rows = batch(o);
    await store.transaction(async (em) => {
      await upsertRows(em, BenchNote, rows);
      await recordLedger(em, rows.map((r) => ({ key: r.key, stage: 'write', status: 'done', attempts: 1 })));
    });
  }
  // Timed: the WAL left behind by the background checkpointer is written back here.
  await store.close();
  seconds = (performance.now() - t0) / 1000;
} else {
  const pipelinePath = new URL('../pipelines/rows.ts', import.meta.url).pathname;
  const def = await loadPipeline(pipelinePath);
  const nats = await openNats({ url: a.url!, stateDir: dir });
  await ensureTopology(nats.jsm, def.name, [...stageConfigs(def).values()]);
  // Framed as the replicas upstream of a Writer frame what they publish.
  const producer = new WorkProducer(nats.js, def.name, { ...frameLimits, maxPending: 512 });
  const tp = performance.now();
  const CHUNK = 5_000;
  for (let o = 0; o < a.rows; o += CHUNK) {
    await Promise.all(Array.from({ length: Math.min(CHUNK, a.rows - o) }, (_, i) => producer.publish('write', `item-${o + i}`, row(o + i))));
  }
  extra.preloadSeconds = round((performance.now() - tp) / 1000);
  const replica = new Replica({ pipelinePath, role: 'writer', index: 0, natsUrl: a.url!, params: {}, out: dir, run: 'bench' });
  const ts = performance.now();
  await replica.start();
  extra.startSeconds = round((performance.now() - ts) / 1000);
  // CPU per row, for telling a slower Writer from a busier machine: the Writer's thread, the
  // whole process (checkpoint thread, GC helpers) and nats-server, all on the same cores.
  const natsPid = natsServerPid(Number(new URL(a.url!).port));
  const cpu0 = { thread: process.threadCpuUsage(), all: process.cpuUsage(), nats: cpuOf(natsPid) };
  const t0 = performance.now();
  while ((replica.stats()?.done ?? 0) < a.rows) await sleep(5);
  seconds = (performance.now() - t0) / 1000;
  const thread = process.threadCpuUsage(cpu0.thread);
  const all = process.cpuUsage(cpu0.all);
  const nats1 = cpuOf(natsPid);
  Object.assign(extra, {
    threadCpuUsPerRow: round((thread.user + thread.system) / a.rows),
    processCpuUsPerRow: round((all.user + all.system) / a.rows),
    natsCpuUsPerRow: cpu0.nats === undefined || nats1 === undefined ? null : round((nats1 - cpu0.nats) / a.rows),
  });
  await replica.drain();
  await nats.close();
}
await rm(dir, { recursive: true, force: true });
report({ mode: a.mode, rows: a.rows, seconds: round(seconds, 3), rowsPerSec: Math.round(a.rows / seconds), ...extra });
