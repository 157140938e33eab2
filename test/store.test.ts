import test from 'ava';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { defineEntity, p } from '@mikro-orm/sqlite';
import { codes } from '../messages/mod.ts';
import {
  appliedIds, isDone, KeyFilter, ledgerCounts, loadCheckpoint, loadLedgerKeys, openStore, recordLedger, saveCheckpoint, TroupeLedger, upsertRows, type Store,
} from '../storage/mod.ts';
import { tempDir } from './helpers/nats.ts';

const Note = defineEntity({
  name: 'Note',
  tableName: 'note',
  properties: {
    key: p.string().primary(),
    title: p.string(),
    words: p.integer(),
    published: p.boolean(),
    tags: p.json<string[]>(),
    fetchedAt: p.datetime(),
    summary: p.text().nullable(),
  },
});

const Author = defineEntity({
  name: 'Author',
  tableName: 'author',
  properties: { key: p.string().primary(), name: p.string() },
});

const Book = defineEntity({
  name: 'Book',
  tableName: 'book',
  properties: { key: p.string().primary(), title: p.string(), author: () => p.manyToOne(Author) },
});

const dirs: string[] = [];
test.after.always(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function fresh(): Promise<{ store: Store; dbPath: string }> {
  const dir = await tempDir('troupe-store-');
  dirs.push(dir);
  const dbPath = join(dir, 'nested', 'job.db');
  return { store: await openStore({ dbPath, entities: [Note] }), dbPath };
}

function note(key: string, over: Partial<Record<string, unknown>> = {}) {
  return {
    key, title: `title ${key}`, words: 3, published: true, tags: ['a', 'b'],
    fetchedAt: new Date('2026-01-02T03:04:05.678Z'), summary: null, ...over,
  };
}

test('store - creates the user and troupe tables in one file', async (t) => {
  const { store } = await fresh();
  const tables = (store.db.prepare("select name from sqlite_master where type = 'table' order by name").all() as Array<{ name: string }>)
    .map((r) => r.name);
  t.deepEqual(tables, ['note', 'troupe_checkpoint', 'troupe_ledger']);
  const cols = (store.db.prepare('pragma table_info(troupe_ledger)').all() as Array<{ name: string; pk: number }>);
  t.deepEqual(cols.map((c) => c.name), ['key', 'stage', 'status', 'attempts', 'last_error', 'last_id', 'created_at', 'updated_at']);
  t.deepEqual(cols.filter((c) => c.pk > 0).map((c) => c.name), ['key', 'stage']);
  // Clustered on its primary key (one B-tree per row), and the ORM sees no difference to its entity.
  const ddl = (store.db.prepare("select sql from sqlite_master where name = 'troupe_ledger'").get() as { sql: string }).sql;
  t.regex(ddl, /\) without rowid$/);
  t.is((await store.orm.schema.getUpdateSchemaSQL({ safe: true })).trim(), '');
  await store.close();
});

test('store - a file whose ledger has a rowid (made before) opens and records as before', async (t) => {
  const dir = await tempDir('troupe-store-');
  dirs.push(dir);
  const dbPath = join(dir, 'old.db');
  const Database = (await import('better-sqlite3')).default;
  const old = new Database(dbPath);
  old.exec('create table `troupe_ledger` (`key` text not null, `stage` text not null, `status` text not null, `attempts` integer not null, ' +
    '`last_error` text null, `last_id` text null, `created_at` datetime not null, `updated_at` datetime not null, primary key (`key`, `stage`))');
  old.close();
  const store = await openStore({ dbPath, entities: [Note] });
  t.notRegex((store.db.prepare("select sql from sqlite_master where name = 'troupe_ledger'").get() as { sql: string }).sql, /without rowid/);
  await store.transaction((em) => recordLedger(em, [{ key: 'k', stage: 'write', status: 'done', attempts: 1 }]));
  await store.transaction((em) => recordLedger(em, [{ key: 'k', stage: 'write', status: 'done', attempts: 2 }]));
  t.deepEqual(await ledgerCounts(store), { write: { done: 1 } });
  await store.close();
});

test('store - runs in WAL mode with synchronous NORMAL', async (t) => {
  const { store } = await fresh();
  t.is(store.db.pragma('journal_mode', { simple: true }), 'wal');
  t.is(store.db.pragma('synchronous', { simple: true }), 1);
  await store.close();
});

test('store - options are validated with messages naming them', async (t) => {
  const err = await t.throwsAsync(openStore({ dbPath: '' }));
  t.is((err as { code?: string }).code, codes.BAD_OPTION);
  t.regex(err!.message, /options\.dbPath must be a non-empty string/);
  const bg = await t.throwsAsync(openStore({ dbPath: 'x.db', backgroundCheckpoint: 'yes' as unknown as boolean }));
  t.regex(bg!.message, /options\.backgroundCheckpoint must be a boolean/);
});

test('ledger - recording the same key and stage twice keeps one row with the new attempts', async (t) => {
  const { store } = await fresh();
  await store.transaction((em) => recordLedger(em, [
    { key: 'k1', stage: 'write', status: 'failed', attempts: 1, lastError: 'boom' },
    { key: 'k1', stage: 'fetch', status: 'done', attempts: 1 },
  ]));
  const before = store.db.prepare("select * from troupe_ledger where key = 'k1' and stage = 'write'").get() as Record<string, unknown>;
  await store.transaction((em) => recordLedger(em, [{ key: 'k1', stage: 'write', status: 'done', attempts: 2 }]));
  const rows = store.db.prepare("select * from troupe_ledger where key = 'k1' order by stage").all() as Array<Record<string, unknown>>;
  t.is(rows.length, 2);
  const write = rows.find((r) => r.stage === 'write')!;
  t.like(write, { status: 'done', attempts: 2, last_error: null, created_at: before.created_at });
  t.true((write.updated_at as number) >= (before.updated_at as number));
  // The ORM reads the rows the fast path wrote.
  const viaOrm = await store.em().findOneOrFail(TroupeLedger, { key: 'k1', stage: 'write' });
  t.is(viaOrm.attempts, 2);
  t.true(viaOrm.createdAt instanceof Date);
  await store.close();
});

test('ledger - isDone reports only keys done at that stage, inside the transaction too', async (t) => {
  const { store } = await fresh();
  await store.transaction((em) => recordLedger(em, [
    { key: 'a', stage: 'write', status: 'done', attempts: 1 },
    { key: 'b', stage: 'write', status: 'failed', attempts: 3, lastError: 'nope' },
    { key: 'c', stage: 'fetch', status: 'done', attempts: 1 },
  ]));
  t.deepEqual([...await isDone(store, ['a', 'b', 'c', 'd'], 'write')], ['a']);
  t.deepEqual([...await isDone(store, [], 'write')], []);
  await store.transaction(async (em) => {
    await recordLedger(em, [{ key: 'd', stage: 'write', status: 'done', attempts: 1 }]);
    t.deepEqual([...await isDone(em, ['a', 'd'], 'write')].sort(), ['a', 'd']);
  });
  t.deepEqual(await ledgerCounts(store), { write: { done: 2, failed: 1 }, fetch: { done: 1 } });
  await store.close();
});

test('checkpoint - a saved cursor round trips and is overwritten', async (t) => {
  const { store } = await fresh();
  t.is(await loadCheckpoint(store, 'scanner'), undefined);
  await store.transaction((em) => saveCheckpoint(em, 'scanner', { page: 3, after: 'k99', seen: [1, 2] }));
  t.deepEqual(await loadCheckpoint(store, 'scanner'), { page: 3, after: 'k99', seen: [1, 2] });
  await store.transaction((em) => saveCheckpoint(em, 'scanner', 'cursor-4'));
  t.is(await loadCheckpoint(store, 'scanner'), 'cursor-4');
  t.is((store.db.prepare('select count(*) as n from troupe_checkpoint').get() as { n: number }).n, 1);
  await store.close();
});

test('upsertRows - the same key twice leaves one row holding the latest values', async (t) => {
  const { store } = await fresh();
  await store.transaction((em) => upsertRows(em, Note, [note('n1'), note('n2')]));
  await store.transaction((em) => upsertRows(em, Note, [note('n1', { title: 'new', words: 7, published: false, tags: ['z'], summary: 'short' })]));
  const rows = await store.em().find(Note, {}, { orderBy: { key: 'asc' } });
  t.is(rows.length, 2);
  t.like(rows[0]!, { key: 'n1', title: 'new', words: 7, published: false, summary: 'short' });
  t.deepEqual(rows[0]!.tags, ['z']);
  t.is(rows[0]!.fetchedAt.toISOString(), '2026-01-02T03:04:05.678Z');
  t.like(rows[1]!, { key: 'n2', title: 'title n2', published: true });
  await store.close();
});

test('upsertRows and recordLedger - 150 rows (two full statements and a part) each land with their own values', async (t) => {
  const { store } = await fresh();
  const rows = Array.from({ length: 150 }, (_, i) => note(`k${i}`, { words: i, summary: i % 2 === 0 ? null : `s${i}` }));
  await store.transaction(async (em) => {
    await upsertRows(em, Note, rows);
    await recordLedger(em, rows.map((r) => ({ key: r.key, stage: 'write', status: 'done', attempts: r.words + 1, lastId: `id${r.words}` })));
  });
  const notes = store.db.prepare('select key, words, summary from note order by words').all() as Array<{ key: string; words: number; summary: string | null }>;
  t.deepEqual(notes, rows.map((r) => ({ key: r.key, words: r.words, summary: r.summary })));
  const ledger = store.db.prepare('select key, attempts, last_id as lastId from troupe_ledger order by attempts').all();
  t.deepEqual(ledger, rows.map((r) => ({ key: r.key, attempts: r.words + 1, lastId: `id${r.words}` })));
  await store.close();
});

test('upsertRows - stores values exactly as the ORM itself does', async (t) => {
  const { store } = await fresh();
  await store.transaction(async (em) => {
    await upsertRows(em, Note, [note('fast')]);
    em.create(Note, note('orm'));
  });
  const [fast, orm] = store.db.prepare("select * from note where key in ('fast', 'orm') order by key").all() as Array<Record<string, unknown>>;
  t.deepEqual({ ...fast, key: 'x', title: 'x' }, { ...orm, key: 'x', title: 'x' });
  await store.close();
});

test('store - a failed transaction rolls back rows and ledger together', async (t) => {
  const { store } = await fresh();
  await t.throwsAsync(store.transaction(async (em) => {
    await upsertRows(em, Note, [note('r1')]);
    await recordLedger(em, [{ key: 'r1', stage: 'write', status: 'done', attempts: 1 }]);
    throw new Error('apply failed');
  }), { message: 'apply failed' });
  t.is((store.db.prepare('select count(*) as n from note').get() as { n: number }).n, 0);
  t.deepEqual(await ledgerCounts(store), {});
  await store.close();
});

test('store - data survives close and reopen, also read-only', async (t) => {
  const { store, dbPath } = await fresh();
  await store.transaction(async (em) => {
    await upsertRows(em, Note, [note('keep')]);
    await recordLedger(em, [{ key: 'keep', stage: 'write', status: 'done', attempts: 1 }]);
    await saveCheckpoint(em, 'scanner', { page: 9 });
  });
  await store.close();
  await store.close(); // twice is fine

  await using reopened = await openStore({ dbPath, entities: [Note] });
  t.is((await reopened.em().findOneOrFail(Note, { key: 'keep' })).title, 'title keep');
  t.deepEqual([...await isDone(reopened, ['keep'], 'write')], ['keep']);
  await reopened.close();

  await using ro = await openStore({ dbPath, entities: [Note], readOnly: true });
  t.deepEqual(await loadCheckpoint(ro, 'scanner'), { page: 9 });
  await t.throwsAsync(ro.transaction((em) => upsertRows(em, Note, [note('nope')])), { message: /readonly/i });
});

test('upsertRows - refuses an EntityManager outside the transaction that is open', async (t) => {
  const { store } = await fresh();
  let refused: unknown;
  await store.transaction(async () => {
    refused = await upsertRows(store.em(), Note, [note('stray')]).catch((err: unknown) => err);
  });
  t.is((refused as { code?: string }).code, codes.BAD_OPTION);
  t.is((store.db.prepare('select count(*) as n from note').get() as { n: number }).n, 0);
  await store.close();
});

test('upsertRows - an entity with a relation goes through the query builder and still upserts', async (t) => {
  const dir = await tempDir('troupe-store-');
  dirs.push(dir);
  await using store = await openStore({ dbPath: join(dir, 'rel.db'), entities: [Author, Book] });
  await store.transaction(async (em) => {
    await upsertRows(em, Author, [{ key: 'a1', name: 'Ann' }]);
    await upsertRows(em, Book, [{ key: 'b1', title: 'First', author: 'a1' }]);
  });
  await store.transaction((em) => upsertRows(em, Book, [{ key: 'b1', title: 'First, revised', author: 'a1' }]));
  const books = store.db.prepare('select * from book').all();
  t.deepEqual(books, [{ key: 'b1', title: 'First, revised', author_key: 'a1' }]);
});

test('store - appliedIds finds the messages already applied, by envelope id', async (t) => {
  const { store } = await fresh();
  await store.transaction((em) => recordLedger(em, [
    { key: 'a', stage: 'write', status: 'done', attempts: 1, lastId: 'id-a1' },
    { key: 'b', stage: 'write', status: 'done', attempts: 1, lastId: 'id-b1' },
  ]));
  const seen = await store.transaction((em) => appliedIds(em, 'write', [
    { key: 'a', id: 'id-a1' }, // the same message redelivered: applied
    { key: 'b', id: 'id-b2' }, // a new message for the same key: not applied
    { key: 'c', id: 'id-c1' }, // never seen
  ]));
  t.deepEqual([...seen], ['id-a1']);
  await store.close();
});

test('store - appliedIds with a key filter looks up only keys the filter may hold, and the filter loads from the ledger', async (t) => {
  const { store } = await fresh();
  await store.transaction((em) => recordLedger(em, [
    { key: 'a', stage: 'write', status: 'done', attempts: 1, lastId: 'id-a1' },
    { key: 'b', stage: 'fetch', status: 'done', attempts: 1, lastId: 'id-b1' },
  ]));
  const filter = new KeyFilter();
  t.is(await loadLedgerKeys(store, 'write', filter), 1);
  t.true(filter.mayHave('a'));
  t.false(filter.mayHave('b'), 'another stage\'s keys are not loaded');
  const seen = await store.transaction((em) => appliedIds(em, 'write', [{ key: 'a', id: 'id-a1' }, { key: 'c', id: 'id-c1' }], filter));
  t.deepEqual([...seen], ['id-a1']);
  // A filter that has never seen 'a' skips its lookup: the caller must add every key it writes.
  const empty = await store.transaction((em) => appliedIds(em, 'write', [{ key: 'a', id: 'id-a1' }], new KeyFilter()));
  t.deepEqual([...empty], []);
  await store.close();
});

test('key filter - never forgets a key it was given, and stays sparse when it holds few', (t) => {
  const filter = new KeyFilter(20); // 1 Mibit
  const keys = Array.from({ length: 50_000 }, (_, i) => `https://example.org/item/${i}`);
  for (const k of keys) filter.add(k);
  t.true(keys.every((k) => filter.mayHave(k)));
  let positives = 0;
  for (let i = 0; i < 50_000; i++) if (filter.mayHave(`https://example.org/other/${i}`)) positives++;
  // 50k keys in 2^20 bits with 3 hashes: ~0.3% false positives in theory.
  t.true(positives < 500, `${positives} false positives of 50,000`);
  t.is(filter.bits.byteLength, 2 ** 20 / 8, 'its size is fixed');
  t.throws(() => new KeyFilter(40), { instanceOf: RangeError });
});

test('store - the background checkpointer copies back what a paused Writer left, even a few frames', async (t) => {
  const dir = await tempDir('troupe-store-');
  dirs.push(dir);
  const store = await openStore({ dbPath: join(dir, 'idle.db'), entities: [Note], backgroundCheckpoint: true });
  t.teardown(() => store.close());
  // Let the thread start, then write a few pages: below the 64 frames a busy Writer waits for.
  await new Promise((r) => setTimeout(r, 300));
  await store.transaction((em) => upsertRows(em, Note, [note('a'), note('b')]));
  const pending = () => {
    const [r] = store.db.pragma('wal_checkpoint(NOOP)') as Array<{ log: number; checkpointed: number }>;
    return r!.log - r!.checkpointed;
  };
  t.true(pending() > 0 && pending() < 64, `${pending()} frames after the write`);
  const since = Date.now();
  while (pending() > 0 && Date.now() - since < 5_000) await new Promise((r) => setTimeout(r, 20));
  t.is(pending(), 0, 'every frame copied back once the WAL stopped changing');
  await store.close();
});

test('store - a background checkpointer keeps the WAL bounded and loses nothing on close', async (t) => {
  const dir = await tempDir('troupe-store-');
  dirs.push(dir);
  const dbPath = join(dir, 'bg.db');
  const store = await openStore({ dbPath, entities: [Note], backgroundCheckpoint: true });
  t.teardown(() => store.close());
  const body = 'x'.repeat(300);
  let maxWal = 0;
  for (let b = 0; b < 60; b++) {
    await store.transaction((em) => upsertRows(em, Note, Array.from({ length: 500 }, (_, i) => ({
      key: `n${b * 500 + i}`, title: body, words: i, published: true, tags: [], fetchedAt: new Date(0),
    }))));
    await new Promise((r) => setTimeout(r, 10)); // a Writer's gap between batches
    maxWal = Math.max(maxWal, (await stat(`${dbPath}-wal`)).size);
  }
  // 30k rows of ~400 bytes write 12.1 MiB of WAL frames, which a WAL that never restarts
  // would hold (a checkpoint thread that never caught up: CI once saw exactly that, when
  // the thread started late and the commits had already given up their own checkpoints).
  // The thread, running before openStore returns, keeps it to a few batches: 2.3-2.9 MB on
  // an idle machine, 1.5-2.1 MB with 4 busy loops on 2 cores.
  t.true(maxWal < 10 * 1024 * 1024, `WAL reached ${maxWal} bytes`);
  await store.close();
  const again = await openStore({ dbPath, entities: [Note], readOnly: true });
  t.is((again.db.prepare('select count(*) as n from note').get() as { n: number }).n, 30_000);
  await again.close();
});
