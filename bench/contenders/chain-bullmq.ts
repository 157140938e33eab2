// Scenario 1: the same five no-op stages on BullMQ — five queues on Redis, one Worker per
// queue whose processor decodes the item, re-encodes it and awaits `add` to the next queue;
// BullMQ completes (acks) the job only after the processor resolves.
import { Queue, Worker, type Job } from 'bullmq';
import { decode, encode } from '../../messages/codec.ts';
import { args, Completion, makeItem, percentiles, report, round, type BenchItem } from '../lib.ts';

interface Args {
  redis: { host: string; port: number };
  items: number;
  window: number;
  /** Worker concurrency per queue. */
  maxInFlight: number;
}

const a = args<Args>();
const STAGES = ['s1', 's2', 's3', 's4', 's5'];
const prefix = `troupe-bench-${process.pid}`;
const connection = { ...a.redis, maxRetriesPerRequest: null };
const jobOpts = { removeOnComplete: true, removeOnFail: true };
const queues = STAGES.map((s) => new Queue(s, { connection, prefix }));
const done = new Completion(a.items);

const workers = STAGES.map((s, i) => new Worker(s, async (job: Job<{ b: string }>) => {
  const item = decode(Buffer.from(job.data.b, 'base64')) as BenchItem;
  const next = queues[i + 1];
  if (next === undefined) done.done(item.t);
  else await next.add('item', { b: Buffer.from(encode(item)).toString('base64') }, jobOpts);
}, { connection, prefix, concurrency: a.maxInFlight }));
await Promise.all(workers.map((w) => w.waitUntilReady()));

const t0 = performance.now();
for (let i = 0; i < a.items; i++) {
  await done.room(i, a.window);
  void queues[0]!.add('item', { b: Buffer.from(makeItem(i)).toString('base64') }, jobOpts)
    .catch((err) => { console.error(err); process.exit(1); });
}
await done.finished;
const seconds = (performance.now() - t0) / 1000;
await Promise.all(workers.map((w) => w.close()));
for (const q of queues) await q.obliterate({ force: true });
await Promise.all(queues.map((q) => q.close()));
report({ items: a.items, seconds: round(seconds), itemsPerSec: Math.round(a.items / seconds), ...percentiles(done.latencies) });
