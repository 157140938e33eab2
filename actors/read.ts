import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { dbPath, jobContext, type ReplicaEnv } from './env.ts';
import type { ReadContext } from './pipeline.ts';

export interface ReadHandle {
  ctx: ReadContext;
  close(): Promise<void>;
}

/**
 * Read-only access to the job's database for Scanners and Exporters. Reads never block the
 * Writer (WAL); a database the Writer has not created yet reads as empty.
 */
export async function readContext(env: ReplicaEnv, signal: AbortSignal): Promise<ReadHandle> {
  const path = dbPath(env.out, env.def.name);
  let db: Database.Database | undefined;
  const open = (): Database.Database | undefined => {
    if (!db && existsSync(path)) {
      db = new Database(path, { readonly: true, fileMustExist: true });
      db.pragma('busy_timeout = 5000');
    }
    return db;
  };
  const ctx: ReadContext = {
    ...jobContext(env, signal),
    async query<R>(sql: string, params: unknown[] = []): Promise<R[]> {
      const handle = open();
      if (!handle) return [];
      return handle.prepare(sql).all(...params) as R[];
    },
  };
  return { ctx, async close() { db?.close(); db = undefined; } };
}
