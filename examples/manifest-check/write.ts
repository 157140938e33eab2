// The manifest-check Writer: the manifest, its per-check changes and, at the end, the report.
import type { Item, WriteTx } from '../../actors/mod.ts';
import { nativeDatabase, upsertRows, type SqliteDatabase } from '../../storage/mod.ts';
import type { WriteCommand } from './commands.ts';
import { ManifestChange, ManifestFile, Meta } from './entities.ts';
import { renderReport, type ChangeEntry, type CheckReport } from './report.ts';

type FileCommand = Extract<WriteCommand, { kind: 'file' }>;
type FinishCommand = Extract<WriteCommand, { kind: 'finish' }>;

/** Entries of each kind listed in report.json (the counts are always complete). */
export const LIST_LIMIT = 10_000;

/** Applies a batch of commands. Idempotent: a replayed command changes nothing. */
export async function applyCommands(batch: Array<Item<WriteCommand>>, tx: WriteTx): Promise<void> {
  const db = await nativeDatabase(tx.em);
  const files = batch.flatMap(({ body }) => (body.kind === 'file' ? [body] : []));
  if (files.length > 0) await applyFiles(files, db, tx);
  for (const { body } of batch) if (body.kind === 'finish') await finishCheck(body, db, tx);
}

async function applyFiles(files: FileCommand[], db: SqliteDatabase, tx: WriteTx): Promise<void> {
  const prevOf = db.prepare('select size, sha256, epoch, status from manifest where path = ?');
  const rows = [];
  const changes = [];
  const seen = new Set<string>();
  let hashed = 0;
  let hashedBytes = 0;
  for (const c of files) {
    const prev = prevOf.get(c.path) as { size: number; sha256: string | null; epoch: number; status: string } | undefined;
    // A replay (or a second copy in this batch): this check already has the file.
    if ((prev && prev.epoch >= c.epoch) || seen.has(c.path)) continue;
    seen.add(c.path);
    const status = c.error ? 'unreadable'
      : !prev || prev.status === 'missing' ? 'added'
      : prev.sha256 !== c.sha256 ? 'changed' : 'unchanged';
    rows.push({ path: c.path, size: c.size, mtimeMs: c.mtimeMs, sha256: c.sha256 ?? prev?.sha256 ?? null, epoch: c.epoch, status, error: c.error ?? null });
    if (status !== 'unchanged') {
      changes.push({ epoch: c.epoch, path: c.path, kind: status, size: c.size, prevSize: prev?.size ?? null, sha256: c.sha256, prevSha256: prev?.sha256 ?? null });
    }
    if (c.hashed) {
      hashed++;
      hashedBytes += c.size;
    }
  }
  if (rows.length === 0) return;
  await upsertRows(tx.em, ManifestFile, rows);
  if (changes.length > 0) await upsertRows(tx.em, ManifestChange, changes);
  db.prepare(`insert into check_run (epoch, files, hashed, hashed_bytes, rss_peak) values (?, ?, ?, ?, ?)
    on conflict (epoch) do update set files = files + excluded.files, hashed = hashed + excluded.hashed,
    hashed_bytes = hashed_bytes + excluded.hashed_bytes, rss_peak = max(rss_peak, excluded.rss_peak)`)
    .run(rows[0]!.epoch, rows.length, hashed, hashedBytes, process.memoryUsage.rss());
}

/** Ends a check: files it did not see are missing; the report is written; the epoch completes. */
async function finishCheck(f: FinishCommand, db: SqliteDatabase, tx: WriteTx): Promise<void> {
  const completed = Number((db.prepare("select value from meta where key = 'completed_epoch'").get() as { value: string } | undefined)?.value ?? 0);
  if (completed >= f.epoch) return;
  db.prepare(`insert into manifest_change (epoch, path, kind, prev_size, prev_sha256)
    select ?, path, 'missing', size, sha256 from manifest where epoch < ? and status != 'missing' on conflict do nothing`).run(f.epoch, f.epoch);
  db.prepare("update manifest set status = 'missing', epoch = ? where epoch < ? and status != 'missing'").run(f.epoch, f.epoch);

  const finishedAt = Date.now();
  const rssEnd = process.memoryUsage.rss();
  db.prepare(`insert into check_run (epoch, started_at, finished_at, rss_start, rss_end, rss_peak) values (?, ?, ?, ?, ?, ?)
    on conflict (epoch) do update set started_at = excluded.started_at, finished_at = excluded.finished_at,
    rss_start = excluded.rss_start, rss_end = excluded.rss_end, rss_peak = max(rss_peak, excluded.rss_peak)`)
    .run(f.epoch, f.startedAt, finishedAt, f.rssStart, rssEnd, Math.max(rssEnd, f.rssStart));
  const run = db.prepare('select files, hashed, hashed_bytes as hashedBytes, rss_peak as rssPeak from check_run where epoch = ?').get(f.epoch) as
    { files: number; hashed: number; hashedBytes: number; rssPeak: number };
  const previous = db.prepare('select epoch, finished_at as finishedAt from check_run where epoch < ? and finished_at is not null order by epoch desc limit 1')
    .get(f.epoch) as { epoch: number; finishedAt: number } | undefined;

  const counts = { seen: 0, added: 0, changed: 0, unchanged: 0, unreadable: 0, missing: 0 };
  for (const r of db.prepare('select status, count(*) as n from manifest where epoch = ? group by status').all(f.epoch) as Array<{ status: keyof typeof counts; n: number }>) {
    counts[r.status] = r.n;
  }
  counts.seen = counts.added + counts.changed + counts.unchanged + counts.unreadable;
  const changesOf = db.prepare(`select path, size, prev_size as prevSize, sha256, prev_sha256 as prevSha256 from manifest_change
    where epoch = ? and kind = ? order by path limit ?`);
  const durationMs = Math.max(1, finishedAt - f.startedAt);
  const report: CheckReport = {
    root: f.root,
    check: f.epoch,
    previous: previous ? { check: previous.epoch, finishedAt: new Date(previous.finishedAt).toISOString() } : null,
    startedAt: new Date(f.startedAt).toISOString(),
    finishedAt: new Date(finishedAt).toISOString(),
    counts,
    instrumentation: {
      durationMs,
      filesPerSecond: Math.round((counts.seen / durationMs) * 1000),
      hashedFiles: run.hashed,
      hashedBytes: run.hashedBytes,
      hashSkipped: counts.seen - counts.unreadable - run.hashed,
      rssStartBytes: f.rssStart,
      rssEndBytes: rssEnd,
      rssDeltaBytes: rssEnd - f.rssStart,
      rssPeakBytes: run.rssPeak,
      // The Writer runs in the `troupe start` process, as the Scanner does.
      resumed: f.pid !== process.pid,
    },
    listLimit: LIST_LIMIT,
    added: changesOf.all(f.epoch, 'added', LIST_LIMIT) as ChangeEntry[],
    changed: changesOf.all(f.epoch, 'changed', LIST_LIMIT) as ChangeEntry[],
    missing: changesOf.all(f.epoch, 'missing', LIST_LIMIT) as ChangeEntry[],
    unreadable: db.prepare("select path, error from manifest where epoch = ? and status = 'unreadable' order by path limit ?").all(f.epoch, LIST_LIMIT) as CheckReport['unreadable'],
  };
  await tx.files.write('report.json', `${JSON.stringify(report, null, 2)}\n`);
  await tx.files.write('report.md', renderReport(report));
  await upsertRows(tx.em, Meta, [{ key: 'completed_epoch', value: String(f.epoch) }]);
  tx.log(`check ${f.epoch}: ${counts.added} added, ${counts.changed} changed, ${counts.missing} missing, ${counts.unchanged} unchanged — report.md`);
}
