// Scenario 2: HttpFetcher (actors/fetcher/http.ts) against servers/api.ts answering after
// 50 ms ± 10 ms. `concurrency` loops fetch back to back for `seconds` after a 1 s warm-up;
// Little's law allows concurrency / 50 ms requests per second. (Same method as
// bench/fetcher-probe.ts, with the server in its own process.)
import { HttpFetcher } from '../../actors/fetcher/mod.ts';
import { args, percentiles, report, round } from '../lib.ts';

interface Args { origin: string; concurrency: number; seconds: number; latencyMs: number }
const a = args<Args>();
const fetcher = new HttpFetcher({ concurrencyPerOrigin: a.concurrency, connectionsPerOrigin: a.concurrency });
const latencies: number[] = [];
let measuring = false;
let stop = false;
const loop = async (i: number): Promise<void> => {
  for (let n = 0; !stop; n++) {
    const t0 = performance.now();
    await fetcher.fetch({ url: `${a.origin}/items/${i}-${n}` });
    if (measuring) latencies.push(performance.now() - t0);
  }
};
const loops = Array.from({ length: a.concurrency }, (_, i) => loop(i));
await new Promise((r) => setTimeout(r, 1_000));
measuring = true;
const t0 = performance.now();
await new Promise((r) => setTimeout(r, a.seconds * 1_000));
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
stop = true;
await Promise.all(loops);
await fetcher.close();
const reqPerSec = latencies.length / elapsed;
const ideal = a.concurrency / (a.latencyMs / 1000);
report({ concurrency: a.concurrency, requests: latencies.length, reqPerSec: Math.round(reqPerSec), ideal, ratio: round(reqPerSec / ideal, 3), ...percentiles(latencies) });
