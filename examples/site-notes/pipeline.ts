// site-notes: crawl a documentation site (http(s) or file://) into a vault of Markdown notes.
// `npm start` runs it on the sample site that ships beside this file.
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { definePipeline, type Item } from '../../actors/mod.ts';
import type { PageRef, WriteCommand } from './commands.ts';
import { Link, Meta, Page } from './entities.ts';
import { htmlToNote, normalizeUrl } from './lib/mod.ts';
import { applyCommands } from './write.ts';

const SAMPLE = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), 'sample-site', 'index.html')).href;
const PAGE = 200;

function startUrl(params: Readonly<Record<string, string>>): string {
  const url = normalizeUrl(params.url!, params.url!);
  if (!url) throw new Error(`--url ${params.url} is not an http(s) or file URL`);
  return url;
}

interface Cursor { epoch: number; after: number }

export default definePipeline<PageRef, WriteCommand>({
  name: 'site-notes',
  params: {
    url: { description: 'start URL (http, https or file); its folder is the crawl scope', default: SAMPLE },
    rate: { description: 'requests per second per origin', default: '50' },
  },

  scanner: {
    // The frontier lives in the database: pages the Writer discovered and this crawl
    // generation (epoch) has not fetched yet, read in rowid order with a checkpointed cursor.
    async *scan(ctx) {
      const start = startUrl(ctx.params);
      const completed = Number((await ctx.query<{ value: string }>("select value from meta where key = 'completed_epoch'"))[0]?.value ?? 0);
      let { epoch, after } = (ctx.cursor as Cursor | undefined) ?? { epoch: completed + 1, after: 0 };
      if (epoch <= completed) ({ epoch, after } = { epoch: completed + 1, after: 0 });
      const known = await ctx.query('select 1 from page where url = ?', [start]);
      if (known.length === 0) yield { items: [{ key: start, body: { url: start, epoch } }], cursor: { epoch, after } };
      for (;;) {
        const rows = await ctx.query<{ rid: number; url: string; etag: string | null; lm: string | null; hash: string | null }>(
          'select rowid as rid, url, etag, last_modified as lm, hash from page where rowid > ? and epoch < ? order by rowid limit ?', [after, epoch, PAGE]);
        if (rows.length > 0) after = rows[rows.length - 1]!.rid;
        yield {
          items: rows.map((r) => ({ key: r.url, body: { url: r.url, epoch, etag: r.etag, lastModified: r.lm, hash: r.hash } })),
          cursor: { epoch, after },
        };
      }
    },
  },

  fetcher: {
    request({ body }) {
      const headers: Record<string, string> = { accept: 'text/html,application/xhtml+xml' };
      if (body.etag) headers['if-none-match'] = body.etag;
      if (body.lastModified) headers['if-modified-since'] = body.lastModified;
      // A folder page over file:// is its index.html.
      const url = body.url.startsWith('file:') && body.url.endsWith('/') ? `${body.url}index.html` : body.url;
      return { url, headers };
    },
    permanentErrors: 'pass',
    http: (params) => ({ rate: { perSecond: Number(params.rate), burst: Math.max(1, Math.floor(Number(params.rate) / 5)) }, maxAttempts: 3 }),
  },

  generator: {
    generate({ key, body: fetched }): Array<Item<WriteCommand>> {
      const { item } = fetched;
      const base = { url: item.url, epoch: item.epoch };
      if (fetched.error || !fetched.response) {
        return [{ key, body: { kind: 'broken', ...base, httpStatus: String(fetched.error?.status ?? fetched.error?.code ?? 'error') } }];
      }
      const res = fetched.response;
      if (res.status === 304) return [{ key, body: { kind: 'unchanged', ...base } }];
      const type = res.headers['content-type'] ?? '';
      const html = type.includes('html') || (res.url.startsWith('file:') && /\.html?$/.test(res.url));
      if (!html) return [{ key, body: { kind: 'skipped', ...base, httpStatus: String(res.status) } }];
      const hash = createHash('sha256').update(res.body).digest('hex');
      if (hash === item.hash) return [{ key, body: { kind: 'unchanged', ...base } }];
      const note = htmlToNote(Buffer.from(res.body).toString('utf8'), item.url);
      return [{ key, body: {
        kind: 'page', ...base, httpStatus: String(res.status), title: note.title, markdown: note.markdown, headings: note.headings,
        links: note.links, bodyLinks: note.bodyLinks, etag: res.headers.etag ?? null, lastModified: res.headers['last-modified'] ?? null, hash,
      } }];
    },
  },

  writer: {
    entities: [Page, Link, Meta],
    apply: applyCommands,
  },

  exporter: {
    // When the crawl is done: re-render every note with its backlinks, then the index,
    // export.jsonl and broken-links.md — all written by the Writer.
    async *finish(ctx) {
      const cursor = (await ctx.query<{ cursor: string }>("select cursor from troupe_checkpoint where name = 'scanner'"))[0];
      const epoch = cursor ? (JSON.parse(cursor.cursor) as Cursor).epoch : 1;
      let after = 0;
      for (;;) {
        const rows = await ctx.query<{ rid: number; url: string }>("select rowid as rid, url from page where status = 'done' and rowid > ? order by rowid limit ?", [after, PAGE]);
        if (rows.length === 0) break;
        after = rows[rows.length - 1]!.rid;
        for (const r of rows) yield { key: `render-note:${r.url}`, body: { kind: 'render-note', url: r.url } };
      }
      yield { key: 'render-site', body: { kind: 'render-site', epoch } };
    },
  },

  roles: {
    fetcher: { maxInFlight: 32 },
    generator: { replicas: 2, maxInFlight: 4 },
    // Crawls are cycles (pages discover pages): the frontier is in the database, so no stage
    // waits on a stage behind it; dedupe within a run is by page URL.
  },
});
