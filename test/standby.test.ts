import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureTopology, openNats, stageConfig, WorkConsumer, WorkProducer, codes, type Delivery } from '../messages/mod.ts';
import { Generator, standbyOf } from '../actors/generator.ts';
import { machineCpuTimes, Standby, type CpuTimes } from '../actors/standby.ts';
import { stageConfigs, type ReplicaEnv } from '../actors/env.ts';
import { definePipeline, type PipelineDefinition } from '../actors/pipeline.ts';
import { startNats, tempDir, uniqueName, until, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

/** CPU times that advance by 250 ms per core per step, with the idle cores given. */
function scripted(cores: number): { sample: () => CpuTimes; idle(cores: number): void } {
  let idle = 0;
  let total = 0;
  return {
    sample: () => ({ idle, total }),
    idle(n: number) { idle += 250 * n; total += 250 * cores; },
  };
}

function recorder() {
  const calls: string[] = [];
  return { calls, pause: () => { calls.push('pause'); }, resume: () => { calls.push('resume'); } };
}

/** A standby driven by hand: `step(idleCores)` advances 250 ms and samples. */
function driven(options: { rank?: number; wakeAfterMs?: number; parkAfterMs?: number } = {}) {
  const cpu = scripted(2);
  const target = recorder();
  const sb = new Standby(target, { cores: 2, sample: cpu.sample, ...options });
  let now = 0;
  sb.start(now);
  sb.stop(); // ticks come from step() only
  const step = (idleCores: number, times = 1) => { for (let i = 0; i < times; i++) { cpu.idle(idleCores); now += 250; sb.tick(now); } };
  return { sb, calls: target.calls, step };
}

test('standby - starts paused, wakes only after idle CPU lasted wakeAfterMs, parks after busy CPU lasted parkAfterMs', (t) => {
  const { sb, calls, step } = driven({ wakeAfterMs: 1_000, parkAfterMs: 500 });
  t.deepEqual(calls, ['pause']);
  // Idle for 750 ms, a busy sample, idle for 750 ms again: no wake.
  step(1, 3);
  step(0.1);
  step(1, 3);
  t.false(sb.active);
  t.deepEqual(calls, ['pause']);
  step(0.6); // a full second of at least half a core idle
  t.true(sb.active);
  t.deepEqual(calls, ['pause', 'resume']);
  // Busy, with a quarter core idle now and then: stays.
  for (let i = 0; i < 8; i++) step(i % 2 === 0 ? 0.1 : 0.3);
  t.true(sb.active);
  step(0.05, 2); // half a second without a quarter core idle
  t.false(sb.active);
  t.deepEqual(calls, ['pause', 'resume', 'pause']);
  t.is(sb.wakes, 1);
});

test('standby - one that parks soon after waking waits twice as long to wake again, up to the limit', (t) => {
  const { sb, step } = driven({ wakeAfterMs: 1_000, parkAfterMs: 500 });
  step(1, 4);
  t.true(sb.active);
  step(0, 2); // parked 1.5 s after waking
  t.false(sb.active);
  step(1, 7);
  t.false(sb.active, 'not after 1.75 s of idle CPU');
  step(1);
  t.true(sb.active, 'after 2 s');
  step(0, 2);
  step(1, 15);
  t.false(sb.active, 'not after 3.75 s');
  step(1);
  t.true(sb.active, 'after 4 s');
  t.is(sb.wakes, 3);
});

test('standby - the second replica beyond the cores needs a whole idle core to wake', (t) => {
  const first = driven({ wakeAfterMs: 500 });
  const second = driven({ wakeAfterMs: 500, rank: 1 });
  for (const d of [first, second]) d.step(0.8, 4);
  t.true(first.sb.active);
  t.false(second.sb.active);
  second.step(1.1, 2);
  t.true(second.sb.active);
});

test('standby - machineCpuTimes reads the whole machine', (t) => {
  const a = machineCpuTimes();
  const end = performance.now() + 50;
  while (performance.now() < end) { /* spend some CPU */ }
  const b = machineCpuTimes();
  t.true(a.total > 0 && a.idle >= 0 && a.idle <= a.total);
  t.true(b.total > a.total, 'time passed on the machine');
});

test('standby - Generator replicas beyond the cores stand by, ranked, unless the pipeline says not to', (t) => {
  const def = { name: 'p', roles: {} } as unknown as PipelineDefinition;
  t.deepEqual([0, 1, 2, 3].map((i) => standbyOf(def, i, 2)), [undefined, undefined, { cores: 2, rank: 0 }, { cores: 2, rank: 1 }]);
  t.is(standbyOf({ ...def, roles: { generator: { standby: false } } }, 5, 2), undefined);
});

async function workStage(pipeline = uniqueName()) {
  const cfg = stageConfig('work', { ackWaitMs: 2_000 });
  await ensureTopology(nats.jsm, pipeline, [cfg]);
  const info = () => nats.jsm.consumers.info(`TROUPE_${pipeline}_WORK_work`, 'troupe-work');
  return { pipeline, cfg, producer: new WorkProducer(nats.js, pipeline), info };
}

test('pause - a paused consumer holds nothing and leaves no pull open; resumed, it takes work again', async (t) => {
  const { pipeline, cfg, producer, info } = await workStage();
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
  let ci = await info();
  t.is(handled.a.length, 0, 'paused from the start: nothing taken');
  t.is(ci.num_ack_pending, 0, 'nothing delivered to the paused replica');
  t.is(ci.num_waiting, 0, 'no pull request open');

  // Paused while working: finishes what it started, then takes nothing more.
  a.resume();
  await until(() => handled.a.length >= 3, 5_000, 'a takes work');
  a.pause();
  await until(async () => a.stats.inFlight === 0 && (await info()).num_ack_pending === 0, 5_000, 'a settles what it held');
  const taken = handled.a.length;
  await sleep(300);
  t.is(handled.a.length, taken, 'nothing more taken once paused');
  ci = await info();
  t.is(ci.num_ack_pending, 0, 'the paused replica left nothing delivered and un-acked');
  t.is(ci.num_waiting, 0, 'and no pull request open');

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

test('pause - what a paused consumer has not started, and what an open pull brings it afterwards, goes back to the stage', async (t) => {
  const { pipeline, cfg, producer, info } = await workStage();
  const handled = { a: [] as string[], b: [] as string[] };
  const handler = (who: 'a' | 'b', ms: number) => async (batch: Delivery[]) => {
    for (const d of batch) handled[who].push(d.env.key);
    await sleep(ms);
    return batch.map(() => undefined);
  };
  // One frame of 10 items, taken by a replica that handles one at a time.
  await Promise.all(Array.from({ length: 10 }, (_, i) => producer.publish('work', `f${i}`, { i })));
  const a = new WorkConsumer(nats.js, pipeline, cfg, handler('a', 300), { maxInFlight: 1, pausable: true, giveBackMs: 60_000 });
  await a.start();
  await until(() => handled.a.length === 1, 5_000, 'a starts the frame');
  a.pause();
  const b = new WorkConsumer(nats.js, pipeline, cfg, handler('b', 0), { maxInFlight: 4 });
  await b.start();
  await until(() => handled.b.length === 9, 5_000, 'the nine a had not started reach b at once (giveBackMs is a minute)');
  await b.drain();
  t.deepEqual(handled.a, ['f0']);

  // Paused on an empty stage with a pull open: an item that arrives through it is not handled here.
  const c = new WorkConsumer(nats.js, pipeline, cfg, handler('a', 0), { maxInFlight: 1, pausable: true });
  await c.start();
  await until(async () => (await info()).num_waiting > 0, 5_000, 'a pull open');
  c.pause();
  await producer.publish('work', 'late', {});
  await sleep(500);
  t.false(handled.a.includes('late'), 'the paused replica did not handle it');
  await c.drain();
  await a.drain();
  const d = new WorkConsumer(nats.js, pipeline, cfg, handler('b', 0), { maxInFlight: 1 });
  await d.start();
  await until(() => handled.b.includes('late'), 5_000, 'another replica handles it');
  await d.drain();
  const all = [...handled.a, ...handled.b];
  t.is(all.length, 11, 'each of the 11 items handled once');
  t.is(new Set(all).size, 11);
});

test('pause - only a pausable consumer can be paused, and pausable needs batchSize 1', (t) => {
  const c = new WorkConsumer(nats.js, 'p', stageConfig('work'), async (b) => b.map(() => undefined));
  const err = t.throws(() => c.pause());
  t.is((err as { code?: string }).code, codes.BAD_OPTION);
  t.regex(err!.message, /pause\(\) needs the pausable option/);
  t.throws(() => new WorkConsumer(nats.js, 'p', stageConfig('work'), async (b) => b.map(() => undefined), { pausable: true, batchSize: 8, maxInFlight: 8 }),
    { message: /pausable needs batchSize 1/ });
});

test('standby - a standby Generator takes no work while the machine is busy and takes its share once it is idle', async (t) => {
  const def = definePipeline<{ n: number }, { n: number }>({
    name: uniqueName('standby'),
    scanner: { async *scan() { /* fed by the test */ } },
    generator: { generate: (input) => [{ key: input.key, body: input.body }] },
    writer: { entities: [], apply: async () => undefined },
  });
  await ensureTopology(nats.jsm, def.name, [...stageConfigs(def).values()]);
  const out = await tempDir();
  const handle = await openNats({ url: nats.server.url, stateDir: out });
  t.teardown(() => handle.close());
  const producer = new WorkProducer(handle.js, def.name);
  const env: ReplicaEnv = { def, nats: handle, role: 'generator', replicaId: 'test/1/generator-2', params: {}, out, run: 'r', producer };
  const cpu = scripted(2);
  const gen = new Generator(env, { standby: { cores: 2, sample: cpu.sample, everyMs: 60_000, wakeAfterMs: 500 } });
  await gen.start();
  t.teardown(() => gen.close());
  for (let i = 0; i < 20; i++) await producer.publish('generate', `g${i}`, { n: i });
  let now = performance.now();
  for (let i = 0; i < 4; i++) { cpu.idle(0.1); gen.standby!.tick(now += 250); }
  await sleep(300);
  t.is(gen.stats().done, 0, 'busy machine: nothing taken');
  t.is(gen.stats().standby, 'parked');
  for (let i = 0; i < 3; i++) { cpu.idle(1.5); gen.standby!.tick(now += 250); }
  t.is(gen.stats().standby, 'active');
  await until(() => gen.stats().done === 20, 10_000, 'the woken standby takes the work');
  const write = await handle.jsm.streams.info(`TROUPE_${def.name}_WORK_write`);
  t.true(write.state.messages >= 1, "its outputs reached the Writer's stage");
  await gen.drain();
});
