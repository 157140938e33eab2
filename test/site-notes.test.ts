// End to end: the flagship site-notes pipeline run by the real `troupe` CLI against a real
// HTTP server (and a real nats-server), asserting on the files and rows it leaves behind.
import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { notePath, scopeOf } from '../examples/site-notes/lib/mod.ts';
import { startNats, tempDir, until, type TestNats } from './helpers/nats.ts';
import { serveSite, type SiteServer } from './helpers/site.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PIPELINE = 'examples/site-notes/pipeline.ts';
const RUN_TIMEOUT_MS = 120_000;
const TEMP_PREFIX = '.troupe-tmp-';

// --- the CLI as a child process ----------------------------------------------------------

interface Run {
  pid: number;
  stdout: () => string;
  stderr: () => string;
  /** Resolves when the process exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILLs the CLI's whole process group (supervisor, its threads, its embedded nats-server). */
  killGroup(): void;
}

const running = new Set<Run>();

/**
 * Starts `node cli.ts <args>` in its own process group, so that a crash test can kill the
 * job together with its embedded nats-server, and cleanup can never leave one behind.
 */
function cli(args: string[]): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, TROUPE_PROGRESS_MS: '1000' };
  delete env.TROUPE_NATS_URL;
  const child = spawn(process.execPath, ['cli.ts', ...args], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s; });
  const run: Run = {
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    exited: new Promise((resolve) => child.once('close', (code, signal) => { running.delete(run); resolve({ code, signal }); })),
    killGroup() {
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
    },
  };
  running.add(run);
  return run;
}

/** Waits for a run to exit, killing it (and failing) after `timeoutMs`. */
async function finish(run: Run, what: string, timeoutMs = RUN_TIMEOUT_MS): Promise<{ code: number | null; ms: number }> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs); });
  const r = await Promise.race([run.exited, timedOut]);
  clearTimeout(timer);
  if (r === 'timeout') {
    run.killGroup();
    throw new Error(`${what} did not finish within ${timeoutMs} ms; stderr:\n${run.stderr().slice(-4000)}`);
  }
  return { code: r.code, ms: Date.now() - started };
}

function startJob(out: string, extra: string[] = []): Run {
  return cli(['start', PIPELINE, '--out', out, '--progress', 'plain', ...extra]);
}

/** Runs a whole job and asserts it exits 0. */
async function runJob(t: ExecutionContext, out: string, extra: string[] = []): Promise<number> {
  const run = startJob(out, extra);
  const { code, ms } = await finish(run, `troupe start ${extra.join(' ')}`);
  t.is(code, 0, `troupe start exited ${code}; stderr:\n${run.stderr().slice(-4000)}`);
  return ms;
}

// --- reading what a job left behind -------------------------------------------------------

/** Every file under `dir`, as paths relative to it (POSIX). */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true }).catch(() => [])) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(path);
      else out.push(path);
    }
  };
  await walk('');
  return out.sort();
}

async function notesIn(out: string): Promise<string[]> {
  return (await filesUnder(join(out, 'vault'))).filter((p) => p.endsWith('.md') && !posix.basename(p).startsWith(TEMP_PREFIX));
}

const OUTPUTS = ['index.md', 'export.jsonl', 'broken-links.md'];

/** The job's user-facing files (vault, index, export, broken links), by path. */
async function outputFiles(out: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const note of await filesUnder(join(out, 'vault'))) files.set(`vault/${note}`, await readFile(join(out, 'vault', note)));
  for (const f of OUTPUTS) files.set(f, await readFile(join(out, f)));
  return files;
}

/** Paths that are missing, extra or different in `b` compared to `a`. */
function differences(a: Map<string, Buffer>, b: Map<string, Buffer>): string[] {
  const diff: string[] = [];
  for (const [path, bytes] of a) {
    const other = b.get(path);
    if (!other) diff.push(`missing ${path}`);
    else if (!other.equals(bytes)) diff.push(`different ${path}`);
  }
  for (const path of b.keys()) if (!a.has(path)) diff.push(`extra ${path}`);
  return diff;
}

interface Rows {
  pages: Array<Record<string, unknown>>;
  links: Array<Record<string, unknown>>;
}

function tableRows(out: string): Rows {
  const db = new Database(join(out, 'site-notes.db'), { readonly: true, fileMustExist: true });
  try {
    return {
      pages: db.prepare('select * from page order by url').all() as Array<Record<string, unknown>>,
      links: db.prepare('select * from link order by from_url, to_url').all() as Array<Record<string, unknown>>,
    };
  } finally {
    db.close();
  }
}

// --- one shared site and one uninterrupted reference crawl of it --------------------------

let site: SiteServer | undefined;
const dirs: string[] = [];
const natsServers: TestNats[] = [];

async function siteServer(): Promise<SiteServer> {
  site ??= await serveSite();
  return site;
}

async function newOut(): Promise<string> {
  const dir = await tempDir('troupe-site-notes-');
  dirs.push(dir);
  return dir;
}

interface Reference {
  out: string;
  ms: number;
  /** Requests the server saw during the crawl. */
  requests: SiteServer['requests'];
  files: Map<string, Buffer>;
  rows: Rows;
}

let reference: Promise<Reference> | undefined;

/** The first, uninterrupted crawl of the site (run once, shared by the tests below). */
function referenceCrawl(t: ExecutionContext): Promise<Reference> {
  reference ??= (async () => {
    const server = await siteServer();
    const out = await newOut();
    const before = server.requests.length;
    const ms = await runJob(t, out, ['--url', server.start]);
    return { out, ms, requests: server.requests.slice(before), files: await outputFiles(out), rows: tableRows(out) };
  })();
  return reference;
}

test.after.always(async () => {
  for (const run of running) run.killGroup();
  await site?.close();
  for (const n of natsServers) await n.stop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

// The crawl tests share one HTTP server and compare runs with each other: they run one at a time.

test.serial('site-notes - crawl archives every in-scope page exactly once', async (t) => {
  const server = await siteServer();
  const { out, ms, requests } = await referenceCrawl(t);
  const { pages, missing } = server.site;
  const scope = scopeOf(server.start);
  const url = (path: string) => `${server.origin}${path}`;
  const fetching = (requests.at(-1)!.at - requests[0]!.at) / 1000;
  t.log(`${pages.size} pages (+${missing.length} missing): ${(ms / 1000).toFixed(1)} s from CLI start to exit (${(pages.size / (ms / 1000)).toFixed(1)} pages/s), ` +
    `${fetching.toFixed(1)} s from first to last request (${(requests.length / fetching).toFixed(1)} requests/s)`);

  // At the server: each in-scope path once, nothing outside the scope.
  const inScope = [...pages.keys(), ...missing].sort();
  const seen = new Map<string, number>();
  for (const r of requests) seen.set(r.path, (seen.get(r.path) ?? 0) + 1);
  t.deepEqual([...seen.keys()].sort(), inScope, 'requested paths are exactly the in-scope pages and missing targets');
  t.deepEqual([...seen].filter(([, n]) => n !== 1), [], 'no path requested twice');
  t.false(requests.some((r) => !r.path.startsWith('/docs/')), 'no out-of-scope request');

  // In the database: one done row per page, one broken row per missing target.
  const { pages: rows } = tableRows(out);
  t.deepEqual(rows.filter((r) => r.status === 'done').map((r) => r.url).sort(), [...pages.keys()].map(url).sort());
  t.deepEqual(rows.filter((r) => r.status === 'broken').map((r) => r.url).sort(), missing.map(url).sort());
  t.is(rows.length, pages.size + missing.length);

  // In the vault: one note per page, at its note path.
  const notes = await notesIn(out);
  const expected = [...pages.keys()].map((p) => notePath(url(p), scope)).sort();
  t.deepEqual(notes, expected);

  // Every relative link of every note resolves to a note.
  const noteSet = new Set(notes);
  let relativeLinks = 0;
  const dangling: string[] = [];
  for (const note of notes) {
    const text = await readFile(join(out, 'vault', note), 'utf8');
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^(https?|mailto):/i.test(target!)) continue;
      relativeLinks++;
      const file = posix.normalize(posix.join(posix.dirname(note), decodeURIComponent(target!.split('#')[0]!)));
      if (!noteSet.has(file)) dangling.push(`${note} → ${target}`);
    }
  }
  t.deepEqual(dangling, [], 'relative links that resolve to no note');
  t.true(relativeLinks > pages.size * 3, `${relativeLinks} relative links checked`);

  // broken-links.md names every missing target.
  const broken = await readFile(join(out, 'broken-links.md'), 'utf8');
  for (const gone of missing) t.true(broken.includes(`## <${url(gone)}>`), `broken-links.md lists ${gone}`);
  t.true(broken.includes(`${missing.length} broken targets.`));

  // index.md lists every note.
  const index = await readFile(join(out, 'index.md'), 'utf8');
  t.deepEqual(expected.filter((n) => !index.includes(`](vault/${n})`)), [], 'notes missing from index.md');
  t.true(index.includes(`${pages.size} pages.`));

  // export.jsonl: one object per page with url, title, an existing vault path and its links.
  const lines = (await readFile(join(out, 'export.jsonl'), 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l) as
    { url: string; title: string; path: string; links: string[] });
  t.is(lines.length, pages.size);
  t.deepEqual(lines.map((l) => l.url).sort(), [...pages.keys()].map(url).sort());
  for (const l of lines) {
    const page = pages.get(new URL(l.url).pathname)!;
    t.is(l.title, page.title);
    t.is(l.path, notePath(l.url, scope));
    t.true(existsSync(join(out, 'vault', l.path)), `${l.path} exists`);
    t.deepEqual(page.links.map(url).filter((u) => !l.links.includes(u)), [], `export links of ${l.url}`);
  }
});

test.serial('site-notes - a re-run on the same --out is incremental and changes no byte', async (t) => {
  const server = await siteServer();
  const first = await referenceCrawl(t);
  const before = server.requests.length;
  const ms = await runJob(t, first.out, ['--url', server.start]);
  const again = server.requests.slice(before);
  t.log(`re-run of ${server.site.pages.size} pages in ${(ms / 1000).toFixed(1)} s`);

  const pages = again.filter((r) => server.site.pages.has(r.path));
  t.is(pages.length, server.site.pages.size, 'every page is checked once');
  t.deepEqual(pages.filter((r) => !r.conditional || r.status !== 304).map((r) => `${r.path} ${r.status}`), [],
    'page requests that were not conditional or not answered 304');
  t.deepEqual(again.filter((r) => r.status === 200).map((r) => r.path), [], 'no full GET of any page');
  // Broken targets have no validator to send; they are checked again and are still 404.
  t.deepEqual(again.filter((r) => !server.site.pages.has(r.path)).map((r) => `${r.path} ${r.status}`).sort(),
    server.site.missing.map((p) => `${p} 404`).sort());

  t.deepEqual(differences(first.files, await outputFiles(first.out)), []);
});

test.serial('site-notes - SIGKILL mid-crawl, then start again: same files and rows as an uninterrupted run', async (t) => {
  const server = await siteServer();
  const ref = await referenceCrawl(t);
  const out = await newOut();
  server.delayMs = 1_000; // at most ~32 pages/s: the kill lands mid-crawl
  try {
    const run = startJob(out, ['--url', server.start]);
    const atKill = await until(async () => {
      if (running.has(run) === false) throw new Error(`the job exited before the kill; stderr:\n${run.stderr().slice(-4000)}`);
      const n = (await notesIn(out)).length;
      return n >= 30 ? n : 0;
    }, 60_000, '30 notes in the vault');
    run.killGroup();
    await finish(run, 'the killed job', 10_000);
    const left = (await notesIn(out)).length;
    t.true(left < server.site.pages.size, `killed with ${left} of ${server.site.pages.size} notes (${atKill} seen)`);
  } finally {
    server.delayMs = 0;
  }

  await runJob(t, out, ['--url', server.start]);
  t.deepEqual(differences(ref.files, await outputFiles(out)), [], 'files differ from the uninterrupted run');
  const rows = tableRows(out);
  t.deepEqual(rows.pages, ref.rows.pages);
  t.deepEqual(rows.links, ref.rows.links);
  t.deepEqual((await filesUnder(out)).filter((p) => posix.basename(p).startsWith(TEMP_PREFIX)), [], 'temp files left');
});

test('site-notes - npm start crawls the bundled sample site', async (t) => {
  const out = await newOut();
  await runJob(t, out);
  const notes = await notesIn(out);
  t.true(notes.length >= 10, `${notes.length} notes`);
  t.true(existsSync(join(out, 'index.md')));
  const lines = (await readFile(join(out, 'export.jsonl'), 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l) as { url: string; path: string });
  t.deepEqual(lines.map((l) => l.path).sort(), notes);
  t.true(lines.every((l) => l.url.startsWith('file:')));
});

async function testNats(): Promise<TestNats> {
  const n = await startNats();
  natsServers.push(n);
  return n;
}

test('monitoring - troupe tap prints decoded messages of a running job', async (t) => {
  const nats = await testNats();
  const tap = cli(['tap', 'site-notes', '--nats', nats.server.url, '--count', '5']);
  await until(() => tap.stderr().includes('troupe tap:'), 30_000, 'tap to subscribe');
  const job = startJob(await newOut(), ['--nats', nats.server.url]);
  const { code } = await finish(tap, 'troupe tap', 60_000);
  t.is(code, 0, tap.stderr());
  const lines = tap.stdout().trimEnd().split('\n');
  t.is(lines.length, 5, tap.stdout());
  for (const line of lines) {
    const m = /^(troupe\.site-notes\.\S+) (.*)$/.exec(line);
    t.truthy(m, line);
    t.notRegex(line, /<undecodable/);
    t.is(typeof JSON.parse(m![2]!), 'object', line);
  }
  t.is((await finish(job, 'the tapped job')).code, 0, job.stderr().slice(-4000));
});

test('monitoring - troupe dead lists a dead letter with its code and replays it', async (t) => {
  const nats = await testNats();
  const job = startJob(await newOut(), ['--nats', nats.server.url]);
  const workStream = 'TROUPE_site-notes_WORK_generate';
  await until(() => nats.jsm.streams.info(workStream).then(() => true, () => false), 60_000, 'the generate stream');
  // 0xc1 is never valid msgpack: the Generator cannot decode it and dead-letters it at once.
  const garbage = new Uint8Array([0xc1, 0xde, 0xad, 0xbe, 0xef]);
  // Retries: the stream can answer STREAM.INFO a moment before it listens (nats-server 2.9).
  await nats.js.publish('troupe.site-notes.work.generate', garbage, { retries: 20 });
  t.is((await finish(job, 'the job')).code, 0, job.stderr().slice(-4000));

  const list = cli(['dead', 'site-notes', 'list', '--json', '--nats', nats.server.url]);
  t.is((await finish(list, 'troupe dead list', 30_000)).code, 0, list.stderr());
  const letters = JSON.parse(list.stdout()) as Array<{ seq: number; stage: string; key: string | null; error: { code: string } }>;
  t.is(letters.length, 1, list.stdout());
  t.like(letters[0], { stage: 'generate', key: null, error: { code: 'TROUPE_BAD_MESSAGE' } });

  const before = await nats.jsm.consumers.info(workStream, 'troupe-generate');
  const replay = cli(['dead', 'site-notes', 'replay', String(letters[0]!.seq), '--nats', nats.server.url]);
  t.is((await finish(replay, 'troupe dead replay', 30_000)).code, 0, replay.stderr());
  t.regex(replay.stdout(), new RegExp(`replayed 1 dead letter\\(s\\): ${letters[0]!.seq}`));

  t.is((await nats.jsm.streams.info('TROUPE_site-notes_DEAD')).state.messages, 0, 'the dead stream lost it');
  const after = await nats.jsm.consumers.info(workStream, 'troupe-generate');
  t.is(after.num_pending, before.num_pending + 1, 'the generate consumer has it again');
  const info = await nats.jsm.streams.info(workStream);
  const back = await nats.jsm.streams.getMessage(workStream, { seq: info.state.last_seq });
  t.deepEqual([...(back?.data ?? [])], [...garbage], 'the same bytes');
});
