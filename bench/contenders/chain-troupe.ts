// Scenario 1 (and 5): five no-op stages on troupe's message plane — per stage a WorkConsumer
// and a WorkProducer on its own connection, topology from ensureTopology. Stages 1-4 decode
// the item, re-encode it and publish it to the next stage; the consumer acks only after that
// publish is acknowledged. Stage 5 records the end-to-end latency and acks.
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  CONNECTION_OPTIONS, decode, encode, ensureTopology, stageConfig, WorkConsumer, WorkProducer, type Delivery,
} from '../../messages/mod.ts';
import { args, Completion, makeItem, percentiles, postGcHeap, report, round, rssOf, type BenchItem } from '../lib.ts';

interface Args {
  url: string;
  items: number;
  /** Items the source keeps in the pipeline at once. */
  window: number;
  maxInFlight: number;
  /** Scenario 5: sample memory of this process and of nats-server (pid). */
  natsPid?: number;
}

const a = args<Args>();
const STAGES = ['s1', 's2', 's3', 's4', 's5'];
const pipeline = `chain${process.pid}`;
// troupe's own connection options (as openNats uses them in every replica).
const conns = await Promise.all([...STAGES, 'source'].map((s) => connect({ ...CONNECTION_OPTIONS, servers: a.url, name: `bench ${s}` })));
const jsm = await jetstreamManager(conns[0]!);
await ensureTopology(jsm, pipeline, STAGES.map((s) => stageConfig(s, {})));
const run = `r${Date.now().toString(36)}`;
const done = new Completion(a.items);

const consumers = STAGES.map((stage, i) => {
  const js = jetstream(conns[i]!);
  const producer = new WorkProducer(js, pipeline, { dedupeScope: run });
  const next = STAGES[i + 1];
  const handle = async (d: Delivery): Promise<unknown> => {
    try {
      const item = decode(d.env.body as Uint8Array) as BenchItem;
      if (next === undefined) {
        done.done(item.t);
        return undefined;
      }
      await producer.publish(next, d.env.key, encode(item), { onStall: () => d.working() });
      return undefined;
    } catch (err) {
      return err;
    }
  };
  return new WorkConsumer(js, pipeline, stageConfig(stage, {}), (batch) => Promise.all(batch.map(handle)), { maxInFlight: a.maxInFlight });
});
for (const c of consumers) await c.start();

// Memory sampling (scenario 5): peaks while running, post-GC heap at the end.
let peakRss = 0;
let peakNatsRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  if (a.natsPid) peakNatsRss = Math.max(peakNatsRss, rssOf(a.natsPid) ?? 0);
}, 250);

const source = new WorkProducer(jetstream(conns[STAGES.length]!), pipeline, { dedupeScope: run });
const t0 = performance.now();
for (let i = 0; i < a.items; i++) {
  await done.room(i, a.window);
  void source.publish('s1', `item-${i}`, makeItem(i)).catch((err) => { console.error(err); process.exit(1); });
}
await done.finished;
const seconds = (performance.now() - t0) / 1000;
clearInterval(sampler);

const result: Record<string, unknown> = {
  items: a.items, seconds: round(seconds), itemsPerSec: Math.round(a.items / seconds), ...percentiles(done.latencies),
  retried: consumers.reduce((n, c) => n + c.stats.retried, 0), dead: consumers.reduce((n, c) => n + c.stats.dead, 0),
};
if (a.natsPid !== undefined) {
  done.latencies.length = 0;
  Object.assign(result, {
    heapAfterGc: await postGcHeap(), rss: process.memoryUsage().rss, peakRss,
    natsRss: rssOf(a.natsPid), peakNatsRss,
  });
}
for (const c of consumers) await c.drain();
await Promise.all(conns.map((nc) => nc.close()));
report(result);
