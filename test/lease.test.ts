import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { hostname } from 'node:os';
import { Kvm } from '@nats-io/kv';
import { codes, TroupeError } from '../messages/mod.ts';
import { LEASE_BUCKET, readLease, WriterLease } from '../storage/mod.ts';
import { startNats, uniqueName, until, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
const children: ChildProcess[] = [];
test.before(async () => {
  nats = await startNats();
  await new Kvm(nats.nc).create(LEASE_BUCKET, { ttl: 10_000, history: 1 });
});
test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await nats?.stop();
});

function bucket() {
  return new Kvm(nats.nc).open(LEASE_BUCKET);
}

/** Writes a lease as another Writer would have. */
async function plantLease(pipeline: string, holder: { host: string; pid: number }, since = '2026-01-01T00:00:00.000Z'): Promise<number> {
  return (await bucket()).create(`${pipeline}.writer`, JSON.stringify({ ...holder, id: 'someone-else', since }));
}

function liveChild(): number {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(child);
  return child.pid!;
}

async function deadPid(): Promise<number> {
  const child = spawn('true', [], { stdio: 'ignore' });
  const pid = child.pid!;
  await once(child, 'exit');
  return pid;
}

function isLost(err: unknown): boolean {
  return err instanceof TroupeError && err.code === codes.LEASE_LOST;
}

test('lease - acquire writes the holder and readLease reports it', async (t) => {
  const pipeline = uniqueName('lease');
  await using lease = await WriterLease.acquire(nats.nc, pipeline, { holder: { id: 'w1' } });
  const info = await readLease(nats.nc, pipeline);
  t.like(info, { host: hostname(), pid: process.pid, id: 'w1', since: lease.since, epoch: lease.epoch });
  t.true(lease.epoch > 0);
  t.is(await readLease(nats.nc, uniqueName('nobody')), undefined);
});

test('lease - a second Writer is refused while a live process on this host holds it, naming host, pid and since', async (t) => {
  const pipeline = uniqueName('lease');
  const pid = liveChild();
  await plantLease(pipeline, { host: hostname(), pid }, '2026-02-03T04:05:06.000Z');
  const err = await t.throwsAsync(WriterLease.acquire(nats.nc, pipeline));
  t.is((err as TroupeError).code, codes.LEASE_HELD);
  t.true(err!.message.includes(hostname()), err!.message);
  t.true(err!.message.includes(`pid ${pid}`), err!.message);
  t.true(err!.message.includes('2026-02-03T04:05:06.000Z'), err!.message);
});

test('lease - a holder on another host is never taken over, whatever its pid', async (t) => {
  const pipeline = uniqueName('lease');
  await plantLease(pipeline, { host: 'other-machine', pid: await deadPid() });
  const err = await t.throwsAsync(WriterLease.acquire(nats.nc, pipeline));
  t.is((err as TroupeError).code, codes.LEASE_HELD);
  t.regex(err!.message, /host other-machine pid \d+ since 2026-01-01T00:00:00.000Z/);
});

test('lease - a dead process on this host loses its lease to the next Writer, with a higher epoch', async (t) => {
  const pipeline = uniqueName('lease');
  const planted = await plantLease(pipeline, { host: hostname(), pid: await deadPid() });
  await using lease = await WriterLease.acquire(nats.nc, pipeline);
  t.true(lease.epoch > planted);
  t.like(await readLease(nats.nc, pipeline), { pid: process.pid, id: lease.holder.id });
});

test('lease - released, it can be acquired again', async (t) => {
  const pipeline = uniqueName('lease');
  const first = await WriterLease.acquire(nats.nc, pipeline, { holder: { pid: liveChild() } });
  await first.release();
  await first.release(); // twice is fine
  t.is(await readLease(nats.nc, pipeline), undefined);
  t.throws(() => first.assertHeld(), { message: /released/ });
  await using second = await WriterLease.acquire(nats.nc, pipeline);
  t.true(second.epoch > first.epoch);
  t.notThrows(() => second.assertHeld());
});

test('lease - renewals keep it held and raise the epoch', async (t) => {
  const pipeline = uniqueName('lease');
  await using lease = await WriterLease.acquire(nats.nc, pipeline, { ttlMs: 3_000, renewEveryMs: 50 });
  const start = lease.epoch;
  await until(() => lease.epoch >= start + 3, 5_000, 'three renewals');
  t.notThrows(() => lease.assertHeld());
  t.is((await readLease(nats.nc, pipeline))?.since, lease.since);
});

test('lease - a takeover in the same process makes the old holder lose it, and the epoch grows', async (t) => {
  const pipeline = uniqueName('lease');
  const old = await WriterLease.acquire(nats.nc, pipeline, { ttlMs: 3_000, renewEveryMs: 50 });
  const lost: TroupeError[] = [];
  old.onLost((err) => lost.push(err));
  await using restarted = await WriterLease.acquire(nats.nc, pipeline, { ttlMs: 3_000, renewEveryMs: 50 });
  t.true(restarted.epoch > old.epoch);
  await until(() => lost.length === 1, 5_000, 'the old holder to notice');
  t.true(isLost(t.throws(() => old.assertHeld())));
  t.is(lost[0]!.code, codes.LEASE_LOST);
  t.notThrows(() => restarted.assertHeld());
  await old.release(); // must not delete the new holder's key
  t.like(await readLease(nats.nc, pipeline), { id: restarted.holder.id });
});

test('lease - a key deleted by someone else is lost at the next renewal', async (t) => {
  const pipeline = uniqueName('lease');
  await using lease = await WriterLease.acquire(nats.nc, pipeline, { ttlMs: 3_000, renewEveryMs: 50 });
  await (await bucket()).delete(`${pipeline}.writer`);
  await until(() => lease.state === 'lost', 5_000, 'the lease to be lost');
  const err = t.throws(() => lease.assertHeld());
  t.true(isLost(err));
  t.regex(err!.message, /deleted or taken/);
});

test('lease - a key updated by someone else is lost at the next renewal', async (t) => {
  const pipeline = uniqueName('lease');
  await using lease = await WriterLease.acquire(nats.nc, pipeline, { ttlMs: 3_000, renewEveryMs: 50 });
  await (await bucket()).put(`${pipeline}.writer`, JSON.stringify({ host: 'intruder', pid: 1, id: 'x', since: new Date().toISOString() }));
  await until(() => lease.state === 'lost', 5_000, 'the lease to be lost');
  t.true(isLost(t.throws(() => lease.assertHeld())));
  t.like(await readLease(nats.nc, pipeline), { host: 'intruder' }); // release left it alone
});

test('lease - options are validated with messages naming them', async (t) => {
  const err = await t.throwsAsync(WriterLease.acquire(nats.nc, uniqueName('lease'), { ttlMs: 1_000, renewEveryMs: 1_000 }));
  t.is((err as TroupeError).code, codes.BAD_OPTION);
  t.regex(err!.message, /options\.renewEveryMs must be a positive integer below options\.ttlMs/);
  const bad = await t.throwsAsync(WriterLease.acquire(nats.nc, 'no.dots'));
  t.is((bad as TroupeError).code, codes.BAD_NAME);
});

test('lease - readLease on a server that has no lease bucket yet reports none', async (t) => {
  const other = await startNats();
  try {
    t.is(await readLease(other.nc, uniqueName('lease')), undefined);
  } finally {
    await other.stop();
  }
});
