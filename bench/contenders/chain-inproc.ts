// Scenario 1: the same five no-op stages in one process, joined by bounded async queues (no
// broker, no durability): the upper bound of what the stage code itself costs.
import { decode, encode } from '../../messages/codec.ts';
import { args, BoundedQueue, Completion, makeItem, percentiles, report, round, type BenchItem } from '../lib.ts';

interface Args {
  items: number;
  window: number;
  /** Capacity of each queue. */
  maxInFlight: number;
}

const a = args<Args>();
const queues = Array.from({ length: 5 }, () => new BoundedQueue<Uint8Array>(a.maxInFlight));
const done = new Completion(a.items);
for (const [i, q] of queues.entries()) {
  const next = queues[i + 1];
  void (async () => {
    for (;;) {
      const item = decode(await q.pull()) as BenchItem;
      if (next === undefined) done.done(item.t);
      else await next.push(encode(item));
    }
  })();
}
const t0 = performance.now();
for (let i = 0; i < a.items; i++) {
  await done.room(i, a.window);
  await queues[0]!.push(makeItem(i));
}
await done.finished;
const seconds = (performance.now() - t0) / 1000;
report({ items: a.items, seconds: round(seconds), itemsPerSec: Math.round(a.items / seconds), ...percentiles(done.latencies) });
process.exit(0);
