import test from 'ava';
import { Objm } from '@nats-io/obj';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BODY_REF_THRESHOLD } from '../messages/bodies.ts';
import { deadLetters } from '../actors/monitor.ts';
import { troupe } from './helpers/cli.ts';
import { startNats, tempDir, uniqueName, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
let server: Server;
let base: string;
const hits: Array<{ path: string; at: number }> = [];
const bodyOf = (i: number) => Buffer.alloc(i % 2 === 0 ? BODY_REF_THRESHOLD * 3 : 1_000, `body ${i} `);

test.before(async () => {
  nats = await startNats();
  server = createServer((req, res) => {
    hits.push({ path: req.url ?? '', at: Date.now() });
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
  let worst = 0;
  for (let i = 0; i < times.length; i++) worst = Math.max(worst, times.filter((x) => x >= times[i]! && x < times[i]! + 1000).length);
  t.true(worst <= 12, `${worst} requests in one second`);
  t.true(times[times.length - 1]! - times[0]! >= 2_500, 'thirty requests at 10/s take about three seconds');
});
