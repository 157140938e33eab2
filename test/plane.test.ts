import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  codes, deadLetterStranded, decode, ensureTopology, parseEnvelope, PermanentError, stageConfig, TroupeError, WorkConsumer, WorkProducer,
  type ConsumerOptions, type DeadLetter, type Delivery, type StageConfig, type StageLimits,
} from '../messages/mod.ts';
import { frameLimits } from '../actors/env.ts';
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

/**
 * A replica that takes a message and dies mid-handler (closed, never acking): what it held
 * comes back after ackWaitMs.
 */
async function crashWhileHolding(pipeline: string, cfg: StageConfig, options: ConsumerOptions = {}): Promise<void> {
  let started!: () => void;
  const inHandler = new Promise<void>((r) => { started = r; });
  const first = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    started();
    await sleep(60_000, undefined, { ref: false }); // a hung handler; must not keep the test process alive
    return batch.map(() => undefined);
  }, options);
  await first.start();
  await inHandler;
  first.close();
}

/**
 * Messages left in the stage's stream once the acks sent so far are applied. Acks are not
 * confirmed by the server, so a stream empties a moment after a drain: this waits up to 3 s
 * for it to reach 0, then reports what is left (a message never acked stays and fails the test).
 */
async function messagesAfterAcks(pipeline: string): Promise<number> {
  const count = async () => (await nats.jsm.streams.info(`TROUPE_${pipeline}_WORK_work`)).state.messages;
  await until(async () => (await count()) === 0, 3_000, 'an empty stream').catch(() => undefined);
  return count();
}

/** Messages in the stage's stream and the items they carry (a frame carries several). */
async function itemsIn(pipeline: string, stageName = 'work'): Promise<{ messages: number; items: number; frames: unknown[][]; singles: unknown[] }> {
  const stream = `TROUPE_${pipeline}_WORK_${stageName}`;
  const info = await nats.jsm.streams.info(stream);
  let items = 0;
  const frames: unknown[][] = [];
  const singles: unknown[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await nats.jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (!m) continue;
    const v = decode(m.data);
    items += Array.isArray(v) ? v.length : 1;
    if (Array.isArray(v)) frames.push(v);
    else singles.push(v);
  }
  return { messages: info.state.messages, items, frames, singles };
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
  t.is(await messagesAfterAcks(pipeline), 0);
});

test('plane - a publish while no stream listens yet (server recovering) waits for the stream instead of failing', async (t) => {
  const pipeline = uniqueName();
  const cfg = stageConfig('work', { ackWaitMs: 2_000 });
  const producer = new WorkProducer(nats.js, pipeline, { minBackoffMs: 20, maxBackoffMs: 100 });
  // nats.js reports the server's "no responders" as JetStreamNotEnabled; it must be retried.
  const published = producer.publish('work', 'k1', { i: 1 });
  await sleep(300);
  await ensureTopology(nats.jsm, pipeline, [cfg]);
  await published;
  t.is((await nats.jsm.streams.info(`TROUPE_${pipeline}_WORK_work`)).state.messages, 1);
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
  const stored = await itemsIn(pipeline);
  t.is(stored.messages, 5, 'the stage is full');
  t.is(producer.held, 30 - stored.items, 'what is not stored waits in the producer');
  t.true(stored.items <= 5 * 3, `no frame holds more than maxPending items (${stored.items} in 5 messages)`);
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
  await crashWhileHolding(pipeline, cfg); // like a killed replica: the message is never acked
  const attempts: number[] = [];
  const second = new WorkConsumer(nats.js, pipeline, cfg, async (batch: Delivery[]) => {
    for (const d of batch) attempts.push(d.attempt);
    return batch.map(() => undefined);
  });
  await second.start();
  await until(() => attempts.length === 1, 10_000, 'redelivery');
  await second.drain();
  t.deepEqual(attempts, [2]);
  t.is(await messagesAfterAcks(pipeline), 0);
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

test('frames - items published together travel as one message and are handled one by one', async (t) => {
  const { pipeline, cfg } = await stage();
  const producer = new WorkProducer(nats.js, pipeline, { maxFrameItems: 16 });
  await Promise.all(Array.from({ length: 40 }, (_, i) => producer.publish('work', `k${i}`, { i })));
  const stored = await itemsIn(pipeline);
  t.is(stored.items, 40);
  t.true(stored.messages <= 4 && stored.messages >= 3, `${stored.messages} messages for 40 items, at most 16 per frame`);
  // Items of a frame leave out what they share with it (pipeline, stage, ts) and the defaults
  // (v, attempt); deliveries have them all, ts being when the server stored the frame.
  const frameItems = stored.frames.flat() as Array<Record<string, unknown>>;
  t.true(frameItems.length > 0 && frameItems.every((it) => Object.keys(it).sort().join() === 'body,id,key'), JSON.stringify(frameItems[0]));
  const seen: string[] = [];
  const since = Date.now() - 60_000;
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    for (const d of batch) {
      seen.push(d.env.key);
      const { pipeline: p, stage: s, v, attempt, ts } = d.env;
      if (p !== pipeline || s !== 'work' || v !== 1 || attempt !== 1 || !(ts > since && ts <= Date.now())) throw new Error(`delivered without its context: ${JSON.stringify(d.env)}`);
    }
    return batch.map(() => undefined);
  }, { maxInFlight: 4 });
  await consumer.start();
  await until(() => consumer.stats.done === 40, 10_000, '40 items');
  await consumer.drain();
  t.deepEqual(seen.sort(), Array.from({ length: 40 }, (_, i) => `k${i}`).sort());
  t.true(consumer.stats.peakInFlight <= 4 + 16, `held ${consumer.stats.peakInFlight} items`);
  t.is(await messagesAfterAcks(pipeline), 0, 'every frame acked');
});

test('frames - a failing item is retried alone; its neighbours in the frame are not handled again', async (t) => {
  const { pipeline, cfg, producer } = await stage({ maxAttempts: 3 });
  await Promise.all(Array.from({ length: 10 }, (_, i) => producer.publish('work', `k${i}`, { i })));
  t.is((await itemsIn(pipeline)).messages, 1, 'one frame');
  const calls = new Map<string, number[]>();
  const consumer = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => batch.map((d) => {
    calls.set(d.env.key, [...(calls.get(d.env.key) ?? []), d.attempt]);
    if (d.env.key === 'k3' && d.attempt < 3) return new Error('flaky upstream');
    if (d.env.key === 'k5') return new PermanentError('404 not found');
    return undefined;
  }), { retryBaseMs: 10 });
  await consumer.start();
  await until(() => consumer.stats.done === 9 && consumer.stats.dead === 1, 10_000, 'all settled');
  await consumer.drain();
  t.deepEqual(calls.get('k3'), [1, 2, 3]);
  for (const [key, attempts] of calls) if (key !== 'k3') t.deepEqual(attempts, [1], key);
  t.is(consumer.stats.retried, 2);
  const [letter] = await deadLetters(pipeline);
  t.is(letter?.key, 'k5');
  t.is((decode(letter!.data) as { key: string }).key, 'k5', 'the letter holds the item alone, ready to replay');
  t.is(await messagesAfterAcks(pipeline), 0, 'the frame is acked once all its items settled');
});

test('frames - frame limits per stage: each stage gets its own, and troupe frames its Writer\'s stage in 256s', async (t) => {
  const pipeline = uniqueName();
  await ensureTopology(nats.jsm, pipeline, [stageConfig('generate', {}), stageConfig('write', {})]);
  const asked = new Set<string>();
  const producer = new WorkProducer(nats.js, pipeline, {
    maxPending: 2_000,
    maxFrameItems: (stage) => { asked.add(stage); return frameLimits.maxFrameItems(stage); },
    maxFrameBytes: frameLimits.maxFrameBytes,
  });
  const rows = (stage: string) => Array.from({ length: 600 }, (_, i) => producer.publish(stage, `${stage}${i}`, { i, text: 'x'.repeat(100) }));
  await Promise.all([...rows('generate'), ...rows('write')]);
  t.deepEqual([...asked].sort(), ['generate', 'write'], 'asked once per stage');
  /** Items in each message of a stage. */
  const frames = async (stage: string) => {
    const stream = `TROUPE_${pipeline}_WORK_${stage}`;
    const info = await nats.jsm.streams.info(stream);
    const sizes: number[] = [];
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const v = decode((await nats.jsm.streams.getMessage(stream, { seq }))!.data);
      sizes.push(Array.isArray(v) ? v.length : 1);
    }
    return sizes;
  };
  const generate = await frames('generate');
  const write = await frames('write');
  t.is(generate.reduce((a, b) => a + b, 0), 600);
  t.is(write.reduce((a, b) => a + b, 0), 600);
  t.is(Math.max(...generate), 64, `frames to generate: ${generate}`);
  t.true(Math.max(...write) > 64 && Math.max(...write) <= 256, `frames to write: ${write}`);
  t.is(frameLimits.maxFrameItems('fetch'), 64);
  t.is(frameLimits.maxFrameBytes('write'), 256 * 1024);
});

test('frames - a per-stage frame limit that is not a positive integer is refused, naming the stage', async (t) => {
  const { pipeline } = await stage();
  const producer = new WorkProducer(nats.js, pipeline, { maxFrameItems: (s) => (s === 'work' ? 0 : 64) });
  const err = await t.throwsAsync(producer.publish('work', 'k', {}), { instanceOf: TroupeError });
  t.is(err.code, codes.BAD_OPTION);
  t.is(err.message, 'producer option maxFrameItems (stage work) must be a positive integer, got 0');
  t.throws(() => new WorkProducer(nats.js, pipeline, { maxFrameBytes: 1.5 }), { message: 'producer option maxFrameBytes must be a positive integer, got 1.5' });
});

test('frames - a frame never exceeds maxFrameBytes; an item larger than that travels alone', async (t) => {
  const { pipeline } = await stage();
  const producer = new WorkProducer(nats.js, pipeline, { maxFrameBytes: 2_000 });
  await Promise.all([
    ...Array.from({ length: 20 }, (_, i) => producer.publish('work', `small${i}`, 'x'.repeat(200))),
    producer.publish('work', 'big', 'y'.repeat(5_000)),
  ]);
  const stream = `TROUPE_${pipeline}_WORK_work`;
  const info = await nats.jsm.streams.info(stream);
  const sizes: number[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) sizes.push((await nats.jsm.streams.getMessage(stream, { seq }))!.data.byteLength);
  const stored = await itemsIn(pipeline);
  t.is(stored.items, 21);
  t.is(sizes.filter((n) => n > 2_000).length, 1, `sizes ${sizes}`);
  // The item alone is a whole envelope, pipeline, stage, v, attempt and ts included.
  const big = stored.singles.find((v) => (v as { key?: string }).key === 'big');
  t.like(parseEnvelope(big), { key: 'big', pipeline, stage: 'work', v: 1, attempt: 1, body: 'y'.repeat(5_000) });
  t.true(sizes.length < 21, 'small items shared frames');
});

test('frames - a frame delivered again is split into single messages, each with its full attempts', async (t) => {
  const { pipeline, cfg, producer } = await stage({ ackWaitMs: 1_000, maxAttempts: 3 });
  await Promise.all(Array.from({ length: 6 }, (_, i) => producer.publish('work', `k${i}`, { i })));
  t.is((await itemsIn(pipeline)).messages, 1, 'one frame');
  await crashWhileHolding(pipeline, cfg, { maxInFlight: 1 }); // a crashed replica: the frame comes back after ackWaitMs
  const seen: Array<[string, number]> = [];
  const second = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    for (const d of batch) seen.push([d.env.key, d.attempt]);
    return batch.map((d) => (d.env.key === 'k2' ? new Error('still failing') : undefined));
  }, { retryBaseMs: 10 });
  await second.start();
  await until(() => second.stats.done === 5 && second.stats.dead === 1, 10_000, 'all settled');
  await second.drain();
  t.deepEqual(seen.filter(([k]) => k !== 'k2').map(([, a]) => a), [1, 1, 1, 1, 1], 'the others once each; the lost delivery is not counted');
  t.deepEqual(seen.filter(([k]) => k === 'k2').map(([, a]) => a), [1, 2, 3], 'the failing item alone, up to maxAttempts');
  const [letter] = await deadLetters(pipeline);
  t.is(letter?.attempts, 3);
  t.is(await messagesAfterAcks(pipeline), 0);
});

test('frames - a redelivered frame that cannot be split (its stage is full) is handled in place, nothing lost', async (t) => {
  const { pipeline, cfg, producer } = await stage({ ackWaitMs: 1_000, maxMessages: 2 });
  await Promise.all(Array.from({ length: 6 }, (_, i) => producer.publish('work', `k${i}`, { i })));
  await producer.publish('work', 'other', {});
  t.is((await itemsIn(pipeline)).messages, 2, 'a frame and a single: the stage is full');
  await crashWhileHolding(pipeline, cfg, { maxInFlight: 1, prefetch: 1 });
  const seen: Array<[string, number]> = [];
  const second = new WorkConsumer(nats.js, pipeline, cfg, async (batch) => {
    for (const d of batch) seen.push([d.env.key, d.attempt]);
    return batch.map(() => undefined);
  });
  await second.start();
  await until(() => second.stats.done === 7, 10_000, 'all seven handled');
  await second.drain();
  t.deepEqual(seen.filter(([k]) => k !== 'other').map(([k]) => k).sort(), ['k0', 'k1', 'k2', 'k3', 'k4', 'k5']);
  t.is(second.stats.dead, 0);
  t.is(await messagesAfterAcks(pipeline), 0);
});

test('frames - items of a frame that wait for a slot go back to the stage for an idle replica', async (t) => {
  const { pipeline, cfg, producer } = await stage();
  await Promise.all(Array.from({ length: 10 }, (_, i) => producer.publish('work', `k${i}`, { i })));
  t.is((await itemsIn(pipeline)).messages, 1, 'one frame of ten');
  const by = new Map<string, string[]>();
  const slow = (name: string) => async (batch: Delivery[]) => {
    for (const d of batch) by.set(d.env.key, [...(by.get(d.env.key) ?? []), name]);
    await sleep(300);
    return batch.map(() => undefined);
  };
  const a = new WorkConsumer(nats.js, pipeline, cfg, slow('a'), { maxInFlight: 1, giveBackMs: 200 });
  await a.start();
  await until(() => by.size > 0, 5_000, 'a starts');
  const b = new WorkConsumer(nats.js, pipeline, cfg, slow('b'), { maxInFlight: 1, giveBackMs: 200 });
  await b.start();
  await until(() => a.stats.done + b.stats.done === 10, 10_000, 'all ten handled');
  await Promise.all([a.drain(), b.drain()]);
  t.true(b.stats.done >= 3, `the second replica handled ${b.stats.done} of the ten`);
  t.true([...by.values()].every((names) => names.length === 1), 'each item handled once');
  t.is(await messagesAfterAcks(pipeline), 0);
});

test('redelivery - a frame of synchronous handlers longer in total than ackWait is kept alive, not redelivered', async (t) => {
  // 30 items of 100 ms of synchronous work in one frame: 3 s against an ack wait of 2 s. The
  // keep-alive is a timer, so the consumer must let the event loop turn between items.
  const { pipeline, cfg, producer } = await stage();
  await Promise.all(Array.from({ length: 30 }, (_, i) => producer.publish('work', `s${i}`, { i })));
  t.is((await itemsIn(pipeline)).messages, 1, 'one frame of thirty');
  const seen: string[] = [];
  const busy = async (batch: Delivery[]) => {
    for (const d of batch) {
      seen.push(d.env.key);
      const end = performance.now() + 100;
      while (performance.now() < end) { /* CPU-bound, like a generate() */ }
    }
    return batch.map(() => undefined);
  };
  const a = new WorkConsumer(nats.js, pipeline, cfg, busy, { maxInFlight: 4 });
  const b = new WorkConsumer(nats.js, pipeline, cfg, busy, { maxInFlight: 4 });
  await a.start();
  await b.start();
  await until(() => new Set(seen).size === 30, 20_000, 'all thirty handled');
  await sleep(2_500); // past another ack wait: a redelivery would show now
  await Promise.all([a.drain(), b.drain()]);
  t.is(seen.length, 30, `handled ${seen.length} times for 30 items`);
  t.is(await messagesAfterAcks(pipeline), 0);
});

test('dead letters - a message the server delivers no more (every taker stopped) is dead-lettered, not left behind', async (t) => {
  // maxAttempts 2: the server delivers a message 3 times (see ensureTopology). Three takers
  // that never settle it (killed replicas) leave it in the work queue below the ack floor,
  // where no consumer would ever see it again.
  const { pipeline, cfg, producer } = await stage({ ackWaitMs: 1_000, maxAttempts: 2 });
  await producer.publish('work', 'stuck', { n: 1 });
  const raw = await nats.js.consumers.get(`TROUPE_${pipeline}_WORK_work`, 'troupe-work');
  for (let delivery = 1; delivery <= 3; delivery++) {
    const m = await raw.next({ expires: 3_000 });
    t.is(m?.info.deliveryCount, delivery);
  }
  await sleep(1_300); // past the last ack wait
  t.is(await raw.next({ expires: 1_000 }), null, 'the server delivers it no more');
  await producer.publish('work', 'fresh', { n: 2 });
  t.is((await itemsIn(pipeline)).messages, 2, 'the stuck message is still in the work queue');
  t.is(await deadLetterStranded(nats.js, nats.jsm, pipeline, cfg), 1);
  t.is(await deadLetterStranded(nats.js, nats.jsm, pipeline, cfg), 0, 'nothing more on a second call');
  const letters = await deadLetters(pipeline);
  t.is(letters.length, 1);
  t.is(letters[0]!.key, 'stuck');
  t.is(letters[0]!.attempts, 3);
  t.regex(letters[0]!.error.message, /delivered 3 times, each time to a replica that stopped/);
  t.is((parseEnvelope(decode(letters[0]!.data)) as { key: string }).key, 'stuck', 'the original bytes, replayable');
  const left = await itemsIn(pipeline);
  t.deepEqual(left.singles.map((v) => (v as { key: string }).key), ['fresh'], 'a message not yet delivered is left alone');
});
