import test from 'ava';
import { Objm } from '@nats-io/obj';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BODY_REF_THRESHOLD } from '../messages/bodies.ts';
import { deadLetters, pipelineStatus } from '../actors/monitor.ts';
import { troupe } from './helpers/cli.ts';
import { maxInWindow } from './helpers/http.ts';
import { startNats, tempDir, uniqueName, until, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
let server: Server;
let base: string;
const hits: Array<{ path: string; at: number; pid: number }> = [];
const bodyOf = (i: number) => Buffer.alloc(i % 2 === 0 ? BODY_REF_THRESHOLD * 3 : 1_000, `body ${i} `);

test.before(async () => {
  nats = await startNats();
  server = createServer((req, res) => {
    hits.push({ path: req.url ?? '', at: Date.now(), pid: Number(req.headers['x-troupe-pid']) });
    const i = Number(/^\/item\/(\d+)$/.exec(req.url ?? '')?.[1]);
    if (i === 7) { res.writeHead(404).end('no such item'); return; }
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(bodyOf(i));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
test.after.always(async () => {
  server?.close();
  await nats?.stop();
});

test.serial('fetcher - bodies above the threshold travel by object-store reference and arrive intact; a 404 is dead-lettered once', async (t) => {
  const pipeline = uniqueName('fetch');
  const out = await tempDir();
  t.teardown(() => rm(out, { recursive: true, force: true }));
  const job = troupe(['start', 'test/fixtures/fetch-pipeline.ts', '--nats', nats.server.url, '--out', out, '--progress', 'none',
    '--base', base, '--count', '12', '--rate', '20'], { FETCH_PIPELINE: pipeline });
  t.is(await job.exited, 0, job.stderr);

  const db = new Database(join(out, `${pipeline}.db`), { readonly: true });
  const rows = db.prepare('select key, status, size, sha256 from body order by key').all() as Array<{ key: string; size: number; sha256: string }>;
  db.close();
  t.is(rows.length, 11, 'every item but the 404');
  for (const r of rows) {
    const body = bodyOf(Number(r.key.slice('item-'.length)));
    t.is(r.size, body.byteLength, r.key);
    t.is(r.sha256, createHash('sha256').update(body).digest('hex'), r.key);
  }
  t.true(rows.some((r) => r.size > BODY_REF_THRESHOLD), 'some bodies were above the threshold');
  const bucket = await new Objm(nats.nc).open(`troupe-${pipeline}-bodies`);
  const stored = [];
  for (const info of await bucket.list()) stored.push(info.name);
  t.is(stored.length, 6, 'the large bodies went through the object store');

  const letters = await deadLetters(nats.nc, pipeline, 'list') as Array<{ stage: string; key: string; error: { code: string; message: string } }>;
  t.deepEqual(letters.map((l) => [l.stage, l.key, l.error.code]), [['fetch', 'item-7', 'TROUPE_HTTP']]);
  t.regex(letters[0]!.error.message, /404/);
  t.is(hits.filter((h) => h.path === '/item/7').length, 1, 'a 404 is not retried');
});

test.serial('fetcher - the per-origin rate limit holds at the server across a job', async (t) => {
  const pipeline = uniqueName('rate');
  const out = await tempDir();
  t.teardown(() => rm(out, { recursive: true, force: true }));
  const from = hits.length;
  const job = troupe(['start', 'test/fixtures/fetch-pipeline.ts', '--nats', nats.server.url, '--out', out, '--progress', 'none',
    '--base', base, '--count', '30', '--rate', '10'], { FETCH_PIPELINE: pipeline });
  t.is(await job.exited, 0, job.stderr);
  const times = hits.slice(from).map((h) => h.at).sort((a, b) => a - b);
  t.true(times.length >= 30);
  // Token bucket of 10/s with burst 1: any one-second window holds at most 10 + 1 requests
  // (one extra for arrival jitter of a request sent at the window's edge).
  const worst = maxInWindow(times, 1000);
  t.true(worst <= 12, `${worst} requests in one second`);
  t.true(times[times.length - 1]! - times[0]! >= 2_500, 'thirty requests at 10/s take about three seconds');
});

test.serial('fetcher - a troupe worker that adds Fetchers takes a share of the rate limit instead of adding to it', async (t) => {
  const pipeline = uniqueName('share');
  const [out, workerOut] = await Promise.all([tempDir(), tempDir()]);
  t.teardown(() => Promise.all([rm(out, { recursive: true, force: true }), rm(workerOut, { recursive: true, force: true })]).then(() => undefined));
  const from = hits.length;
  const params = ['--base', base, '--count', '160', '--rate', '10'];
  // Two Fetchers here and two in the worker: without sharing, each process would divide the
  // limit by its own two and the server would see 20/s while both run.
  const job = troupe(['start', 'test/fixtures/fetch-pipeline.ts', '--nats', nats.server.url, '--out', out, '--progress', 'none',
    '--replicas', 'fetch=2', ...params], { FETCH_PIPELINE: pipeline });
  t.teardown(() => { job.child.kill('SIGKILL'); });
  await until(() => hits.length - from >= 10 || job.child.exitCode !== null, 60_000, 'the first requests');
  const worker = troupe(['worker', 'test/fixtures/fetch-pipeline.ts', '--nats', nats.server.url, '--out', workerOut, '--progress', 'none',
    '--replicas', 'fetch=2', ...params], { FETCH_PIPELINE: pipeline });
  t.teardown(() => { worker.child.kill('SIGKILL'); });
  // troupe status shows the share: four Fetchers, each at a quarter of the limit.
  const fetchers = await until(async () => {
    const status = await pipelineStatus(nats.nc, pipeline, 1_200);
    const f = status.replicas.filter((r) => r.role === 'fetcher');
    return f.length === 4 && f.every((r) => r.rateShare === 4) ? f : job.child.exitCode !== null ? f : undefined;
  }, 30_000, 'four Fetchers sharing the limit in troupe status');
  t.deepEqual(fetchers!.map((r) => r.rateShare), [4, 4, 4, 4], JSON.stringify(fetchers));
  t.is(await job.exited, 0, job.stderr);
  worker.child.kill('SIGINT');
  await worker.exited;

  const mine = hits.slice(from).filter((h) => h.path.startsWith('/item/'));
  const byWorker = mine.filter((h) => h.pid === worker.child.pid).length;
  t.true(byWorker > 0, `the worker made ${byWorker} of ${mine.length} requests: ${worker.stderr}`);
  // Two-second windows: a loaded box delays some requests (they arrive bunched with later
  // ones), which one-second windows at 10/s cannot tell from a broken limit. Shared, the
  // Fetchers stay near 20 per two seconds (each one's burst and a little jitter on top);
  // unshared, the worker's two would add another 20.
  const times = mine.map((h) => h.at).sort((a, b) => a - b);
  const worst2 = maxInWindow(times, 2000);
  const worst = maxInWindow(times, 1000);
  t.true(worst2 <= 26, `${worst2} requests in two seconds (limit 10/s); ${worst} in one`);
  // Requests per second from the job (j) and the worker (w), for the log.
  const perSecond = new Map<number, string>();
  for (const h of mine) {
    const s = Math.floor((h.at - mine[0]!.at) / 1000);
    perSecond.set(s, (perSecond.get(s) ?? '') + (h.pid === worker.child.pid ? 'w' : 'j'));
  }
  t.log(`worker: ${byWorker} of ${mine.length} requests; at most ${worst} in one second, ${worst2} in two; ${[...perSecond].map(([s, v]) => `${s}:${v}`).join(' ')}`);
});
