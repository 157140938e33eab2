// Fault tests of the Writer: the real `troupe` CLI as a child process against a real
// nats-server, asserting on the job's SQLite file and output folder afterwards.
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readLease } from '../storage/mod.ts';
import { troupe } from './helpers/cli.ts';
import { startNats, tempDir, uniqueName, until, type TestNats } from './helpers/nats.ts';
import { output, query, squares, startNumbers, within } from './helpers/numbers.ts';

// The jobs run one at a time (test.serial), see runtime.test.ts.
let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

/** A fresh folder, removed after the test. */
async function tempFolder(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await tempDir('troupe-writer-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file under `dir`, relative to it. */
async function files(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1));
}

test.serial('writer - kill -9 of troupe start mid-job, then a restart: every key once, no temp file left', async (t) => {
  const pipeline = uniqueName('kill');
  const out = await tempFolder(t);
  const N = 3000;
  // Short ack waits: what the killed process held is redelivered within seconds on restart.
  const env = { NUMBERS_ACK_WAIT_MS: '3000', NUMBERS_WRITE_ACK_WAIT_MS: '3000' };
  const args = ['--count', String(N), '--delayMs', '2', '--files', '1'];
  const first = startNumbers(pipeline, out, args, { nats: nats.server.url, env });
  t.teardown(() => { first.child.kill('SIGKILL'); });
  await until(() => squares(out, pipeline).count >= 300 || first.child.exitCode !== null, 90_000, 'rows being written');
  first.child.kill('SIGKILL');
  t.is(await within(first.exited, 10_000, 'the killed job'), 'SIGKILL');
  const killed = squares(out, pipeline, N);
  t.true(killed.count < N, `killed with ${killed.count} of ${N} rows written`);

  const second = startNumbers(pipeline, out, args, { nats: nats.server.url, env });
  t.teardown(() => { second.child.kill('SIGKILL'); });
  t.is(await within(second.exited, 100_000, 'the restarted job'), 0, output(second));

  const final = squares(out, pipeline, N);
  t.is(final.count, N, 'every key is present');
  t.deepEqual(final.missing, []);
  const keys = query<{ n: number; k: number }>(out, pipeline, "select count(*) as n, count(distinct key) as k from troupe_ledger where stage = 'write' and status = 'done'")[0];
  t.deepEqual(keys, { n: N, k: N }, 'the ledger has each key once, done');
  // Effectively once: a batch committed but not acked before the kill comes back with the same
  // envelope ids and is skipped by the ledger; outputs the killed process published again
  // after restart carry the same run-scoped message ids and are deduplicated by the server.
  t.is(final.writes, N, `${final.writes - N} rows applied twice`);
  t.is(final.maxWrites, 1);
  t.log(`killed at ${killed.count} rows; ${final.writes - N} rows applied twice (max writes ${final.maxWrites})`);

  const all = await files(out);
  t.deepEqual(all.filter((f) => f.split('/').pop()!.startsWith('.troupe-tmp-')), [], 'no temp file left');
  const rows = all.filter((f) => f.startsWith('rows/'));
  t.is(rows.length, N, 'one file per row');
  const torn = rows.filter((f) => { const n = Number(f.slice(5, -4)); return readFileSync(join(out, f), 'utf8') !== `${n} ${n * n}\n`; });
  t.deepEqual(torn, [], 'no torn file');
});

test.serial('writer - a file write escaping the output folder is dead-lettered and the job finishes the rest', async (t) => {
  const pipeline = uniqueName('escape');
  const root = await tempFolder(t);
  const out = join(root, 'out');
  const N = 200;
  const job = startNumbers(pipeline, out, ['--count', String(N), '--escape', '42'], { nats: nats.server.url });
  t.teardown(() => { job.child.kill('SIGKILL'); });
  t.is(await within(job.exited, 90_000, 'the job'), 0, output(job));
  t.false(existsSync(join(root, 'escape.txt')), 'nothing was written outside the output folder');
  const final = squares(out, pipeline, N);
  t.deepEqual(final, { count: N - 1, writes: N - 1, maxWrites: 1, missing: [42] });

  const dead = troupe(['dead', pipeline, 'list', '--json', '--nats', nats.server.url]);
  t.is(await within(dead.exited, 30_000, 'troupe dead list'), 0, output(dead));
  const letters = JSON.parse(dead.stdout) as Array<{ stage: string; key: string; attempts: number; error: { code: string; message: string } }>;
  t.is(letters.length, 1, dead.stdout);
  t.like(letters[0], { stage: 'write', key: 'n42', attempts: 1, error: { code: 'TROUPE_PATH_ESCAPE' } });
  t.regex(letters[0]!.error.message, /path "\.\.\/escape\.txt" leaves the root: it must stay inside the output root/);
});

test.serial('writer - a second Writer for the same pipeline fails fast and names the lease holder', async (t) => {
  const pipeline = uniqueName('lease');
  const out1 = await tempFolder(t);
  const out2 = await tempFolder(t);
  const first = startNumbers(pipeline, out1, ['--count', '2000', '--delayMs', '100'], { nats: nats.server.url });
  t.teardown(() => { first.child.kill('SIGKILL'); });
  const lease = await until(async () => (await readLease(nats.nc, pipeline).catch(() => undefined)) ?? (first.child.exitCode !== null), 60_000, 'the Writer lease');
  t.like(lease, { pid: first.child.pid });

  const started = Date.now();
  const second = startNumbers(pipeline, out2, ['--count', '2000'], { nats: nats.server.url });
  t.teardown(() => { second.child.kill('SIGKILL'); });
  t.is(await within(second.exited, 60_000, 'the second job'), 1, output(second));
  t.log(`the second job failed in ${Date.now() - started} ms`);
  t.regex(second.stderr, /TROUPE_LEASE_HELD/);
  t.regex(second.stderr, new RegExp(`held by host \\S+ pid ${first.child.pid} since \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z`));
  t.false(existsSync(join(out2, `${pipeline}.db`)), 'the refused Writer did not open a database');
  t.is(first.child.exitCode, null, 'the first job runs on');

  first.child.kill('SIGINT');
  t.is(await within(first.exited, 60_000, 'the first job'), 0, output(first));
});

test.serial('writer - a restart after SIGINT resumes from the checkpoint without re-reading the source', async (t) => {
  const pipeline = uniqueName('resume');
  const dir = await tempFolder(t);
  const out = join(dir, 'out');
  const scanLog = join(dir, 'scan.log');
  const N = 1000;
  // A small generate stage: the Scanner is held back by backpressure, so SIGINT finds it mid-source.
  const env = { NUMBERS_GENERATE_MAX: '40' };
  const args = ['--count', String(N), '--delayMs', '40', '--scanLog', scanLog];
  const first = startNumbers(pipeline, out, args, { nats: nats.server.url, env });
  t.teardown(() => { first.child.kill('SIGKILL'); });
  await until(() => squares(out, pipeline).count > 0 || first.child.exitCode !== null, 60_000, 'the first rows');
  first.child.kill('SIGINT');
  t.is(await within(first.exited, 60_000, 'the interrupted job'), 0, output(first));
  const pages = () => readFileSync(scanLog, 'utf8').split('\n').filter(Boolean).map(Number);
  const firstRun = pages();
  t.true(Math.max(...firstRun) + 20 <= N, `the first run stopped before the end of the source (last page at ${Math.max(...firstRun)})`);

  const second = startNumbers(pipeline, out, args, { nats: nats.server.url, env });
  t.teardown(() => { second.child.kill('SIGKILL'); });
  t.is(await within(second.exited, 100_000, 'the resumed job'), 0, output(second));
  const secondRun = pages().slice(firstRun.length);
  const reread = secondRun.filter((p) => firstRun.includes(p));
  t.log(`first run read pages up to ${Math.max(...firstRun)}, the second resumed at ${secondRun[0]}; re-read: ${reread.join(', ') || 'none'}`);
  t.true(reread.length <= 1, `re-read pages: ${reread.join(', ')}`);
  t.deepEqual(reread, [], 'the checkpoint covers every page read');
  t.deepEqual(squares(out, pipeline, N), { count: N, writes: N, maxWrites: 1, missing: [] });
});
