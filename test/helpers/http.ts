import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One request as the test server saw it. */
export interface SeenRequest {
  method: string;
  /** Path and query, e.g. `/flaky?id=a`. */
  url: string;
  headers: IncomingMessage['headers'];
  /** `performance.now()` when the request arrived. */
  at: number;
}

/**
 * A loopback HTTP server with fault injection, on a free port. Routes (query parameters
 * in brackets; `id` keeps per-test state apart so tests can share one server):
 * - `/ok` 200 `ok`; `/slow[?ms=50]` 200 after a delay; `/status/<n>` answers status n
 * - `/429?id=[&after=1&times=1]` 429 with `Retry-After: after` the first `times` requests, then 200
 * - `/flaky?id=[&times=2&status=500]` `status` the first `times` requests, then 200
 * - `/reset?id=[&times=1]` destroys the socket the first `times` requests, then 200
 * - `/hang` never answers
 * - `/big?size=N[&chunked=1]` a body of N bytes, with or without content-length
 * - `/redirect?to=URL[&status=302]` redirects to URL
 * - `/auth` 200 only with `authorization: Bearer <token>` (see `token`), else 401
 */
export interface TestHttp {
  /** `http://127.0.0.1:<port>` */
  readonly origin: string;
  readonly requests: SeenRequest[];
  /** Most requests the server was answering at once. */
  readonly peakActive: number;
  /** The bearer token `/auth` accepts. */
  token: string;
  /** Requests whose path and query equal `url` (or start with it when `prefix`). */
  count(url: string, prefix?: boolean): number;
  /** Arrival times of the requests matching `url` (prefix). */
  times(urlPrefix: string): number[];
  close(): Promise<void>;
}

export async function startTestHttp(): Promise<TestHttp> {
  const requests: SeenRequest[] = [];
  const counters = new Map<string, number>();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const state = { token: 'token-1', active: 0, peakActive: 0 };

  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => { timers.delete(t); fn(); }, ms);
    timers.add(t);
  };
  /** How many times this route+id was hit so far (1 on the first). */
  const hit = (key: string): number => {
    const n = (counters.get(key) ?? 0) + 1;
    counters.set(key, n);
    return n;
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    const q = (name: string, dflt: string): string => url.searchParams.get(name) ?? dflt;
    const id = `${url.pathname}:${q('id', '')}`;
    const text = (status: number, body: string, headers: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)), ...headers });
      res.end(body);
    };
    const route = url.pathname.startsWith('/status/') ? '/status' : url.pathname;
    switch (route) {
      case '/ok': return text(200, 'ok');
      case '/slow': return later(Number(q('ms', '50')), () => text(200, 'slow'));
      case '/status': return text(Number(url.pathname.slice('/status/'.length)), 'status');
      case '/429': {
        if (hit(id) <= Number(q('times', '1'))) return text(429, 'slow down', { 'retry-after': q('after', '1') });
        return text(200, 'ok after 429');
      }
      case '/flaky': {
        if (hit(id) <= Number(q('times', '2'))) return text(Number(q('status', '500')), 'flaky');
        return text(200, 'ok after failures');
      }
      case '/reset': {
        if (hit(id) <= Number(q('times', '1'))) { req.socket.destroy(); return; }
        return text(200, 'ok after reset');
      }
      case '/hang': return;
      case '/big': {
        const size = Number(q('size', '0'));
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        res.writeHead(200, q('chunked', '') ? {} : { 'content-length': String(size) });
        let left = size;
        const pump = (): void => {
          while (left > 0) {
            const n = Math.min(left, chunk.length);
            left -= n;
            if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { res.once('drain', pump); return; }
          }
          res.end();
        };
        res.on('error', () => undefined);
        return pump();
      }
      case '/redirect': return text(Number(q('status', '302')), 'moved', { location: q('to', '/ok') });
      case '/auth': {
        if (req.headers.authorization === `Bearer ${state.token}`) return text(200, 'secret');
        return text(401, 'who are you?');
      }
      default: return text(404, 'no such route');
    }
  };

  const server = createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, at: performance.now() });
    state.peakActive = Math.max(state.peakActive, ++state.active);
    res.on('close', () => { state.active--; });
    // Read (and ignore) any request body before answering.
    req.resume();
    req.on('end', () => handle(req, res));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    origin: `http://127.0.0.1:${port}`,
    requests,
    get peakActive() { return state.peakActive; },
    get token() { return state.token; },
    set token(t: string) { state.token = t; },
    count(url, prefix = false) {
      return requests.filter((r) => (prefix ? r.url.startsWith(url) : r.url === url)).length;
    },
    times(urlPrefix) {
      return requests.filter((r) => r.url.startsWith(urlPrefix)).map((r) => r.at);
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The most requests any window of `windowMs` holds, given sorted or unsorted arrival times. */
export function maxInWindow(times: number[], windowMs: number): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < t.length; hi++) {
    while (t[hi]! - t[lo]! > windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}
