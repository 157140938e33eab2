// A local JSON API for the Fetcher scenarios, in its own process so it never shares an event
// loop with the client. Answers GET /items/<id> after `latencyMs` ± `jitterMs`; with
// `limit` > 0 it enforces a per-host limit of `limit` requests in any sliding 1 s window and
// answers 429 (Retry-After: 1) above it. GET /__stats reports what it saw; POST /__reset
// clears it. Prints {"port": N} when listening.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { args } from '../lib.ts';

interface Args { latencyMs: number; jitterMs: number; limit: number }
const a = args<Args>();

/** Timestamps (ms) of the last second, oldest first, with the highest count it ever held. */
class Window {
  readonly #t: number[] = [];
  #head = 0;
  max = 0;
  count(now: number): number {
    while (this.#head < this.#t.length && this.#t[this.#head]! <= now - 1000) this.#head++;
    if (this.#head > 4096) { this.#t.splice(0, this.#head); this.#head = 0; }
    return this.#t.length - this.#head;
  }
  add(now: number): void {
    this.#t.push(now);
    this.max = Math.max(this.max, this.count(now));
  }
}

let arrived = new Window();
let accepted = new Window();
let stats = { requests: 0, ok: 0, rejected429: 0 };

const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  if (req.url === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...stats, maxArrivedIn1s: arrived.max, maxAcceptedIn1s: accepted.max }));
    return;
  }
  if (req.url === '/__reset') {
    arrived = new Window();
    accepted = new Window();
    stats = { requests: 0, ok: 0, rejected429: 0 };
    res.end('ok');
    return;
  }
  req.resume();
  const now = performance.now();
  stats.requests++;
  arrived.add(now);
  if (a.limit > 0 && accepted.count(now) >= a.limit) {
    stats.rejected429++;
    res.writeHead(429, { 'retry-after': '1', 'content-length': '0' });
    res.end();
    return;
  }
  accepted.add(now);
  const id = req.url?.split('/').pop() ?? '';
  const wait = a.latencyMs - a.jitterMs + Math.random() * 2 * a.jitterMs;
  setTimeout(() => {
    stats.ok++;
    const body = JSON.stringify({ id, name: `item ${id}`, value: id.length * 7, tags: ['a', 'b'] });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }, wait);
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })));
