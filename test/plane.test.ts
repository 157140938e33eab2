import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  codes, decode, ensureTopology, PermanentError, stageConfig, WorkConsumer, WorkProducer,
  type DeadLetter, type Delivery, type StageLimits,
} from '../messages/mod.ts';
import { startNats, uniqueName, until, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

async function stage(limits: StageLimits = {}) {
  const pipeline = uniqueName();
  const cfg = stageConfig('work', { ackWaitMs: 2_000, ...limits });
  await ensureTopology(nats.jsm, pipeline, [cfg]);
  return { pipeline, cfg, producer: new WorkProducer(nats.js, pipeline) };
}

async function deadLetters(pipeline: string): Promise<DeadLetter[]> {
  const info = await nats.jsm.streams.info(`TROUPE_${pipeline}_DEAD`);
  const out: DeadLetter[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await nats.jsm.streams.getMessage(`TROUPE_${pipeline}_DEAD`, { seq });
    if (m) out.push(decode(m.data) as DeadLetter);
  }
  return out;
}

test('plane - items published are handled once each and acked', async (t) => {
  const { pipeline, cfg, producer } = await stage();
  for (let i = 0; i < 50; i++) await producer.publish('work', `k${i}`, { i });
  const seen: number[] = [];
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    for (const d of batch) seen.push((d.env.body as { i: number }).i);
    return batch.map(() => undefined);
  });
  await consumer.start();
  await until(() => seen.length === 50, 10_000, '50 items');
  await consumer.drain();
  t.deepEqual([...seen].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));
  t.is((await nats.jsm.streams.info(`TROUPE_${pipeline}_WORK_work`)).state.messages, 0);
});

test('backpressure - producer into a full stage stalls while the consumer is paused, resumes when it drains', async (t) => {
  const N = 20;
  const { pipeline, cfg, producer } = await stage({ maxMessages: N });
  let published = 0;
  const publishing = (async () => {
    for (let i = 0; i < 100; i++) {
      await producer.publish('work', `k${i}`, { i });
      published++;
    }
  })();
  await until(() => producer.stalls > 0, 10_000, 'a stall');
  const stuckAt = published;
  await sleep(300);
  t.is(published, stuckAt, 'no progress while the stage is full');
  t.is(stuckAt, N);
  t.true(producer.peakHeld <= 1, `the producer held ${producer.peakHeld} items`);
  const handled = new Set<string>();
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    for (const d of batch) handled.add(d.env.key);
    return batch.map(() => undefined);
  }, { maxInFlight: 8 });
  await consumer.start();
  await publishing;
  await until(() => handled.size === 100, 15_000, 'all 100 items handled');
  await consumer.drain();
  t.is(published, 100);
  t.true(consumer.stats.peakInFlight <= 8, `consumer held ${consumer.stats.peakInFlight}`);
});

test('backpressure - concurrent publishers are bounded by maxPending', async (t) => {
  const pipeline = uniqueName();
  const cfg = stageConfig('work', { maxMessages: 5 });
  await ensureTopology(nats.jsm, pipeline, [cfg]);
  const producer = new WorkProducer(nats.js, pipeline, { maxPending: 3 });
  const all = Promise.all(Array.from({ length: 30 }, (_, i) => producer.publish('work', `k${i}`, i)));
  await until(() => producer.stalls >= 3, 10_000, 'stalls');
  t.is(producer.held, 25, 'five stored, the rest wait in the producer');
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (b) => b.map(() => undefined));
  await consumer.start();
  await all;
  t.is(producer.held, 0);
  await until(() => consumer.stats.done === 30, 10_000, 'all 30 handled');
  await consumer.drain();
});

test('redelivery - a consumer closed mid-message leaves it to be handled once more', async (t) => {
  const { pipeline, cfg, producer } = await stage({ ackWaitMs: 1_000 });
  await producer.publish('work', 'only', { x: 1 });
  let started!: () => void;
  const inHandler = new Promise<void>((r) => { started = r; });
  const first = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    started();
    await sleep(60_000);
    return batch.map(() => undefined);
  });
  await first.start();
  await inHandler;
  first.close(); // like a killed replica: the message is never acked
  const attempts: number[] = [];
  const second = new WorkConsumer(nats.js, pipeline, cfg, async (batch: Delivery[]) => {
    for (const d of batch) attempts.push(d.attempt);
    return batch.map(() => undefined);
  });
  await second.start();
  await until(() => attempts.length === 1, 10_000, 'redelivery');
  await second.drain();
  t.deepEqual(attempts, [2]);
  t.is((await nats.jsm.streams.info(`TROUPE_${pipeline}_WORK_work`)).state.messages, 0);
});

test('redelivery - the same key published twice inside the window is stored once', async (t) => {
  const { pipeline, producer } = await stage();
  t.false((await producer.publish('work', 'same', { n: 1 })).duplicate);
  t.true((await producer.publish('work', 'same', { n: 2 })).duplicate);
  t.is((await nats.jsm.streams.info(`TROUPE_${pipeline}_WORK_work`)).state.messages, 1);
});

test('redelivery - a long handler that signals progress is not redelivered', async (t) => {
  const { pipeline, cfg, producer } = await stage({ ackWaitMs: 1_000 });
  await producer.publish('work', 'slow', {});
  let calls = 0;
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    calls++;
    await sleep(2_500);
    return batch.map(() => undefined);
  });
  await consumer.start();
  await until(() => consumer.stats.done === 1, 10_000, 'done');
  await consumer.drain();
  t.is(calls, 1);
});

test('dead letters - a handler that always fails goes to dead letters after maxAttempts', async (t) => {
  const { pipeline, cfg, producer } = await stage({ maxAttempts: 3 });
  await producer.publish('work', 'doomed', { x: 1 });
  const attempts: number[] = [];
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    attempts.push(...batch.map((d) => d.attempt));
    return batch.map(() => new Error('flaky upstream'));
  }, { retryBaseMs: 10 });
  await consumer.start();
  await until(() => consumer.stats.dead === 1, 10_000, 'dead letter');
  await consumer.drain();
  t.deepEqual(attempts, [1, 2, 3]);
  const [letter] = await deadLetters(pipeline);
  t.is(letter?.key, 'doomed');
  t.is(letter?.attempts, 3);
  t.is(letter?.error.code, codes.HANDLER);
  t.regex(letter!.error.message, /flaky upstream/);
  t.deepEqual(letter?.envelope?.body, { x: 1 });
});

test('dead letters - a permanent error goes to dead letters at once', async (t) => {
  const { pipeline, cfg, producer } = await stage({ maxAttempts: 5 });
  await producer.publish('work', 'bad', {});
  let calls = 0;
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    calls++;
    return batch.map(() => new PermanentError('404 not found'));
  });
  await consumer.start();
  await until(() => consumer.stats.dead === 1, 10_000, 'dead letter');
  await consumer.drain();
  t.is(calls, 1);
  const [letter] = await deadLetters(pipeline);
  t.is(letter?.error.code, codes.PERMANENT);
  t.false(letter?.error.retryable);
});

test('dead letters - garbage on the work subject is dead-lettered with its code and never crashes the consumer', async (t) => {
  const { pipeline, cfg, producer } = await stage({ maxMessageSize: 4_096 });
  const subject = `troupe.${pipeline}.work.work`;
  await nats.js.publish(subject, new Uint8Array([0xc1, 0x00]));
  await nats.js.publish(subject, new TextEncoder().encode('{"json":"not msgpack"}'));
  await nats.js.publish(subject, new Uint8Array([0x81, 0xa1, 0x76, 0x09])); // {v: 9}
  await nats.js.publish(subject, new Uint8Array([0x81, 0xa1, 0x76, 0x01])); // {v: 1}, nothing else
  await nats.js.publish(subject, new Uint8Array(5_000).fill(0x01));
  await producer.publish('work', 'good', { ok: true });
  const handled: string[] = [];
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    handled.push(...batch.map((d) => d.env.key));
    return batch.map(() => undefined);
  });
  await consumer.start();
  await until(() => consumer.stats.dead === 5 && handled.length === 1, 10_000, 'all settled');
  await consumer.drain();
  const letters = await deadLetters(pipeline);
  t.deepEqual(letters.map((l) => l.error.code).sort(),
    [codes.BAD_MESSAGE, codes.BAD_MESSAGE, codes.BAD_SHAPE, codes.BAD_VERSION, codes.TOO_LARGE].sort());
  t.deepEqual(handled, ['good']);
  t.true(letters.every((l) => l.data.byteLength > 0 && l.attempts === 1));
});

test('batches - a batch handler gets many messages per call and per-item outcomes apply', async (t) => {
  const { pipeline, cfg, producer } = await stage({ maxAttempts: 1 });
  for (let i = 0; i < 40; i++) await producer.publish('work', `k${i}`, i);
  const sizes: number[] = [];
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    sizes.push(batch.length);
    return batch.map((d) => (d.env.key === 'k7' ? new PermanentError('bad seven') : undefined));
  }, { batchSize: 16, batchWaitMs: 50, maxInFlight: 32 });
  await consumer.start();
  await until(() => consumer.stats.done + consumer.stats.dead === 40, 10_000, 'all settled');
  await consumer.drain();
  t.is(consumer.stats.dead, 1);
  t.true(Math.max(...sizes) > 1, `batch sizes ${sizes}`);
  t.true(sizes.every((s) => s <= 16));
});
