/**
 * The pipeline's SQLite database through MikroORM 7: one file holding the pipeline's own
 * entities and troupe's ledger and checkpoints, in WAL mode, its schema brought up to date
 * at open.
 *
 * The Writer's write path is {@link upsertRows} (see storage/upsert.ts for why it is not
 * `em.upsertMany`): per batch of ~1,000 items, one `store.transaction()` that upserts the
 * pipeline's rows with `upsertRows` and the items' outcomes with {@link recordLedger}.
 * `npx node storage/bench-store.ts` measured that at 65–73% of raw better-sqlite3 prepared
 * inserts (rows alone, no ledger) on 100k rows; the Writer's floor is 40%.
 */

import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { EntityManager, MikroORM, Options } from '@mikro-orm/sqlite';
import { codes, TroupeError } from '../messages/errors.ts';
import { TroupeCheckpoint, troupeEntities } from './entities.ts';
import type { KeyFilter } from './key-filter.ts';
import { nativeDatabase, prepared, runUpsert, upsertRows, writableDatabase, type SqliteDatabase, type UpsertPlan } from './upsert.ts';

export { TroupeCheckpoint, TroupeLedger, troupeEntities } from './entities.ts';
export { nativeDatabase, upsertRows, type SqliteDatabase, type SqliteStatement } from './upsert.ts';

/** Entity definitions as MikroORM accepts them (`defineEntity` results or classes). */
export type EntityList = NonNullable<Options['entities']>;

export interface StoreOptions {
  /** Path of the SQLite file; its folder is created if missing. */
  dbPath: string;
  /** The pipeline's entities; troupe's own are always added. @default [] */
  entities?: EntityList;
  /**
   * Open without writing: no schema update, no journal-mode change; the file must exist.
   * For status commands that read while a Writer runs. @default false
   */
  readOnly?: boolean;
  /** Log every SQL statement (MikroORM `debug`). @default false */
  debug?: boolean;
  /**
   * Copy the WAL back into the database on a thread of its own, so that commits do not:
   * measured at ~25% of the write path's time (see {@link Checkpointer}). @default false
   */
  backgroundCheckpoint?: boolean;
}

/** An open database. Close it with {@link Store.close} or `await using`. */
export class Store {
  /** The MikroORM instance; `orm.em` is the global context, prefer {@link Store.em}. */
  readonly orm: MikroORM;
  /** The better-sqlite3 handle behind the ORM connection (raw, synchronous access). */
  readonly db: SqliteDatabase;
  readonly dbPath: string;
  readonly readOnly: boolean;
  #closing: Promise<void> | undefined;
  #checkpointer: Checkpointer | undefined;

  constructor(orm: MikroORM, db: SqliteDatabase, dbPath: string, readOnly: boolean, checkpointer?: Checkpointer) {
    this.orm = orm;
    this.db = db;
    this.dbPath = dbPath;
    this.readOnly = readOnly;
    this.#checkpointer = checkpointer;
  }

  /** A fresh EntityManager fork with its own identity map. */
  em(): EntityManager {
    return this.orm.em.fork();
  }

  /**
   * Runs `fn` in one SQLite transaction on a fresh fork: committed when `fn` resolves
   * (after flushing the fork's unit of work), rolled back when it throws.
   */
  transaction<T>(fn: (em: EntityManager) => Promise<T>): Promise<T> {
    if (this.#closing !== undefined) return Promise.reject(new TroupeError(codes.CLOSED, `store ${this.dbPath} is closed`));
    // On the global EntityManager, which forks once for the transaction. A fork's
    // transactional() forks again, and merges the inner fork's entities back into the
    // outer one after the commit: work for a parent that is thrown away at once.
    return this.orm.em.transactional(fn);
  }

  /** Closes the database (checkpointing the WAL). Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#checkpointer?.stop();
      await this.orm.close(true);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Opens (creating if needed) the database at `dbPath` and updates its schema. */
export async function openStore(options: StoreOptions): Promise<Store> {
  const { dbPath, entities = [], readOnly = false, debug = false, backgroundCheckpoint = false } = validate(options);
  if (!readOnly && dbPath !== ':memory:') await mkdir(dirname(dbPath), { recursive: true });
  // Loaded here rather than at the top: threads that only import storage for upsertRows or
  // the entities (every replica of a pipeline that does) need not load the SQL driver.
  const { MikroORM } = await import('@mikro-orm/sqlite');
  const orm = await MikroORM.init({
    dbName: dbPath,
    entities: [...troupeEntities, ...entities],
    debug,
    driverOptions: readOnly ? { readonly: true, fileMustExist: true } : {},
  });
  let checkpointer: Checkpointer | undefined;
  try {
    const db = await nativeDatabase(orm.em);
    // NORMAL is durable against process crashes in WAL mode and only risks the last
    // commits on power loss; FULL would fsync on every commit.
    db.pragma('synchronous = NORMAL');
    if (!readOnly) {
      db.pragma('journal_mode = WAL');
      if (backgroundCheckpoint && dbPath !== ':memory:') {
        // Started before the schema work, which its start-up overlaps. Once it runs, the
        // commits checkpoint themselves only when the WAL is far behind (a thread that cannot
        // keep up): the WAL stays bounded, at most ~40 MiB. Until then, and if the thread
        // fails, they checkpoint at SQLite's default.
        checkpointer = new Checkpointer(dbPath, (running) => {
          if (db.open) db.pragma(`wal_autocheckpoint = ${running ? WAL_BOUND_PAGES : DEFAULT_AUTOCHECKPOINT_PAGES}`);
        });
      }
      await createLedger(orm, db);
      // safe: never drop a table or column another entity list (an older pipeline
      // version, a different tool) still uses in this file.
      await orm.schema.update({ safe: true });
      // The first commits should not pay for checkpoints the thread is there to take: the
      // store was 12% slower when its first commits did (4 pairs of 100k rows).
      await checkpointer?.started(CHECKPOINTER_START_MS);
    }
    return new Store(orm, db, dbPath, readOnly, checkpointer);
  } catch (err) {
    await checkpointer?.stop();
    await orm.close(true);
    throw err;
  }
}

/**
 * Creates troupe's ledger in a new file as a WITHOUT ROWID table, as the entity defines it
 * otherwise: the Writer upserts one ledger row per item and reads it only by its primary key
 * (key, stage), so clustering the rows on that key makes each upsert one B-tree insert
 * instead of two (the rowid table and its primary-key index). A file made before keeps its
 * table; the ORM's schema comparison does not tell the two apart.
 */
async function createLedger(orm: MikroORM, db: SqliteDatabase): Promise<void> {
  if (db.prepare("select 1 from sqlite_master where type = 'table' and name = 'troupe_ledger'").get() !== undefined) return;
  const ddl = /^create table `troupe_ledger` \(.*\)(?=;$)/im.exec(await orm.schema.getCreateSchemaSQL({ wrap: false }))?.[0];
  if (ddl !== undefined) db.exec(`${ddl} without rowid`);
}

/** Pages (4 KiB) the WAL may hold before a commit checkpoints it itself, while a checkpoint thread runs. */
const WAL_BOUND_PAGES = 10_000;
/** SQLite's own threshold, for commits without a running checkpoint thread. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1_000;
/** How long openStore waits for the checkpoint thread; a later start still takes over. */
const CHECKPOINTER_START_MS = 5_000;

/**
 * A thread that keeps checkpointing a WAL-mode database (PASSIVE: it never blocks the
 * writer) every few ms while the WAL holds frames not yet copied back. A commit that
 * crosses SQLite's autocheckpoint threshold copies the whole WAL into the database file and
 * fsyncs it, on the writer's thread: 1,000 rows and their ledger rows per transaction
 * crossed it every few transactions, and those commits were ~25% of the write path's time.
 * The WAL restarts from its beginning once a checkpoint has caught up with the last commit,
 * which the gaps between a Writer's batches allow: a checkpoint of 64+ frames (about one
 * batch) is done within the gap; one of 1,000 frames often was not, and the WAL then grew
 * until the commits' own bound (tried: the thread used ~30% less CPU, the Writer ran no faster).
 */
class Checkpointer {
  readonly #worker: Worker;
  readonly #stopped: Promise<void>;
  readonly #running: Promise<void>;
  #isRunning!: () => void;

  /** `running` is called with true once the thread has its connection, with false if it fails. */
  constructor(dbPath: string, running: (yes: boolean) => void) {
    this.#worker = new Worker(new URL('./checkpointer.ts', import.meta.url), {
      workerData: { dbPath, intervalMs: 5, minFrames: 64 }, resourceLimits: { maxYoungGenerationSizeMb: 8, maxOldGenerationSizeMb: 64 },
    });
    this.#worker.unref();
    this.#running = new Promise((resolve) => { this.#isRunning = resolve; });
    this.#stopped = new Promise((resolve) => {
      this.#worker.once('exit', () => {
        this.#isRunning();
        resolve();
      });
      this.#worker.once('error', (err) => {
        running(false);
        this.#isRunning();
        process.emitWarning(`the WAL checkpointer of ${dbPath} failed: ${err.message}`, 'TroupeStoreWarning');
        resolve();
      });
      this.#worker.on('message', (m) => {
        if (m === 'running') {
          running(true);
          this.#isRunning();
        } else if (m === 'stopped') {
          void this.#worker.terminate();
        }
      });
    });
  }

  /** Resolves once the thread runs, has failed, or after `timeoutMs`. */
  async started(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#running, new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); })]);
    clearTimeout(timer);
  }

  stop(): Promise<void> {
    this.#worker.postMessage('stop');
    return this.#stopped;
  }
}

function validate(options: StoreOptions): StoreOptions {
  if (typeof options !== 'object' || options === null) throw badOption('options must be an object');
  if (typeof options.dbPath !== 'string' || options.dbPath === '') throw badOption('options.dbPath must be a non-empty string');
  if (options.entities !== undefined && !Array.isArray(options.entities)) throw badOption('options.entities must be an array');
  if (options.readOnly !== undefined && typeof options.readOnly !== 'boolean') throw badOption('options.readOnly must be a boolean');
  if (options.backgroundCheckpoint !== undefined && typeof options.backgroundCheckpoint !== 'boolean') throw badOption('options.backgroundCheckpoint must be a boolean');
  return options;
}

function badOption(message: string): TroupeError {
  return new TroupeError(codes.BAD_OPTION, message);
}

/** One item's outcome at one stage. */
export interface LedgerEntry {
  key: string;
  stage: string;
  /** For example `done`, `failed`, `dead`; {@link isDone} looks for `done`. */
  status: string;
  attempts: number;
  /** Cleared when left out, so a later success does not carry an old error. */
  lastError?: string | null;
  /** Envelope id of the message applied (see {@link appliedIds}). */
  lastId?: string | null;
}

/**
 * Upserts ledger rows by (key, stage) inside the caller's transaction: a replayed item
 * updates its row (status, attempts, last error, updated_at; created_at stays) instead of
 * adding one. All rows of one call share one timestamp. Returns the number of entries.
 */
export async function recordLedger(em: EntityManager, entries: ReadonlyArray<LedgerEntry>): Promise<number> {
  if (entries.length === 0) return 0;
  const db = await writableDatabase(em, 'recordLedger');
  // Written directly rather than through upsertRows: the ledger is troupe's own table, and
  // one timestamp per batch instead of two Date objects per row measurably helps the Writer.
  const now = Date.now();
  return runUpsert(db, LEDGER_UPSERT, entries, (params, at, e) => {
    params[at] = e.key;
    params[at + 1] = e.stage;
    params[at + 2] = e.status;
    params[at + 3] = e.attempts;
    params[at + 4] = e.lastError ?? null;
    params[at + 5] = e.lastId ?? null;
    params[at + 6] = now;
    params[at + 7] = now;
    return at + 8;
  });
}

const LEDGER_UPSERT: UpsertPlan = {
  table: 'troupe_ledger',
  columns: ['key', 'stage', 'status', 'attempts', 'last_error', 'last_id', 'created_at', 'updated_at'],
  conflict: ['key', 'stage'],
  updates: ['status', 'attempts', 'last_error', 'last_id', 'updated_at'].map((c) => `${c} = excluded.${c}`),
};

/**
 * Which of these messages (by envelope id) were already applied at `stage`: a message the
 * Writer committed but could not ack before it died comes back with the same id, and must
 * not take effect twice. A key written again later (a new message) has a new id.
 */
export async function appliedIds(em: EntityManager, stage: string, messages: ReadonlyArray<{ key: string; id: string }>, filter?: KeyFilter): Promise<Set<string>> {
  // Keys the filter has certainly never seen have no ledger row at this stage.
  if (filter !== undefined) messages = messages.filter((m) => filter.mayHave(m.key));
  if (messages.length === 0) return new Set();
  const db = await databaseOf(em);
  const rows = prepared(db, 'select last_id from troupe_ledger where stage = ? and key in (select value from json_each(?))')
    .all(stage, JSON.stringify(messages.map((m) => m.key))) as Array<{ last_id: string | null }>;
  const ids = new Set(messages.map((m) => m.id));
  return new Set(rows.map((r) => r.last_id).filter((id): id is string => id !== null && ids.has(id)));
}

/**
 * Adds the key of every ledger row at `stage` to `filter` (see {@link appliedIds}), reading
 * them one at a time. Returns how many were added.
 */
export async function loadLedgerKeys(target: Store | EntityManager, stage: string, filter: KeyFilter): Promise<number> {
  const db = await databaseOf(target);
  let n = 0;
  for (const row of db.prepare('select key from troupe_ledger where stage = ?').iterate(stage) as Iterable<{ key: string }>) {
    filter.add(row.key);
    n++;
  }
  return n;
}

/** Saves `cursor` (anything JSON can hold) under `name`, inside the caller's transaction. */
export async function saveCheckpoint(em: EntityManager, name: string, cursor: unknown): Promise<void> {
  const json = JSON.stringify(cursor);
  if (json === undefined) throw new TroupeError(codes.BAD_OPTION, `checkpoint ${name}: cursor must be JSON-serialisable`);
  await upsertRows(em, TroupeCheckpoint, [{ name, cursor: json }]);
}

/** The cursor last saved under `name`, or undefined if none was. */
export async function loadCheckpoint(target: Store | EntityManager, name: string): Promise<unknown | undefined> {
  const db = await databaseOf(target);
  const row = prepared(db, 'select cursor from troupe_checkpoint where name = ?').get(name) as { cursor: string } | undefined;
  return row === undefined ? undefined : JSON.parse(row.cursor);
}

/** Ledger row counts by stage, then status: `{ fetch: { done: 10, failed: 2 } }`. */
export async function ledgerCounts(target: Store | EntityManager): Promise<Record<string, Record<string, number>>> {
  const db = await databaseOf(target);
  const rows = prepared(db, 'select stage, status, count(*) as n from troupe_ledger group by stage, status').all() as
    Array<{ stage: string; status: string; n: number }>;
  const out: Record<string, Record<string, number>> = {};
  for (const r of rows) (out[r.stage] ??= {})[r.status] = r.n;
  return out;
}

/**
 * Which of `keys` already have status `done` at `stage`, so the Writer can skip replays.
 * Given an EntityManager inside a transaction, it sees that transaction's own writes.
 */
export async function isDone(target: Store | EntityManager, keys: readonly string[], stage: string): Promise<Set<string>> {
  if (keys.length === 0) return new Set();
  const db = await databaseOf(target);
  // One statement for any number of keys: the list travels as one JSON parameter.
  const rows = prepared(db,
    "select key from troupe_ledger where stage = ? and status = 'done' and key in (select value from json_each(?))",
  ).all(stage, JSON.stringify(keys)) as Array<{ key: string }>;
  return new Set(rows.map((r) => r.key));
}

function databaseOf(target: Store | EntityManager): Promise<SqliteDatabase> {
  return target instanceof Store ? Promise.resolve(target.db) : nativeDatabase(target);
}
