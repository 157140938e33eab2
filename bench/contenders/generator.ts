// Scenario 3: pipelines/cpu.ts through the Supervisor (troupe's real path: replicas on
// worker threads driven through comlink) with `threads` Generator replicas. The rate is
// taken from the Writer's `written` events between 10% and 90% of the items, so thread
// start-up and the last stragglers do not count.
import { connect } from '@nats-io/transport-node';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decode } from '../../messages/codec.ts';
import { Supervisor } from '../../supervisor.ts';
import { args, report, round } from '../lib.ts';

interface Args { url: string; threads: number; count: number; iters: number }
const a = args<Args>();
const out = await mkdtemp(join(tmpdir(), 'troupe-bench-cpu-'));
const nc = await connect({ servers: a.url });
const marks: Array<[number, number]> = [];
let written = 0;
nc.subscribe('troupe.benchcpu.events.write.written', {
  callback: (_e, m) => { written += (decode(m.data) as { count: number }).count; marks.push([performance.now(), written]); },
});
const sup = new Supervisor({
  pipelinePath: new URL('../pipelines/cpu.ts', import.meta.url).pathname, natsUrl: a.url, out,
  replicas: { generator: a.threads }, params: { count: String(a.count), iters: String(a.iters) }, progress: (process.env.BENCH_PROGRESS ?? 'none') as 'none',
});
const summary = await sup.run();
await nc.flush();
await nc.close();
await rm(out, { recursive: true, force: true });
const at = (frac: number) => marks.find(([, n]) => n >= frac * a.count)!;
const [t10, n10] = at(0.1);
const [t90, n90] = at(0.9);
report({
  threads: a.threads, items: a.count, written, ok: summary.ok, wallSeconds: round(summary.wallMs / 1000),
  itemsPerSec: Math.round((n90 - n10) / ((t90 - t10) / 1000)), restarts: summary.restarts,
});
