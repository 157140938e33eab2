// `npm run bench`: troupe's side-by-side benchmark suite. Each contender runs in its own
// child process (bench/contenders/*.ts, one JSON result line on stdout) against its own
// fresh nats-server where it needs one; Redis at 127.0.0.1:6379 when reachable. Writes
// bench/results.json and bench/RESULTS.md (tables with PASS/FAIL per floor).
// Scenarios: BENCH_ONLY=1,3 runs a subset.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { NatsServer } from '../messages/server.ts';
import { natsServerPid, round } from './lib.ts';
import { burn } from './pipelines/cpu.ts';
import { NODE_FLAGS } from '../actors/memory.ts';

type Result = Record<string, any>;
interface Floor { scenario: number; floor: string; value: string; pass: boolean }
interface Section { n: number; title: string; note: string; headers: string[]; rows: string[][] }

const HERE = new URL('.', import.meta.url).pathname;
const REDIS = { host: '127.0.0.1', port: 6379 };
const only = process.env.BENCH_ONLY?.split(',').map(Number);
const floors: Floor[] = [];
const sections: Section[] = [];
const raw: Record<string, unknown> = {};
const started = Date.now();

/** Runs one contender script in its own process; resolves with its JSON result line. */
function contender(script: string, args: object, timeoutMs = 180_000): Promise<Result> {
  return new Promise((resolve) => {
    // Every contender runs with the Node flags troupe's own command uses (actors/memory.ts).
    const child = spawn(process.execPath, ['--expose-gc', ...NODE_FLAGS, join(HERE, 'contenders', script), JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => { err += `\n[bench] killed after ${timeoutMs} ms`; child.kill('SIGKILL'); }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').reverse().find((l) => l.startsWith('{'));
      if (code === 0 && line) return resolve(JSON.parse(line));
      const tail = err.trim().split('\n').slice(-8).join('\n');
      console.error(`[bench] ${script} failed (exit ${code}):\n${tail}`);
      resolve({ error: `exit ${code}: ${tail.split('\n').pop()}` });
    });
  });
}

/** A fresh nats-server (own port, own store) for one contender. */
async function withNats<T>(fn: (url: string, server: NatsServer) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'troupe-bench-nats-'));
  const server = await NatsServer.start({ dir });
  try {
    return await fn(server.url, server);
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** servers/api.ts in its own process; resolves with its origin and a stop function. */
async function apiServer(opts: { latencyMs: number; jitterMs: number; limit: number }) {
  const child = spawn(process.execPath, [join(HERE, 'servers', 'api.ts'), JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(JSON.parse(String(d)).port));
    child.once('exit', (c) => reject(new Error(`api server exited with ${c}`)));
  });
  const origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    stats: async () => (await fetch(`${origin}/__stats`)).json() as Promise<Result>,
    reset: async () => { await fetch(`${origin}/__reset`); },
    stop: () => { child.kill(); },
  };
}

function redisReachable(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect(REDIS.port, REDIS.host);
    s.setTimeout(1_000);
    s.once('data', (d) => { s.destroy(); resolve(String(d).startsWith('+PONG')); });
    s.once('connect', () => s.write('PING\r\n'));
    s.once('error', () => resolve(false));
    s.once('timeout', () => { s.destroy(); resolve(false); });
  });
}

const num = (x: unknown, d = 0) => (typeof x === 'number' ? x.toLocaleString('en-US', { maximumFractionDigits: d }) : '—');
const mib = (x: unknown) => (typeof x === 'number' ? `${(x / 2 ** 20).toFixed(1)} MiB` : '—');
const ratio = (a: unknown, b: unknown) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? a / b : NaN);
function floor(scenario: number, name: string, value: number, pass: boolean, fmt = (v: number) => `${v.toFixed(2)}×`): void {
  floors.push({ scenario, floor: name, value: Number.isNaN(value) ? 'not measured' : fmt(value), pass: !Number.isNaN(value) && pass });
}
const load = () => `load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;
const want = (n: number) => only === undefined || only.includes(n);

// 1. Five-stage no-op pipeline.
async function scenario1(): Promise<void> {
  const common = { window: 1_000, maxInFlight: 256 };
  const at = load();
  const troupe = await withNats((url) => contender('chain-troupe.ts', { ...common, url, items: 15_000 }));
  const hand = await withNats((url) => contender('chain-jetstream.ts', { ...common, url, items: 20_000 }));
  const bull = (await redisReachable()) ? await contender('chain-bullmq.ts', { ...common, redis: REDIS, items: 8_000 }) : { skipped: 'Redis not reachable at 127.0.0.1:6379' };
  const inproc = await contender('chain-inproc.ts', { ...common, items: 500_000 });
  raw.pipeline = { troupe, jetstream: hand, bullmq: bull, inproc };
  const row = (name: string, r: Result) => [name, r.skipped ? `skipped: ${r.skipped}` : r.error ? `error: ${r.error}` : num(r.items),
    num(r.seconds, 1), num(r.itemsPerSec), num(r.p50, 1), num(r.p99, 1)];
  sections.push({
    n: 1, title: 'Five-stage no-op pipeline (128-byte msgpack items)',
    note: 'troupe = the message plane (per stage a WorkConsumer + WorkProducer, topology from ensureTopology), the fair "no-op five stages" path: the Supervisor path adds a Writer. ' +
      'Every contender: each stage decodes and re-encodes the item and acks only after its publish to the next stage is acknowledged; the source keeps 1,000 items in the pipeline; ' +
      '256 items in flight per stage (troupe: handler slots, with items travelling in frames; others: consume() buffer / BullMQ concurrency / queue capacity); file-backed work-queue streams, one NATS connection per stage. ' +
      `Latency = source publish → stage 5, under that load. ${at}.`,
    headers: ['contender', 'items', 's', 'items/s', 'p50 ms', 'p99 ms'],
    rows: [row('troupe (message plane)', troupe), row('hand-written @nats-io/jetstream chain', hand), row('BullMQ (5 queues, Redis)', bull), row('in-process bounded async queues', inproc)],
  });
  const vsHand = ratio(troupe.itemsPerSec, hand.itemsPerSec);
  floor(1, 'troupe ≥ 0.85× hand-written JetStream chain', vsHand, vsHand >= 0.85);
  if (bull.skipped) floors.push({ scenario: 1, floor: 'troupe ≥ 3× BullMQ', value: 'skipped (no Redis)', pass: true });
  else { const vsBull = ratio(troupe.itemsPerSec, bull.itemsPerSec); floor(1, 'troupe ≥ 3× BullMQ', vsBull, vsBull >= 3); }
}

// 2. Fetcher against 50 ms ± 10 ms.
async function scenario2(): Promise<void> {
  const api = await apiServer({ latencyMs: 50, jitterMs: 10, limit: 0 });
  const at = load();
  const results: Result[] = [];
  try {
    for (const c of [64, 256]) results.push(await contender('fetcher.ts', { origin: api.origin, concurrency: c, seconds: 5, latencyMs: 50 }));
  } finally {
    api.stop();
  }
  raw.fetcher = results;
  sections.push({
    n: 2, title: 'Fetcher (HttpFetcher) vs a local server answering in 50 ms ± 10 ms',
    note: `Closed loop: c concurrent callers fetch back to back for 5 s after a 1 s warm-up; ideal = c / 0.05 s (Little's law). Server in its own process. ${at}.`,
    headers: ['concurrency', 'requests', 'req/s', 'ideal req/s', 'of ideal', 'p50 ms', 'p99 ms'],
    rows: results.map((r) => [num(r.concurrency), num(r.requests), num(r.reqPerSec), num(r.ideal), `${(r.ratio * 100).toFixed(1)}%`, num(r.p50, 1), num(r.p99, 1)]),
  });
  const r64 = results[0]!;
  floor(2, 'Fetcher ≥ 0.9 of ideal at concurrency 64', r64.ratio, r64.ratio >= 0.9, (v) => `${(v * 100).toFixed(1)}%`);
}

// 3. Generator with a fixed ~2 ms CPU task on 1, 2, 3 worker threads.
async function scenario3(): Promise<void> {
  let iters = 1_000;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    for (let k = 0; k < 20; k++) burn(`cal${k}`, iters);
    iters = Math.max(50, Math.round(iters * (2 / ((performance.now() - t0) / 20))));
  }
  const t0 = performance.now();
  for (let k = 0; k < 50; k++) burn(`check${k}`, iters);
  const taskMs = (performance.now() - t0) / 50;
  const at = load();
  const results: Result[] = [];
  // Best of two runs per thread count, like scenario 4: on two shared cores one run of 3,000
  // items varies by ±5%, as much as 3 threads differ from 2 (one core's worth of CPU each way).
  for (const threads of [1, 2, 3]) {
    const run = () => withNats((url) => contender('generator.ts', { url, threads, count: 3_000, iters }));
    const [x, y] = [await run(), await run()];
    results.push((x.itemsPerSec ?? 0) >= (y.itemsPerSec ?? 0) ? x : y);
  }
  raw.generator = { iters, taskMs, results };
  const one = results[0]!.itemsPerSec;
  sections.push({
    n: 3, title: 'Generator: fixed CPU task on worker-thread replicas',
    note: `pipelines/cpu.ts through the Supervisor (replicas on worker_threads via comlink), --replicas generate=N, no Fetcher; task = ${iters} rounds of an integer hash ` +
      `(${taskMs.toFixed(2)} ms measured on the main thread); 3,000 items; rate between 10% and 90% of the Writer's written events; best of 2 runs. ` +
      `Ideal at 1 thread: ${Math.round(1000 / taskMs)} items/s. The machine has ${cpus().length} cores shared with nats-server and the Scanner/Writer threads; ` +
      `threads beyond ${availableParallelism()} stand by while no core is idle (actors/standby.ts). ${at}.`,
    headers: ['generator threads', 'items/s', 'vs 1 thread', 'wall s (incl. start)'],
    rows: results.map((r) => [num(r.threads), r.error ? `error: ${r.error}` : num(r.itemsPerSec), `${ratio(r.itemsPerSec, one).toFixed(2)}×`, num(r.wallSeconds, 1)]),
  });
  const two = ratio(results[1]!.itemsPerSec, one);
  floor(3, '2 threads ≥ 1.7× one thread', two, two >= 1.7);
  const three = ratio(results[2]!.itemsPerSec, results[1]!.itemsPerSec);
  floor(3, '3 threads not slower than 2', three, three >= 1, (v) => `${v.toFixed(2)}× of 2 threads`);
}

// 4. Writer rows/s vs raw better-sqlite3.
async function scenario4(): Promise<void> {
  const rows = 100_000;
  const at = load();
  // Best of 2 per row, the rounds interleaved (raw, store, actor, then again): this machine's
  // speed drifts over minutes, and raw alone measured 166k to 260k rows/s between runs. Each
  // run gets a fresh file; the actor also a fresh nats-server.
  const run = (mode: string) => mode === 'actor'
    ? withNats((url) => contender('writer.ts', { mode, rows, url }))
    : contender('writer.ts', { mode, rows });
  const rounds: Array<Record<string, Result>> = [];
  for (let round = 0; round < 2; round++) {
    const r: Record<string, Result> = {};
    for (const mode of ['raw', 'store', 'actor']) r[mode] = await run(mode);
    rounds.push(r);
  }
  const best = (mode: string) => rounds.map((r) => r[mode]!).reduce((a, b) => ((a.rowsPerSec ?? 0) >= (b.rowsPerSec ?? 0) ? a : b));
  const [rawR, store, actor] = [best('raw'), best('store'), best('actor')];
  raw.writer = { raw: rawR, store, actor };
  sections.push({
    n: 4, title: 'Writer rows/s into SQLite (100k rows of key, title, ~200-byte body)',
    note: 'Transactions of 1,000 rows, WAL + synchronous=NORMAL, fresh file each. Every row: best of 2 runs, in 2 interleaved rounds (raw, path, actor). ' +
      `The actor row includes consuming from NATS (preloaded stage; timed from the Writer running to the last ack). ${at}.`,
    headers: ['path', 'rows/s', 'vs raw'],
    rows: [
      ['raw better-sqlite3 prepared insert, 1 tx per 1,000 (ceiling)', num(rawR.rowsPerSec), '1.00×'],
      ['Writer path: upsertRows + recordLedger in store.transaction()', num(store.rowsPerSec), `${ratio(store.rowsPerSec, rawR.rowsPerSec).toFixed(2)}×`],
      ['Writer actor consuming its NATS stage (batches of 1,000)', num(actor.rowsPerSec), `${ratio(actor.rowsPerSec, rawR.rowsPerSec).toFixed(2)}×`],
    ],
  });
  const s = ratio(store.rowsPerSec, rawR.rowsPerSec);
  floor(4, 'Writer path (upsertRows + recordLedger) ≥ 0.4× raw', s, s >= 0.4);
  const a = ratio(actor.rowsPerSec, rawR.rowsPerSec);
  floor(4, 'Writer actor from NATS ≥ 0.4× raw', a, a >= 0.4);
}

// 5. Memory of the no-op troupe pipeline at growing item counts.
async function scenario5(): Promise<void> {
  const at = load();
  const results: Result[] = [];
  const run = (items: number) => withNats((url, server) => contender('chain-troupe.ts',
    { url, items, window: 1_000, maxInFlight: 256, natsPid: natsServerPid(server.port) }, 240_000));
  for (const items of [10_000, 30_000]) results.push(await run(items));
  // The largest size that fits ~3 minutes at the rate just measured. The 30k run's rate
  // includes start-up: 7.5k/s there came with 11.2k/s at 300k, so 1M takes ~1.5 min at it.
  const rate = results[1]!.itemsPerSec ?? 1;
  const largest = [1_000_000, 300_000, 100_000].find((n) => n / rate <= 180) ?? 100_000;
  results.push(await run(largest));
  raw.memory = results;
  const first = results[0]!;
  const last = results[results.length - 1]!;
  sections.push({
    n: 5, title: 'Memory of the no-op troupe pipeline (scenario 1\'s troupe contender)',
    note: `Sizes 10k, 30k and the largest that fits ~3 min at the measured rate (${num(rate)} items/s → ${num(largest)}; 1M needs ${num(1_000_000 / rate / 60, 1)} min here). ` +
      `Heap after gc() (--expose-gc) at the end of the run; RSS from /proc/<pid>/status VmRSS, at the end and peak (sampled every 250 ms). ${at}.`,
    headers: ['items', 'items/s', 'heap after GC', 'node RSS end', 'node RSS peak', 'nats-server RSS end', 'nats-server RSS peak'],
    rows: results.map((r) => [num(r.items), num(r.itemsPerSec), mib(r.heapAfterGc), mib(r.rss), mib(r.peakRss), mib(r.natsRss), mib(r.peakNatsRss)]),
  });
  const perItem = (last.heapAfterGc - first.heapAfterGc) / (last.items - first.items);
  floor(5, `heap grows < 1 byte/item (${num(first.items)} → ${num(last.items)})`, perItem, perItem < 1, (v) => `${v.toFixed(2)} B/item`);
  const growth = Math.max(last.peakRss - first.peakRss, last.peakNatsRss - first.peakNatsRss);
  floor(5, 'no process RSS grows > 20 MB (peak, smallest → largest run)', growth, growth <= 20 * 2 ** 20,
    () => `node ${mib(last.peakRss - first.peakRss)}, nats-server ${mib(last.peakNatsRss - first.peakNatsRss)}`);
}

// 6. The 48k-item job against a rate-limited API.
async function scenario6(): Promise<void> {
  const items = 48_382;
  const api = await apiServer({ latencyMs: 10, jitterMs: 0, limit: 2_000 });
  const at = load();
  const out: Record<string, Result> = {};
  try {
    for (const mode of ['troupe', 'sequential', 'pool'] as const) {
      await api.reset();
      const r = mode === 'troupe'
        ? await withNats((url) => contender('job48k.ts', { mode, api: api.origin, items, url }, 300_000))
        : await contender('job48k.ts', { mode, api: api.origin, items, sample: 2_000 }, 300_000);
      out[mode] = { ...r, server: await api.stats() };
    }
  } finally {
    api.stop();
  }
  raw.job48k = out;
  const seq = out.sequential!.seconds;
  const row = (name: string, r: Result) => [name, r.error ? `error: ${r.error}` : num(r.seconds, 1), num(r.itemsPerSec), `${ratio(seq, r.seconds).toFixed(1)}×`,
    num(r.server.maxArrivedIn1s), num(r.server.rejected429), r.server.maxArrivedIn1s <= 2000 && r.server.rejected429 === 0 ? 'yes' : 'NO'];
  sections.push({
    n: 6, title: 'The 48k-item job: 48,382 items, Fetcher → Generator → Writer, API at 10 ms with 2,000 req/s per host',
    note: 'The API (own process) answers in 10 ms and 429s any request beyond 2,000 in a sliding 1 s window. troupe: pipelines/job48k.ts through the Supervisor (`troupe start`), ' +
      'Fetcher rate {perSecond: 2000}, wall time includes start and shutdown. Sequential: timed on its first 2,000 items and extrapolated. ' +
      `Pool: 16 concurrent loops, each request then an autocommit upsert. ${at}.`,
    headers: ['contender', 'wall s', 'items/s', 'speedup vs sequential', 'max requests in any 1 s', '429s', 'limit held'],
    rows: [row('troupe (Supervisor)', out.troupe!), row('sequential loop (extrapolated)', out.sequential!), row('Promise pool of 16', out.pool!)],
  });
  const t = out.troupe!;
  const speed = ratio(seq, t.seconds);
  const held = t.server?.maxArrivedIn1s <= 2000 && t.server?.rejected429 === 0 && t.rows === items;
  floor(6, 'troupe ≥ 16× sequential, limit never exceeded, all rows written', speed, speed >= 16 && held,
    (v) => `${v.toFixed(1)}×, max ${t.server?.maxArrivedIn1s}/s, ${t.server?.rejected429} × 429, ${num(t.rows)} rows`);
}

function machine(): Record<string, string> {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown';
  return { nproc: String(cpus().length), cpu: model, node: process.version, date: new Date().toISOString(), loadAtStart: loadavg().map((l) => l.toFixed(2)).join(' ') };
}

function markdown(m: Record<string, string>, seconds: number): string {
  const table = (headers: string[], rows: string[][]) =>
    [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
  const lines = [
    '# troupe benchmark results', '',
    `Machine: \`nproc\` ${m.nproc}, CPU ${m.cpu}, Node ${m.node}, ${m.date}; load average at start ${m.loadAtStart}; suite took ${seconds.toFixed(0)} s. ` +
      'Produced by `npm run bench` (bench/run.ts); raw numbers in bench/results.json.', '',
    '## Floors', '',
    table(['#', 'floor', 'measured', 'result'], floors.map((f) => [String(f.scenario), f.floor, f.value, f.pass ? 'PASS' : '**FAIL**'])), '',
  ];
  for (const s of sections.sort((a, b) => a.n - b.n)) lines.push(`## ${s.n}. ${s.title}`, '', s.note, '', table(s.headers, s.rows), '');
  return lines.join('\n');
}

const m = machine();
console.log(`troupe bench: ${m.nproc} cores, ${m.cpu}, Node ${m.node}, ${m.loadAtStart ? `load ${m.loadAtStart}` : ''}`);
const all: Array<[number, () => Promise<void>]> = [[1, scenario1], [2, scenario2], [3, scenario3], [4, scenario4], [5, scenario5], [6, scenario6]];
for (const [n, fn] of all) {
  if (!want(n)) continue;
  const t0 = Date.now();
  console.log(`[bench] scenario ${n}…`);
  try {
    await fn();
  } catch (err) {
    console.error(`[bench] scenario ${n} failed: ${(err as Error).stack}`);
    floors.push({ scenario: n, floor: `scenario ${n} ran`, value: (err as Error).message, pass: false });
  }
  for (const f of floors.filter((x) => x.scenario === n)) console.log(`  ${f.pass ? 'PASS' : 'FAIL'}  ${f.floor}: ${f.value}`);
  console.log(`  (${round((Date.now() - t0) / 1000, 1)} s)`);
}
const seconds = (Date.now() - started) / 1000;
await writeFile(join(HERE, 'results.json'), `${JSON.stringify({ machine: m, seconds: round(seconds, 1), floors, results: raw }, null, 2)}\n`);
await writeFile(join(HERE, 'RESULTS.md'), markdown(m, seconds));
console.log(`[bench] wrote bench/results.json and bench/RESULTS.md in ${seconds.toFixed(0)} s`);
process.exitCode = floors.every((f) => f.pass) ? 0 : 1;
