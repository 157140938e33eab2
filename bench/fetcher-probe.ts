// Does the Fetcher's HTTP engine really scale with concurrency? A loopback server (on its
// own thread, so it does not steal the client's event loop) answers after 50 ms ± 10 ms;
// with C requests in flight Little's law allows C / 50 ms requests per second.
// Run: npx node bench/fetcher-probe.ts [seconds per level, default 5]
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { HttpFetcher } from '../actors/fetcher/mod.ts';

const LATENCY_MS = 50;
const JITTER_MS = 10;

function serve(): void {
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    req.resume();
    const wait = LATENCY_MS - JITTER_MS + Math.random() * 2 * JITTER_MS;
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '11' });
      res.end('{"ok":true}');
    }, wait);
  });
  server.listen(0, '127.0.0.1', () => parentPort!.postMessage((server.address() as AddressInfo).port));
}

async function level(origin: string, concurrency: number, seconds: number) {
  const fetcher = new HttpFetcher({ concurrencyPerOrigin: concurrency, connectionsPerOrigin: concurrency });
  const latencies: number[] = [];
  let measuring = false;
  let stop = false;
  const loop = async (i: number): Promise<void> => {
    for (let n = 0; !stop; n++) {
      const t0 = performance.now();
      await fetcher.fetch({ url: `${origin}/item/${i}-${n}` });
      if (measuring) latencies.push(performance.now() - t0);
    }
  };
  const loops = Array.from({ length: concurrency }, (_, i) => loop(i));
  // Warm up: open the connections before measuring.
  await new Promise((r) => setTimeout(r, 1_000));
  measuring = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1_000));
  measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  stop = true;
  await Promise.all(loops);
  await fetcher.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  const rate = latencies.length / elapsed;
  const ideal = concurrency / (LATENCY_MS / 1000);
  return { concurrency, rate, ideal, ratio: rate / ideal, p50: pct(0.5), p99: pct(0.99), requests: latencies.length };
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 5);
  const worker = new Worker(new URL(import.meta.url));
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  const origin = `http://127.0.0.1:${port}`;
  console.log(`fetcher-probe: server latency ${LATENCY_MS} ms ± ${JITTER_MS} ms, ${seconds} s per level, undici Pool.request`);
  let ok = true;
  for (const c of [64, 256]) {
    const r = await level(origin, c, seconds);
    const pass = c !== 64 || r.ratio >= 0.9;
    ok &&= pass;
    console.log(
      `concurrency ${String(c).padStart(3)}: ${r.rate.toFixed(0).padStart(5)} req/s of ${r.ideal} ideal ` +
      `(${(r.ratio * 100).toFixed(1)}%), p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, ${r.requests} requests` +
      (c === 64 ? (pass ? '  PASS (>= 90%)' : '  FAIL (< 90%)') : ''),
    );
  }
  await worker.terminate();
  process.exitCode = ok ? 0 : 1;
}

if (isMainThread) await main();
else serve();
