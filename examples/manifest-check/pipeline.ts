// manifest-check: check a directory tree against the manifest of it kept in the database —
// what was added, changed or went missing since the last check. No Fetcher: the Scanner
// walks the tree, the Generator hashes on its worker threads, the Writer keeps the manifest.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { pipeline as streamPipeline } from 'node:stream/promises';
import { definePipeline, type Item, type ScanContext } from '../../actors/mod.ts';
import { codes, TroupeError } from '../../messages/mod.ts';
import type { Cursor, FileRef, Known, WriteCommand } from './commands.ts';
import { CheckRun, ManifestChange, ManifestFile, Meta } from './entities.ts';
import { checkRoot, rootProblem, walkFiles } from './walk.ts';
import { applyCommands } from './write.ts';

const MAX_PAGE = 10_000;

function pageProblem(value: string): string | undefined {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_PAGE) return `--page must be an integer from 1 to ${MAX_PAGE} (got "${value}")`;
  return undefined;
}

function hashProblem(value: string): string | undefined {
  return value === 'changed' || value === 'all' ? undefined : `--hash must be "changed" or "all" (got "${value}")`;
}

/** Checks a parameter once more where it is used (the supervisor checked it at start). */
function param(params: Readonly<Record<string, string>>, name: string, problem: (v: string) => string | undefined): string {
  const value = params[name] ?? '';
  const p = problem(value);
  if (p) throw new TroupeError(codes.BAD_OPTION, p);
  return value;
}

/** The cursor to go on from: the checkpointed one, or the start of a new check (epoch). */
async function startCursor(ctx: ScanContext): Promise<Cursor> {
  const completed = Number((await ctx.query<{ value: string }>("select value from meta where key = 'completed_epoch'"))[0]?.value ?? 0);
  const saved = ctx.cursor as Cursor | undefined;
  if (saved && saved.epoch > completed) return saved;
  return { epoch: completed + 1, after: null, startedAt: Date.now(), rssStart: process.memoryUsage.rss(), pid: process.pid };
}

/** Stats a page of paths and attaches what the manifest knows of each. */
async function toItems(root: string, paths: string[], epoch: number, ctx: ScanContext): Promise<Array<Item<FileRef>>> {
  const [stats, rows] = await Promise.all([
    Promise.all(paths.map((p) => lstat(join(root, p)).catch(() => undefined))),
    ctx.query<Known & { path: string }>(
      `select path, size, mtime_ms as mtimeMs, sha256 from manifest where status != 'missing' and sha256 is not null and path in (${paths.map(() => '?').join(',')})`, paths),
  ]);
  const known = new Map(rows.map((r) => [r.path, { size: r.size, mtimeMs: r.mtimeMs, sha256: r.sha256 }]));
  const items: Array<Item<FileRef>> = [];
  paths.forEach((path, i) => {
    const st = stats[i];
    if (!st?.isFile()) return; // gone (or replaced) since the folder was listed: missing at the end
    const k = known.get(path);
    items.push({ key: path, body: { path, size: st.size, mtimeMs: st.mtimeMs, epoch, ...(k ? { known: k } : {}) } });
  });
  return items;
}

/** SHA-256 of a file, streamed. */
async function sha256File(path: string, signal: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  await streamPipeline(createReadStream(path, { highWaterMark: 256 * 1024 }), hash, { signal });
  return hash.digest('hex');
}

export default definePipeline<FileRef, WriteCommand>({
  name: 'manifest-check',
  params: {
    root: { description: 'the directory tree to check', required: true, check: rootProblem },
    page: { description: `files per Scanner page (1–${MAX_PAGE}); the cursor is checkpointed after each`, default: '500', check: pageProblem },
    hash: {
      description: '"changed": hash only files whose size or mtime differ from the manifest; "all": hash every file',
      default: 'changed', check: hashProblem,
    },
  },

  scanner: {
    // A sorted walk of the tree; the cursor is the last path emitted, so a restarted job
    // skips what it had queued without reading it again. Each check is one epoch.
    async *scan(ctx) {
      const root = checkRoot(ctx.params.root);
      const page = Number(param(ctx.params, 'page', pageProblem));
      const cursor = await startCursor(ctx);
      if (cursor.after) ctx.log(`check ${cursor.epoch}: resuming after ${cursor.after}`);
      let paths: string[] = [];
      const walk = walkFiles(root, { after: cursor.after, exclude: [ctx.out], onError: (p, err) => ctx.log(`skipping unreadable folder ${p}: ${err.message}`) });
      for await (const path of walk) {
        paths.push(path);
        if (paths.length < page) continue;
        const items = await toItems(root, paths, cursor.epoch, ctx);
        cursor.after = path;
        paths = [];
        yield { items, cursor: { ...cursor } };
      }
      if (paths.length > 0) {
        const items = await toItems(root, paths, cursor.epoch, ctx);
        cursor.after = paths[paths.length - 1]!;
        yield { items, cursor: { ...cursor } };
      }
      // Also checkpoints the epoch of an empty tree, which the Exporter reads at the end.
      yield { items: [], cursor: { ...cursor } };
    },
  },

  generator: {
    async generate({ key, body: f }, ctx): Promise<Array<Item<WriteCommand>>> {
      const base = { kind: 'file', path: f.path, size: f.size, mtimeMs: f.mtimeMs, epoch: f.epoch } as const;
      if (param(ctx.params, 'hash', hashProblem) === 'changed' && f.known && f.known.size === f.size && f.known.mtimeMs === f.mtimeMs) {
        return [{ key, body: { ...base, sha256: f.known.sha256, hashed: false } }];
      }
      try {
        const sha256 = await sha256File(join(resolve(ctx.params.root!), f.path), ctx.signal);
        return [{ key, body: { ...base, sha256, hashed: true } }];
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === 'ENOENT') return []; // deleted since the scan: the end of the check marks it missing
        if (e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EISDIR' || e.code === 'EIO') {
          return [{ key, body: { ...base, sha256: null, hashed: false, error: `${e.code}: ${e.message}` } }];
        }
        throw err;
      }
    },
  },

  writer: {
    entities: [ManifestFile, ManifestChange, CheckRun, Meta],
    apply: applyCommands,
  },

  exporter: {
    // When every file is written: close the check — mark what was not seen, write the report.
    async *finish(ctx) {
      const row = (await ctx.query<{ cursor: string }>("select cursor from troupe_checkpoint where name = 'scanner'"))[0];
      if (!row) return;
      const cursor = JSON.parse(row.cursor) as Cursor;
      yield { key: `finish:${cursor.epoch}`, body: {
        kind: 'finish', epoch: cursor.epoch, root: resolve(ctx.params.root!), startedAt: cursor.startedAt, rssStart: cursor.rssStart, pid: cursor.pid,
      } };
    },
  },

  roles: {
    // Hashing is CPU work: one replica (worker thread) per core, a few reads in flight each.
    generator: { replicas: Math.max(2, Math.min(8, availableParallelism())), maxInFlight: 8 },
  },
});
