import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureTopology, stageConfig, WorkConsumer, WorkProducer, codes, type Delivery } from '../messages/mod.ts';
import { isStandby } from '../actors/generator.ts';
import { machineCpuTimes, Standby, type CpuTimes } from '../actors/standby.ts';
import type { PipelineDefinition } from '../actors/pipeline.ts';
import { startNats, uniqueName, until, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

/** CPU times that advance by 250 ms per core per sample, with the given idle cores. */
function scripted(cores: number): { sample: () => CpuTimes; idle(cores: number): void } {
  let idle = 0;
  let total = 0;
  let idleNow = 0;
  return {
    sample: () => ({ idle, total }),
    idle(n: number) { idleNow = n; idle += 250 * idleNow; total += 250 * cores; },
  };
}

function recorder() {
  const calls: string[] = [];
  return { calls, pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } };
}

test('standby - starts paused, wakes only after idle CPU lasted wakeAfterMs, parks after busy CPU lasted parkAfterMs', (t) => {
  const cpu = scripted(2);
  const target = recorder();
  const sb = new Standby(target, { cores: 2, sample: cpu.sample, wakeAfterMs: 1_000, parkAfterMs: 500 });
  sb.start();
  sb.stop(); // ticks are driven by hand below
  t.deepEqual(target.calls, ['pause']);
  let now = 0;
  const step = (idleCores: number) => { cpu.idle(idleCores); now += 250; sb.tick(now); };
  // Idle for less than a second, broken by a busy sample: no wake.
  for (let i = 0; i < 3; i++) step(1);
  step(0.1);
  for (let i = 0; i < 3; i++) step(1);
  t.false(sb.active);
  t.deepEqual(target.calls, ['pause']);
  // Idle for over a second: wakes once.
  for (let i = 0; i < 3; i++) step(0.6);
  t.true(sb.active);
  t.deepEqual(target.calls, ['pause', 'resume']);
  t.is(sb.wakes, 1);
  // Busy, but with a quarter core idle now and then: stays active.
  for (let i = 0; i < 8; i++) step(i % 2 === 0 ? 0.1 : 0.3);
  t.true(sb.active);
  // Busy for over half a second: parks.
  for (let i = 0; i < 4; i++) step(0.05);
  t.false(sb.active);
  t.deepEqual(target.calls, ['pause', 'resume', 'pause']);
});

test('standby - machineCpuTimes reads the whole machine', (t) => {
  const a = machineCpuTimes();
  const until = performance.now() + 50;
  while (performance.now() < until) { /* spend some CPU */ }
  const b = machineCpuTimes();
  t.true(a.total > 0 && a.idle >= 0 && a.idle <= a.total);
  t.true(b.total > a.total, 'time passed on the machine');
});

test('standby - Generator replicas beyond the cores stand by, unless the pipeline says not to', (t) => {
  const def = { name: 'p', roles: {} } as unknown as PipelineDefinition;
  t.deepEqual([0, 1, 2, 3].map((i) => isStandby(def, i, 2)), [false, false, true, true]);
  t.false(isStandby({ ...def, roles: { generator: { standby: false } } }, 5, 2));
});

test('pause - a paused consumer holds nothing and leaves no pull open; resumed, it takes work again', async (t) => {
  const pipeline = uniqueName();
  const cfg = stageConfig('work', { ackWaitMs: 2_000 });
  await ensureTopology(nats.jsm, pipeline, [cfg]);
  const producer = new WorkProducer(nats.js, pipeline);
  const handled = { a: [] as string[], b: [] as string[] };
  const handler = (who: 'a' | 'b') => async (batch: Delivery[]) => {
    for (const d of batch) handled[who].push(d.env.key);
    await sleep(20);
    return batch.map(() => undefined);
  };
  const a = new WorkConsumer(nats.js, pipeline, cfg, handler('a'), { maxInFlight: 2, pausable: true });
  a.pause();
  await a.start();
  t.true(a.paused);
  for (let i = 0; i < 30; i++) await producer.publish('work', `k${i}`, { i });
  await sleep(300);
  const info = () => nats.jsm.consumers.info(`TROUPE_${pipeline}_WORK_work`, 'troupe-work');
  let ci = await info();
  t.is(handled.a.length, 0, 'paused from the start: nothing taken');
  t.is(ci.num_ack_pending, 0, 'nothing delivered to the paused replica');
  t.is(ci.num_waiting, 0, 'no pull request open');

  // Paused while working: finishes what it holds, then takes nothing more.
  a.resume();
  await until(() => handled.a.length >= 3, 5_000, 'a takes work');
  a.pause();
  await until(() => a.stats.inFlight === 0, 5_000, 'a settles what it held');
  const taken = handled.a.length;
  await sleep(300);
  t.is(handled.a.length, taken, 'nothing more taken once paused');
  ci = await info();
  t.is(ci.num_ack_pending, 0, 'the paused replica left nothing delivered and un-acked');

  const b = new WorkConsumer(nats.js, pipeline, cfg, handler('b'), { maxInFlight: 2 });
  await b.start();
  await until(() => handled.a.length + handled.b.length >= 30, 10_000, 'all 30 handled');
  await b.drain();
  a.resume();
  for (let i = 30; i < 40; i++) await producer.publish('work', `k${i}`, { i });
  await until(() => handled.a.length + handled.b.length >= 40, 10_000, 'the resumed replica takes the last 10');
  await a.drain();
  const all = [...handled.a, ...handled.b];
  t.is(new Set(all).size, 40);
  t.is(all.length, 40, 'each item handled once');
  t.true(handled.a.slice(taken).length >= 10, 'the resumed replica handled the items published after b stopped');
});

test('pause - only a pausable consumer can be paused', (t) => {
  const c = new WorkConsumer(nats.js, 'p', stageConfig('work'), async (b) => b.map(() => undefined));
  const err = t.throws(() => c.pause());
  t.is((err as { code?: string }).code, codes.BAD_OPTION);
  t.regex(err!.message, /pause\(\) needs the pausable option/);
});
