// Runs the numbers fixture (test/fixtures/numbers.ts) through the real `troupe` CLI and
// reads what its Writer left in the job's database.
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { troupe, type CliRun } from './cli.ts';

export const FIXTURE = 'test/fixtures/numbers.ts';

/** `troupe start test/fixtures/numbers.ts --out OUT [--nats URL] ...args` as pipeline `pipeline`. */
export function startNumbers(pipeline: string, out: string, args: string[], opts: { nats?: string; env?: Record<string, string> } = {}): CliRun {
  const nats = opts.nats ? ['--nats', opts.nats] : [];
  return troupe(['start', FIXTURE, '--out', out, ...nats, '--progress', 'none', ...args],
    { NUMBERS_PIPELINE: pipeline, ...opts.env });
}

export interface Squares {
  /** Rows in the table. */
  count: number;
  /** Applications in total (a row applied twice counts 2). */
  writes: number;
  /** Most applications of one row. */
  maxWrites: number;
  /** Numbers 1..n missing from the table. */
  missing: number[];
}

/** What the fixture's Writer committed so far (all zero before the table exists). */
export function squares(out: string, pipeline: string, n = 0): Squares {
  const path = join(out, `${pipeline}.db`);
  if (!existsSync(path)) return { count: 0, writes: 0, maxWrites: 0, missing: [] };
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    const table = db.prepare("select 1 from sqlite_master where type = 'table' and name = 'square'").get();
    if (!table) return { count: 0, writes: 0, maxWrites: 0, missing: [] };
    const r = db.prepare('select count(*) as count, coalesce(sum(writes), 0) as writes, coalesce(max(writes), 0) as maxWrites from square').get() as Squares;
    const have = new Set((db.prepare('select n from square').all() as Array<{ n: number }>).map((x) => x.n));
    const missing: number[] = [];
    for (let i = 1; i <= n; i++) if (!have.has(i)) missing.push(i);
    return { ...r, missing };
  } finally {
    db.close();
  }
}

/** Runs a read-only query on the job's database. */
export function query<R>(out: string, pipeline: string, sql: string, ...params: unknown[]): R[] {
  const db = new Database(join(out, `${pipeline}.db`), { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as R[];
  } finally {
    db.close();
  }
}

/** Removes the crash marks the fixture leaves in the temp folder for `pipeline`. */
export async function removeCrashMarks(pipeline: string): Promise<void> {
  for (const name of await readdir(tmpdir())) {
    if (name.startsWith(`troupe-numbers-${pipeline}-`)) await rm(join(tmpdir(), name), { recursive: true, force: true });
  }
}

/** stdout and stderr of a run, for assertion messages. */
export function output(run: CliRun): string {
  return `--- stderr\n${run.stderr}\n--- stdout\n${run.stdout}`;
}

/** `promise`, or a rejection naming `what` once `ms` pass (so a stuck job fails its test, not the run). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    })]);
  } finally {
    clearTimeout(timer);
  }
}
