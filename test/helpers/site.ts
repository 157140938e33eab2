// A generated documentation site for end-to-end crawl tests, served by a real HTTP server.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One page of the generated site. `path` is its canonical URL path (`/docs/guide/`, `/docs/guide/a.html`). */
export interface SitePage {
  path: string;
  title: string;
  /** Canonical paths of the site pages it links to. */
  links: string[];
  html: string;
}

/** The generated site: pages under `/docs/`, plus what its links point at besides them. */
export interface DocsSite {
  pages: Map<string, SitePage>;
  /** In-scope paths that are linked but do not exist (answered 404). */
  missing: string[];
  /** Paths on the same server outside `/docs/` that pages link to (answered 200). */
  outside: string[];
  /** Absolute external URLs pages link to (never fetched). */
  external: string[];
}

export interface SiteOptions {
  /** How many pages, index pages included. @default 300 */
  pages?: number;
  /** Links to pages that do not exist. @default 10 */
  missing?: number;
  /** Links to `/outside/…` on the same server. @default 10 */
  outside?: number;
  /** Seed of the generator: equal seeds give byte-equal sites. @default 1 */
  seed?: number;
}

/** A small deterministic PRNG (mulberry32). */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TOPICS = ['install', 'config', 'cluster', 'backup', 'storage', 'query', 'index', 'schema', 'auth', 'metrics', 'logging', 'upgrade'];
const FOLDERS = ['guide/', 'guide/advanced/', 'guide/advanced/internals/', 'reference/', 'reference/api/', 'reference/cli/', 'tutorials/', 'tutorials/first-steps/', 'ops/', 'ops/runbooks/'];

/** The relative href from page `from` to page `to` (both canonical paths), as an author would write it. */
function relativeHref(from: string, to: string, style: number): string {
  const fromDir = from.slice(0, from.lastIndexOf('/') + 1).split('/').filter(Boolean);
  const toParts = to.split('/').filter(Boolean);
  const file = to.endsWith('/') ? (style % 2 === 0 ? '' : 'index.html') : toParts.pop()!;
  const toDir = to.endsWith('/') ? toParts : toParts;
  let common = 0;
  while (common < fromDir.length && common < toDir.length && fromDir[common] === toDir[common]) common++;
  const up = fromDir.slice(common).map(() => '..');
  const down = toDir.slice(common);
  const rel = [...up, ...down].join('/');
  const href = rel === '' ? file : `${rel}/${file}`;
  return href === '' ? './' : href;
}

/**
 * Generates a site of interlinked pages under `/docs/`: nested folders, each with an index
 * page; every page links to 3–8 other pages (relative hrefs, some with `#fragments` or
 * `index.html`), some link to missing pages, to `/outside/…` or to external sites, and each
 * has a nav bar linking home. All pages are reachable from `/docs/`.
 */
export function generateSite(options: SiteOptions = {}): DocsSite {
  const count = options.pages ?? 300;
  const rnd = random(options.seed ?? 1);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const paths = ['/docs/', ...FOLDERS.map((f) => `/docs/${f}`)];
  for (let i = 0; paths.length < count; i++) paths.push(`/docs/${pick(FOLDERS)}${pick(TOPICS)}-${i}.html`);
  const missing = Array.from({ length: options.missing ?? 10 }, (_, i) => `/docs/${pick(FOLDERS)}gone-${i}.html`);
  const outside = Array.from({ length: options.outside ?? 10 }, (_, i) => `/outside/x-${i}.html`);
  const external = Array.from({ length: 8 }, (_, i) => `https://example.com/ext/${i}.html`);

  const pages = new Map<string, SitePage>();
  paths.forEach((path, i) => {
    // A chain through every page keeps all of them reachable; the rest of the links are random.
    const links = new Set<string>();
    if (i + 1 < paths.length) links.add(paths[i + 1]!);
    const want = 3 + Math.floor(rnd() * 6);
    while (links.size < want) {
      const to = pick(paths);
      if (to !== path) links.add(to);
    }
    const items = [...links].map((to, k) => {
      const frag = k % 3 === 2 ? '#details' : '';
      return `<li><a href="${relativeHref(path, to, i + k)}${frag}">Page ${to}</a></li>`;
    });
    if (i % Math.floor(count / missing.length) === 1 && i < count) {
      const gone = missing[Math.floor(i / Math.floor(count / missing.length)) % missing.length]!;
      items.push(`<li><a href="${relativeHref(path, gone, 0)}">an old page</a></li>`);
    }
    if (i % Math.floor(count / outside.length) === 3) {
      items.push(`<li><a href="${outside[Math.floor(i / Math.floor(count / outside.length)) % outside.length]}">outside the docs</a></li>`);
    }
    if (i % 7 === 0) items.push(`<li><a href="${pick(external)}">elsewhere</a></li>`, '<li><a href="mailto:docs@example.com">mail us</a></li>');
    const title = `${path === '/docs/' ? 'Home' : path.replace(/^\/docs\//, '').replace(/\.html$|\/$/, '')} (page ${i})`;
    const html = [
      '<!doctype html>', `<html><head><meta charset="utf-8"><title>${title}</title></head><body>`,
      '<nav><a href="/docs/">Home</a></nav>',
      `<main><h1>${title}</h1><p>Generated page ${i} about <em>${path}</em>.</p>`,
      '<h2 id="details">Details</h2>', `<ul>${items.join('')}</ul>`, '<pre><code>example --flag</code></pre>',
      '</main><footer>© docs</footer></body></html>',
    ].join('\n');
    pages.set(path, { path, title, links: [...links], html });
  });
  // Every missing and outside target must be linked by at least one page.
  const linked = [...pages.values()].map((p) => p.html).join('\n');
  for (const gone of missing) if (!linked.includes(gone.slice(gone.lastIndexOf('/') + 1))) throw new Error(`site generator: ${gone} is not linked`);
  for (const out of outside) if (!linked.includes(out)) throw new Error(`site generator: ${out} is not linked`);
  return { pages, missing, outside, external };
}

/** One request as the site server saw it. */
export interface SiteRequest {
  method: string;
  path: string;
  /** Whether it carried `If-None-Match`. */
  conditional: boolean;
  status: number;
  /** `performance.now()` when it arrived. */
  at: number;
}

export interface SiteServer {
  /** `http://127.0.0.1:<port>` */
  readonly origin: string;
  /** `<origin>/docs/`: the start URL of a crawl. */
  readonly start: string;
  readonly site: DocsSite;
  readonly requests: SiteRequest[];
  /** Delay before each answer, ms (change it at any time). */
  delayMs: number;
  /** Requests per path. */
  counts(): Map<string, number>;
  close(): Promise<void>;
}

/**
 * Serves a generated site (and `/outside/…` pages) on a loopback port. Records every request;
 * answers `If-None-Match` with 304 when the ETag matches; `/docs/x/index.html` is `/docs/x/`.
 */
export async function serveSite(site: DocsSite = generateSite()): Promise<SiteServer> {
  const requests: SiteRequest[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const state = { delayMs: 0 };
  const etag = (body: string) => `"${createHash('sha1').update(body).digest('hex').slice(0, 16)}"`;

  const answer = (req: IncomingMessage): { status: number; headers: Record<string, string>; body: string } => {
    const path = new URL(req.url ?? '/', 'http://x').pathname.replace(/\/index\.html$/, '/');
    const outside = path.startsWith('/outside/');
    const page = site.pages.get(path);
    const body = page?.html ?? (outside ? `<html><head><title>Outside</title></head><body><p>${path}</p></body></html>` : undefined);
    if (body === undefined) return { status: 404, headers: { 'content-type': 'text/html' }, body: '<h1>Not found</h1>' };
    const tag = etag(body);
    if (req.headers['if-none-match'] === tag) return { status: 304, headers: { etag: tag }, body: '' };
    return { status: 200, headers: { 'content-type': 'text/html; charset=utf-8', etag: tag }, body };
  };

  const server = createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const { status, headers, body } = answer(req);
    requests.push({ method: req.method ?? '', path, conditional: req.headers['if-none-match'] !== undefined, status, at: performance.now() });
    const send = () => {
      res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
    };
    if (state.delayMs <= 0) return send();
    const t = setTimeout(() => { timers.delete(t); send(); }, state.delayMs);
    timers.add(t);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin, start: `${origin}/docs/`, site, requests,
    get delayMs() { return state.delayMs; },
    set delayMs(ms: number) { state.delayMs = ms; },
    counts() {
      const out = new Map<string, number>();
      for (const r of requests) out.set(r.path, (out.get(r.path) ?? 0) + 1);
      return out;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
