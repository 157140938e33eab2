// Fetchers dividing a pipeline's rate limits (actors/fetcher/share.ts), over a real nats-server:
// each LimitShare below stands for one Fetcher replica, possibly in another process.
import test from 'ava';
import { connect } from '@nats-io/transport-node';
import { WINDOW_MS } from '../actors/fetcher/limits.ts';
import { LimitShare, type LimitShareOptions } from '../actors/fetcher/share.ts';
import { startNats, uniqueName, until, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

const FAST: LimitShareOptions = { collectMs: 100, announceMs: 100, expireMs: 500 };

function share(t: { teardown(fn: () => void): void }, pipeline: string, name: string, options: LimitShareOptions = {}) {
  const changes: number[] = [];
  const s = new LimitShare(nats.nc, pipeline, name, (n) => changes.push(n), { ...FAST, ...options });
  t.teardown(() => s.close());
  return { s, changes };
}

test('share - a newcomer makes the others lower their share at once, and waits a rate window before its first request', async (t) => {
  const pipeline = uniqueName();
  const a = share(t, pipeline, 'a');
  let began = performance.now();
  await a.s.start();
  t.is(a.s.share, 1);
  t.true(performance.now() - began < WINDOW_MS, 'alone: no window to wait for');

  const b = share(t, pipeline, 'b');
  began = performance.now();
  await b.s.start();
  // a ran at the whole limit until it heard b: b waits until a's last second is at half rate.
  t.true(performance.now() - began >= WINDOW_MS, `b started after ${Math.round(performance.now() - began)} ms`);
  t.is(b.s.share, 2);
  t.is(a.s.share, 2);
  t.deepEqual(a.changes, [2]);

  b.s.close(); // bye: a takes the whole limit back at once
  await until(() => a.s.share === 1, 2_000, 'a back to the whole limit');
});

test('share - Fetchers a supervisor starts together know their count and do not wait; one that dies without a word expires', async (t) => {
  const pipeline = uniqueName();
  const [a, b] = [share(t, pipeline, 'a', { known: 2 }), share(t, pipeline, 'b', { known: 2 })];
  const began = performance.now();
  await Promise.all([a.s.start(), b.s.start()]);
  t.true(performance.now() - began < WINDOW_MS, 'no peer ran at a larger share');
  t.is(a.s.share, 2);
  t.is(a.s.alive, 2);

  // A third, on its own connection, then gone without a bye (its process was killed).
  const nc = await connect({ servers: nats.server.url });
  const c = new LimitShare(nc, pipeline, 'c', () => undefined, FAST);
  await c.start();
  t.is(c.share, 3);
  await until(() => a.s.share === 3 && b.s.share === 3, 2_000, 'a and b at thirds');
  await nc.close();
  await until(() => a.s.share === 2 && b.s.share === 2, 3_000, 'c expired');
  t.is(a.s.alive, 2);
});

test('share - a message that is not the protocol is ignored', async (t) => {
  const pipeline = uniqueName();
  const a = share(t, pipeline, 'a');
  await a.s.start();
  nats.nc.publish(`troupe.${pipeline}.events.fetch.share`, new Uint8Array([0xc1]));
  nats.nc.publish(`troupe.${pipeline}.events.fetch.share`, new TextEncoder().encode('{"op":"hello"}'));
  await nats.nc.flush();
  await new Promise((r) => setTimeout(r, 300));
  t.is(a.s.share, 1);
  t.is(a.s.alive, 1);
});

test('share - while its connection is down a Fetcher sends nothing, and after a server restart the share is kept and it joins again', async (t) => {
  const own = await startNats(); // restarted below: not the file's shared server
  t.teardown(() => own.stop());
  const pipeline = uniqueName();
  const opts = { servers: own.server.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 };
  const [ncA, ncB] = await Promise.all([connect(opts), connect(opts)]);
  t.teardown(() => Promise.all([ncA.close(), ncB.close()]).then(() => undefined));
  const a = new LimitShare(ncA, pipeline, 'a', () => undefined, FAST);
  const b = new LimitShare(ncB, pipeline, 'b', () => undefined, FAST);
  t.teardown(() => { a.close(); b.close(); });
  await a.start();
  await b.start();
  t.is(a.share, 2);

  // Down for longer than expireMs (500 ms here).
  await own.server.stop();
  await until(() => pending(a.ready()), 5_000, 'the gate to close on the disconnect');
  await new Promise((r) => setTimeout(r, 1_200));
  t.true(await pending(a.ready()), 'no requests while disconnected');
  t.is(a.alive, 2, 'b not expired while a itself was cut off');
  await own.server.restart();
  await until(async () => !(await pending(a.ready())), 10_000, 'a ready again after the reconnect');
  t.is(a.share, 2, 'the share outlived the outage');
  t.is(b.share, 2);
  await new Promise((r) => setTimeout(r, 800));
  t.is(a.alive, 2, 'b not expired after the restart');
});

/** Whether `p` is still unsettled a moment from now. */
async function pending(p: Promise<unknown>): Promise<boolean> {
  return Promise.race([p.then(() => false, () => false), new Promise<boolean>((r) => setTimeout(() => r(true), 20))]);
}
