// Scenario 1: the same five no-op stages written by hand on @nats-io/jetstream — per stage a
// work-queue stream (file storage, like troupe's), a durable pull consumer read with
// consume(), and per message: decode, re-encode, awaited js.publish to the next stage, ack.
import { AckPolicy, DiscardPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { decode, encode } from '../../messages/codec.ts';
import { args, Completion, makeItem, percentiles, report, round, type BenchItem } from '../lib.ts';

interface Args {
  url: string;
  items: number;
  window: number;
  /** consume() buffer per stage (max_messages). */
  maxInFlight: number;
}

const a = args<Args>();
const STAGES = ['s1', 's2', 's3', 's4', 's5'];
const prefix = `hand${process.pid}`;
const subject = (s: string) => `${prefix}.${s}`;
const conns = await Promise.all([...STAGES, 'source'].map((s) => connect({ servers: a.url, name: `bench ${s}` })));
const jsm = await jetstreamManager(conns[0]!);
for (const s of STAGES) {
  await jsm.streams.add({
    name: `${prefix}_${s}`, subjects: [subject(s)], retention: RetentionPolicy.Workqueue, storage: StorageType.File,
    discard: DiscardPolicy.New, max_msgs: 10_000, num_replicas: 1,
  });
  await jsm.consumers.add(`${prefix}_${s}`, { durable_name: s, ack_policy: AckPolicy.Explicit, max_ack_pending: 1_000 });
}
const done = new Completion(a.items);

for (const [i, s] of STAGES.entries()) {
  const js = jetstream(conns[i]!);
  const next = STAGES[i + 1];
  const consumer = await js.consumers.get(`${prefix}_${s}`, s);
  const messages = await consumer.consume({ max_messages: a.maxInFlight });
  void (async () => {
    for await (const m of messages) {
      void (async () => {
        const item = decode(m.data) as BenchItem;
        if (next === undefined) done.done(item.t);
        else await js.publish(subject(next), encode(item));
        m.ack();
      })().catch((err) => { console.error(err); process.exit(1); });
    }
  })();
}

const source = jetstream(conns[STAGES.length]!);
const t0 = performance.now();
for (let i = 0; i < a.items; i++) {
  await done.room(i, a.window);
  void source.publish(subject('s1'), makeItem(i)).catch((err) => { console.error(err); process.exit(1); });
}
await done.finished;
const seconds = (performance.now() - t0) / 1000;
for (const s of STAGES) await jsm.streams.delete(`${prefix}_${s}`);
await Promise.all(conns.map((nc) => nc.close()));
report({ items: a.items, seconds: round(seconds), itemsPerSec: Math.round(a.items / seconds), ...percentiles(done.latencies) });
