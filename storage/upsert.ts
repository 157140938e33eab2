/**
 * The Writer's fast write path: upserts by key, compiled from MikroORM metadata and run as
 * cached prepared statements on the better-sqlite3 handle that backs the ORM connection.
 *
 * Why not `em.upsertMany` or the query builder: measured by `storage/bench-store.ts` (100k
 * rows of ~230 bytes, transactions of 1,000, 2 shared cores, best of 3), with raw
 * better-sqlite3 prepared inserts at 138–187k rows/s, this path plus the ledger row of each
 * item reached 65–73% of raw; `qb.insert().onConflict().merge()` plus the same ledger
 * 46–53%; `em.upsertMany` alone 15–16%. Building per-batch SQL and binding thousands of
 * parameters through Kysely costs more than the inserts themselves.
 *
 * What this path keeps from the ORM: the table and column names, identifier quoting, the
 * entity's primary key as the default conflict target, `onCreate`/`onUpdate` values and the
 * conversion of every value by the property's custom type (JSON, dates, booleans). It runs
 * on the same connection as the ORM, so inside `store.transaction()` (or `em.transactional`)
 * its rows commit or roll back with everything else in that transaction.
 *
 * Properties it cannot express as one bound column (relations, embeddables, composite
 * foreign keys, types whose SQL takes more than one parameter) make it fall back to the
 * ORM's query builder for that call, which is correct but slower.
 */

import type { EntityData, EntityManager, EntityMetadata, EntityName, EntityProperty } from '@mikro-orm/sqlite';
import { codes, TroupeError } from '../messages/errors.ts';

/** The subset of a better-sqlite3 `Database` troupe uses (the package ships no types). */
export interface SqliteDatabase {
  readonly name: string;
  readonly open: boolean;
  readonly readonly: boolean;
  readonly inTransaction: boolean;
  prepare(sql: string): SqliteStatement;
  exec(sql: string): unknown;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  close(): unknown;
}

/** The subset of a better-sqlite3 `Statement` troupe uses. */
export interface SqliteStatement {
  run(...params: unknown[]): { changes: number; lastInsertRowid: number | bigint };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  iterate(...params: unknown[]): IterableIterator<unknown>;
}

// SQLite's default limit on bound parameters is 32766; 64 rows per statement keeps far below
// it for any table and measured faster than one row per statement (fewer VM round trips).
const ROWS_PER_STATEMENT = 64;
const MAX_PARAMS = 32_766;

const natives = new WeakMap<object, SqliteDatabase>();
const statements = new WeakMap<SqliteDatabase, Map<string, SqliteStatement>>();

/**
 * The better-sqlite3 handle behind an EntityManager's connection. Statements run on it join
 * whatever transaction that connection has open.
 */
export async function nativeDatabase(em: EntityManager): Promise<SqliteDatabase> {
  const connection = em.getConnection();
  let db = natives.get(connection);
  if (db === undefined || !db.open) {
    db = (await connection.getNativeClient()) as SqliteDatabase;
    natives.set(connection, db);
  }
  return db;
}

/** Prepares `sql` once per database handle. */
export function prepared(db: SqliteDatabase, sql: string): SqliteStatement {
  let cache = statements.get(db);
  if (cache === undefined) statements.set(db, cache = new Map());
  let st = cache.get(sql);
  if (st === undefined) cache.set(sql, st = db.prepare(sql));
  return st;
}

interface Column {
  prop: EntityProperty;
  field: string;
  /** Filled by `onCreate` when a row leaves it out; not overwritten on conflict. */
  createOnly: boolean;
  /** SQL for the bound value: `?`, or the type's wrapping of it. */
  placeholder: string;
  toDb: (value: unknown) => unknown;
}

/**
 * Inserts `rows` into `entity`'s table, updating the listed columns of rows whose
 * `conflictKeys` already exist (`INSERT … ON CONFLICT (…) DO UPDATE`). Replays are harmless:
 * the same rows twice leave one row each. Columns come from the union of the rows' keys;
 * a row missing a key that another row has gets the property's default or NULL. Properties
 * with `onCreate` that the rows leave out are filled on insert and kept on conflict; those
 * with `onUpdate` are refreshed on every upsert.
 *
 * Call it inside `store.transaction()` with that transaction's EntityManager: outside a
 * transaction every statement commits on its own, and an EntityManager outside the
 * transaction another caller has open is refused. It bypasses the unit of work: entities
 * already loaded into `em` do not see these values (query again, or use a fresh fork).
 * Returns the number of rows written.
 *
 * @param conflictKeys property names forming a unique key. @default the primary key
 */
export async function upsertRows<E extends object>(
  em: EntityManager,
  entity: EntityName<E>,
  rows: ReadonlyArray<EntityData<E>>,
  conflictKeys?: ReadonlyArray<keyof E & string>,
): Promise<number> {
  if (rows.length === 0) return 0;
  const db = await writableDatabase(em, 'upsertRows');
  const meta = em.getMetadata(entity);
  const keys: readonly string[] = conflictKeys ?? (meta.primaryKeys as string[]);
  if (keys.length === 0) throw new TroupeError(codes.BAD_OPTION, `upsertRows: ${meta.className} has no primary key and no conflictKeys were given`);
  const names = new Set<string>();
  for (const row of rows) for (const k in row) if (Object.hasOwn(row, k)) names.add(k);
  const columns = compileColumns(em, meta, names, keys);
  if (columns === undefined) return upsertWithQueryBuilder(em, entity, rows, keys);

  const q = (id: string) => em.getPlatform().quoteIdentifier(id);
  const updates = columns
    .filter((c) => !c.createOnly && !keys.includes(c.prop.name))
    .map((c) => `${q(c.field)} = excluded.${q(c.field)}`);
  return runUpsert(db, {
    table: q(meta.tableName),
    columns: columns.map((c) => q(c.field)),
    placeholders: columns.map((c) => c.placeholder),
    conflict: keys.map((k) => q(fieldOf(meta, k))),
    updates,
  }, rows, (params, at, row) => writeRow(em, params, at, columns, row as Record<string, unknown>));
}

/** A compiled `INSERT … ON CONFLICT DO UPDATE`, its identifiers already quoted. */
export interface UpsertPlan {
  table: string;
  columns: readonly string[];
  /** Per column: `?` or an SQL expression holding exactly one `?`. @default all `?` */
  placeholders?: readonly string[];
  conflict: readonly string[];
  /** `col = excluded.col` assignments; none means `do nothing`. */
  updates: readonly string[];
}

/**
 * Runs `plan` over `rows` as cached prepared statements of up to 64 rows each; `bind` writes
 * one row's parameters in column order into `params` from index `at` and returns the index
 * after them. Returns the number of rows.
 */
export function runUpsert<R>(db: SqliteDatabase, plan: UpsertPlan, rows: ReadonlyArray<R>, bind: (params: unknown[], at: number, row: R) => number): number {
  const tuple = `(${(plan.placeholders ?? plan.columns.map(() => '?')).join(', ')})`;
  const head = `insert into ${plan.table} (${plan.columns.join(', ')}) values `;
  const tail = ` on conflict (${plan.conflict.join(', ')}) ${plan.updates.length > 0 ? `do update set ${plan.updates.join(', ')}` : 'do nothing'}`;
  const width = plan.columns.length;
  const perStatement = Math.max(1, Math.min(ROWS_PER_STATEMENT, Math.floor(MAX_PARAMS / width)));
  // One parameter array and one statement for every full chunk: the Writer runs this for
  // every batch, and growing an array per chunk was a tenth of what it allocated per item.
  const sql = (n: number) => head + Array(n).fill(tuple).join(', ') + tail;
  const full = rows.length >= perStatement ? prepared(db, sql(perStatement)) : undefined;
  const params: unknown[] = new Array(Math.min(rows.length, perStatement) * width).fill(null);
  for (let i = 0; i < rows.length; i += perStatement) {
    const n = Math.min(perStatement, rows.length - i);
    const values = n === perStatement || i === 0 ? params : new Array(n * width).fill(null);
    let at = 0;
    for (let j = i; j < i + n; j++) at = bind(values, at, rows[j]!);
    (n === perStatement ? full! : prepared(db, sql(n))).run(values);
  }
  return rows.length;
}

/**
 * The native handle for writing with `em`: refused when the connection is inside a
 * transaction that is not `em`'s, since the rows would commit or roll back with it.
 */
export async function writableDatabase(em: EntityManager, what: string): Promise<SqliteDatabase> {
  const db = await nativeDatabase(em);
  if (db.inTransaction && !em.isInTransaction()) {
    throw new TroupeError(codes.BAD_OPTION, `${what}: pass the EntityManager of the open transaction (store.transaction)`);
  }
  return db;
}

function writeRow(em: EntityManager, params: unknown[], at: number, columns: Column[], row: Record<string, unknown>): number {
  for (const c of columns) {
    let value = row[c.prop.name];
    if (value === undefined) {
      if (c.prop.onUpdate !== undefined && !c.createOnly) value = c.prop.onUpdate(row, em);
      else if (c.prop.onCreate !== undefined) value = c.prop.onCreate(row, em);
      else value = c.prop.default ?? null;
    }
    params[at++] = value === null || value === undefined ? null : c.toDb(value);
  }
  return at;
}

/** Column plan for the rows' properties plus unset `onCreate`/`onUpdate` ones; undefined when unsupported. */
function compileColumns(em: EntityManager, meta: EntityMetadata, names: Set<string>, keys: readonly string[]): Column[] | undefined {
  const platform = em.getPlatform();
  const columns: Column[] = [];
  for (const key of keys) if (!meta.properties[key as never]) {
    throw new TroupeError(codes.BAD_OPTION, `upsertRows: ${meta.className} has no property ${key}`);
  }
  for (const prop of Object.values(meta.properties) as EntityProperty[]) {
    const given = names.has(prop.name);
    const generated = prop.onCreate !== undefined || prop.onUpdate !== undefined;
    if (!given && !generated) continue;
    if (prop.persist === false) continue;
    if (prop.kind !== 'scalar' || prop.fieldNames.length !== 1 || prop.embedded !== undefined) return undefined;
    const type = prop.customType;
    // Types such as JSON wrap the bound value in SQL (a cast on some databases).
    const placeholder = type?.convertToDatabaseValueSQL?.('?', platform) ?? '?';
    if ((placeholder.match(/\?/g) ?? []).length !== 1) return undefined;
    const convert = type === undefined
      ? (v: unknown) => v
      : (v: unknown) => type.convertToDatabaseValue(v, platform, { key: prop.name, mode: 'query-data' });
    columns.push({
      prop,
      field: prop.fieldNames[0]!,
      createOnly: !given && prop.onUpdate === undefined,
      placeholder,
      toDb: (v) => bindable(convert(v)),
    });
  }
  for (const name of names) if (!columns.some((c) => c.prop.name === name) && !meta.properties[name as never]) {
    throw new TroupeError(codes.BAD_OPTION, `upsertRows: ${meta.className} has no property ${name}`);
  }
  return columns;
}

/** better-sqlite3 binds numbers, strings, bigints, buffers and null only. */
function bindable(v: unknown): unknown {
  if (v instanceof Date) return v.getTime();
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) return JSON.stringify(v);
  return v;
}

function fieldOf(meta: EntityMetadata, prop: string): string {
  return (meta.properties[prop as never] as EntityProperty).fieldNames[0]!;
}

async function upsertWithQueryBuilder<E extends object>(
  em: EntityManager, entity: EntityName<E>, rows: ReadonlyArray<EntityData<E>>, keys: readonly string[],
): Promise<number> {
  await em.createQueryBuilder(entity).insert(rows as never).onConflict(keys as never).merge().execute('run');
  return rows.length;
}
