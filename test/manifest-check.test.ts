// End to end: the manifest-check example run by the real `troupe` CLI (embedded nats-server)
// over a real directory tree, asserting on the manifest rows and the report it leaves behind.
import test from 'ava';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CheckReport } from '../examples/manifest-check/report.ts';
import { walkFiles } from '../examples/manifest-check/walk.ts';
import { tempDir, until } from './helpers/nats.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PIPELINE = 'examples/manifest-check/pipeline.ts';
const RUN_TIMEOUT_MS = 90_000;

const temps: string[] = [];
const children = new Set<number>();

test.after.always(async () => {
  // Each CLI runs in its own process group: end what a failed test left running.
  for (const pid of children) {
    try { process.kill(-pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  await Promise.all(temps.map((d) => rm(d, { recursive: true, force: true })));
});

async function temp(): Promise<string> {
  const dir = await tempDir('troupe-manifest-');
  temps.push(dir);
  return dir;
}

interface Exit { code: number | null; stderr: string }

/** Starts `troupe start` on the example; `exited` resolves at its end (it is killed past the timeout). */
function start(root: string, out: string, extra: string[] = []): { pid: number; exited: Promise<Exit> } {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.TROUPE_NATS_URL;
  const child = spawn(process.execPath, ['cli.ts', 'start', PIPELINE, '--root', root, '--out', out, '--progress', 'plain', ...extra],
    { cwd: ROOT, env, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child.pid!);
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  const exited = new Promise<Exit>((resolve) => {
    const timer = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, RUN_TIMEOUT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      children.delete(child.pid!);
      resolve({ code, stderr });
    });
  });
  return { pid: child.pid!, exited };
}

/** Runs `troupe start` on the example to its end. */
function check(root: string, out: string, extra: string[] = []): Promise<Exit> {
  return start(root, out, extra).exited;
}

/** A tree of `folders` × 4 subfolders × 25 files (500 by default). */
async function makeTree(folders = 5): Promise<{ root: string; files: string[] }> {
  const root = join(await temp(), 'tree');
  const files: string[] = [];
  for (let a = 0; a < folders; a++) {
    for (let b = 0; b < 4; b++) {
      const dir = join(root, `d${a}`, `s${b}`);
      await mkdir(dir, { recursive: true });
      for (let c = 0; c < 25; c++) {
        const rel = `d${a}/s${b}/f${c}.txt`;
        await writeFile(join(root, rel), `file ${rel}\n`.repeat(c + 1));
        files.push(rel);
      }
    }
  }
  return { root, files };
}

function rowCount(out: string): number {
  const path = join(out, 'manifest-check.db');
  if (!existsSync(path)) return 0;
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare('select count(*) as n from manifest').get() as { n: number } | undefined)?.n ?? 0;
  } catch {
    return 0; // not created yet
  } finally {
    db.close();
  }
}

function manifest(out: string): Array<{ path: string; size: number; sha256: string | null; epoch: number; status: string }> {
  const db = new Database(join(out, 'manifest-check.db'), { readonly: true });
  try {
    return db.prepare('select path, size, sha256, epoch, status from manifest order by path').all() as ReturnType<typeof manifest>;
  } finally {
    db.close();
  }
}

async function report(out: string): Promise<{ json: CheckReport; md: string }> {
  return {
    json: JSON.parse(await readFile(join(out, 'report.json'), 'utf8')) as CheckReport,
    md: await readFile(join(out, 'report.md'), 'utf8'),
  };
}

const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

test('manifest-check - a first check adds every file to the manifest with its hash', async (t) => {
  const { root, files } = await makeTree();
  const out = await temp();
  const run = await check(root, out);
  t.is(run.code, 0, run.stderr);

  const rows = manifest(out);
  t.deepEqual(rows.map((r) => r.path), [...files].sort());
  t.true(rows.every((r) => r.status === 'added' && r.epoch === 1));
  const sample = rows.find((r) => r.path === 'd3/s2/f17.txt')!;
  t.is(sample.sha256, await sha256(join(root, sample.path)));
  t.is(sample.size, 'file d3/s2/f17.txt\n'.length * 18);

  const { json, md } = await report(out);
  t.deepEqual(json.counts, { seen: 500, added: 500, changed: 0, unchanged: 0, unreadable: 0, missing: 0 });
  t.is(json.check, 1);
  t.is(json.previous, null);
  t.is(json.added.length, 500);
  t.is(json.instrumentation.hashedFiles, 500);
  t.true(json.instrumentation.durationMs > 0 && json.instrumentation.filesPerSecond > 0);
  t.true(json.instrumentation.rssStartBytes > 0 && json.instrumentation.rssPeakBytes >= json.instrumentation.rssEndBytes);
  t.regex(md, /\| added \| 500 \|/);
  t.regex(md, /first check/);
});

test('manifest-check - a second check reports exactly the changed, missing and added files', async (t) => {
  const { root } = await makeTree();
  const out = await temp();
  const first = await check(root, out);
  t.is(first.code, 0, first.stderr);

  const changed = ['d0/s0/f0.txt', 'd2/s1/f10.txt', 'd4/s3/f24.txt'];
  const removed = ['d1/s2/f5.txt', 'd3/s0/f19.txt'];
  const added = ['d0/new-a.txt', 'd2/s1/f10.txt.bak', 'd4/s9/deep/new-b.txt', 'top.txt'];
  for (const p of changed) await appendFile(join(root, p), 'one more line\n');
  for (const p of removed) await rm(join(root, p));
  for (const p of added) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), `new ${p}\n`);
  }
  const second = await check(root, out);
  t.is(second.code, 0, second.stderr);

  const { json, md } = await report(out);
  t.deepEqual(json.counts, { seen: 502, added: 4, changed: 3, unchanged: 495, unreadable: 0, missing: 2 });
  t.is(json.check, 2);
  t.is(json.previous?.check, 1);
  t.deepEqual(json.added.map((e) => e.path).sort(), [...added].sort());
  t.deepEqual(json.changed.map((e) => e.path).sort(), [...changed].sort());
  t.deepEqual(json.missing.map((e) => e.path).sort(), [...removed].sort());
  // Unchanged files (same size and mtime) take their hash from the manifest.
  t.is(json.instrumentation.hashedFiles, 7);
  t.is(json.instrumentation.hashSkipped, 495);
  for (const line of ['| added | 4 |', '| changed | 3 |', '| missing | 2 |', '| unchanged | 495 |']) t.true(md.includes(line), line);

  const rows = new Map(manifest(out).map((r) => [r.path, r]));
  t.is(rows.size, 504);
  for (const p of removed) t.is(rows.get(p)?.status, 'missing');
  for (const p of added) t.is(rows.get(p)?.status, 'added');
  for (const p of changed) {
    t.is(rows.get(p)?.status, 'changed');
    t.is(rows.get(p)?.sha256, await sha256(join(root, p)));
  }
  t.is([...rows.values()].filter((r) => r.status === 'unchanged' && r.epoch === 2).length, 495);
});

test('manifest-check - an interrupted check resumes after its cursor and counts every file once', async (t) => {
  const { root, files } = await makeTree(20); // 2,000 files
  const out = await temp();
  const first = start(root, out, ['--page', '50']);
  await until(() => rowCount(out) >= 100, 60_000, 'the first rows of the manifest');
  process.kill(first.pid, 'SIGINT');
  const stopped = await first.exited;
  t.is(stopped.code, 0, stopped.stderr);
  t.false(existsSync(join(out, 'report.json')), 'the check was interrupted before its end');

  const second = await check(root, out, ['--page', '50']);
  t.is(second.code, 0, second.stderr);
  t.regex(second.stderr, /check 1: resuming after d\d+\/s\d\/f\d+\.txt/);
  const { json } = await report(out);
  t.deepEqual(json.counts, { seen: 2000, added: 2000, changed: 0, unchanged: 0, unreadable: 0, missing: 0 });
  t.true(json.instrumentation.resumed);
  t.is(json.instrumentation.hashedFiles, 2000, 'hashes counted once per file');
  t.deepEqual(manifest(out).map((r) => r.path), [...files].sort());
});

test('manifest-check - a missing or non-directory --root is refused, naming it', async (t) => {
  const dir = await temp();
  const missing = join(dir, 'no-such-tree');
  const file = join(dir, 'a-file');
  await writeFile(file, 'not a folder\n');
  const [a, b] = await Promise.all([check(missing, join(dir, 'out-a')), check(file, join(dir, 'out-b'))]);
  t.is(a.code, 1);
  t.true(a.stderr.includes(`--root ${missing} does not exist`), a.stderr);
  t.is(b.code, 1);
  t.true(b.stderr.includes(`--root ${file} is not a directory`), b.stderr);
  // Refused before anything starts: not even the output folder is made.
  t.false(existsSync(join(dir, 'out-a')));
});

test('manifest-check - a bad --page or --hash is refused, naming it', async (t) => {
  const dir = await temp();
  const [page, hash] = await Promise.all([
    check(dir, join(dir, 'out-a'), ['--page', '0']),
    check(dir, join(dir, 'out-b'), ['--hash', 'some']),
  ]);
  t.is(page.code, 1);
  t.true(page.stderr.includes('--page must be an integer from 1 to 10000 (got "0")'), page.stderr);
  t.is(hash.code, 1);
  t.true(hash.stderr.includes('--hash must be "changed" or "all" (got "some")'), hash.stderr);
});

test('manifest-check - the walk is sorted per folder and resumes after a cursor without revisiting', async (t) => {
  const root = await temp();
  for (const p of ['a-c', 'a/b', 'a/c/d', 'a/c/e', 'b', 'B', 'z/y/x']) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), p);
  }
  const walk = async (after?: string) => {
    const paths: string[] = [];
    for await (const p of walkFiles(root, { after: after ?? null })) paths.push(p);
    return paths;
  };
  const all = await walk();
  // Depth first, code-unit order within a folder: a folder's files come before its next sibling.
  t.deepEqual(all, ['B', 'a/b', 'a/c/d', 'a/c/e', 'a-c', 'b', 'z/y/x']);
  for (let i = 0; i < all.length; i++) t.deepEqual(await walk(all[i]), all.slice(i + 1), `after ${all[i]}`);
  // A cursor whose file has gone still resumes at the right place.
  t.deepEqual(await walk('a/c/d0'), ['a/c/e', 'a-c', 'b', 'z/y/x']);
});
