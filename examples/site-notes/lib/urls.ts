/**
 * URL rules of the site-notes crawl: what counts as the same page, what is inside the
 * crawl's scope, and where a page's note lives inside the vault. Pure and synchronous.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';

/** The part of a site a crawl may visit: one origin and the paths under one folder. */
export type Scope = {
  /** `https://host[:port]` (default port omitted), or `'file://'` for local files. */
  origin: string;
  /** A folder path that starts and ends with `/`, e.g. `/docs/guide/`. */
  pathPrefix: string;
};

const PAGE_PROTOCOLS = new Set(['http:', 'https:', 'file:']);
const INDEX_PAGE = /\/index\.html?$/;

/**
 * The crawl scope of a start URL: its origin and the folder it sits in.
 *
 * The prefix is the start URL's path up to and including its last `/`, the same folder a
 * browser resolves relative links against: `https://x/docs/guide/index.html` and
 * `https://x/docs/guide/` give `/docs/guide/`, while `https://x/docs` (no trailing slash)
 * names a page in `/` and so gives `/`. Throws a `TypeError` for an unusable start URL.
 */
export function scopeOf(startUrl: string): Scope {
  const url = normalizeUrl(startUrl, startUrl);
  if (url === null) throw new TypeError(`start URL must be an http:, https: or file: URL, got ${JSON.stringify(startUrl)}`);
  const parsed = new URL(url);
  return { origin: originOf(parsed), pathPrefix: parsed.pathname.slice(0, parsed.pathname.lastIndexOf('/') + 1) };
}

/**
 * Resolves `href` against `base` into the canonical form of a page URL, or `null` when it
 * is not a page (mailto:, javascript:, data:, … or unparseable).
 *
 * Canonical form: only http:, https: and file:; no fragment; no default port; lower-case
 * scheme and host; `dir/index.html` (and `index.htm`) becomes `dir/`; the query string is
 * kept but its parameters are stably sorted by name (so `?b=2&a=1` and `?a=1&b=2` are one
 * page) and an empty `?` is dropped.
 */
export function normalizeUrl(href: string, base: string): string | null {
  let url: URL;
  try {
    url = new URL(href.trim(), base);
  } catch {
    return null;
  }
  if (!PAGE_PROTOCOLS.has(url.protocol)) return null;
  url.hash = '';
  url.pathname = url.pathname.replace(INDEX_PAGE, '/');
  if (url.search.length > 1) {
    url.searchParams.sort();
  } else {
    url.search = '';
  }
  return url.href;
}

/** Whether a canonical page URL (from {@link normalizeUrl}) lies inside `scope`. */
export function inScope(url: string, scope: Scope): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  return PAGE_PROTOCOLS.has(parsed.protocol) && originOf(parsed) === scope.origin && parsed.pathname.startsWith(scope.pathPrefix);
}

/**
 * The note path of an in-scope page inside the vault: relative, POSIX, ending in `.md`.
 *
 * Readable names for the usual shapes, relative to the scope folder: `dir/` → `dir/index.md`,
 * `name.html` → `name.md`. Every other URL (a query string, an extension-less or non-HTML
 * name, characters unsafe in file names, names with `__`, over-long or reserved names) gets
 * a readable but sanitised name plus `__q-<hash>` (query present) or `__h-<hash>`, a hash of
 * the page's path and query, so two different URLs never share a note. Folders named like a
 * note (`x.md/`) are renamed so a folder never clashes with a file. Case is kept as is: on a
 * case-insensitive file system `A.html` and `a.html` would still clash.
 *
 * Throws a `RangeError` when the URL is outside `scope` (the vault only holds scope pages).
 */
export function notePath(url: string, scope: Scope): string {
  const canonical = normalizeUrl(url, url);
  if (canonical === null || !inScope(canonical, scope)) {
    throw new RangeError(`${url} is outside the crawl scope ${scope.origin}${scope.pathPrefix}`);
  }
  const parsed = new URL(canonical);
  const rest = parsed.pathname.slice(scope.pathPrefix.length);
  const raw = rest.split('/');
  const last = raw.pop() ?? '';
  let lossy = parsed.search !== '';

  const folders = raw.map((segment) => {
    const safe = safeSegment(decodeSegment(segment));
    const name = /\.md$/i.test(safe) ? `${safe}_` : safe;
    if (name !== decodeSegment(segment)) lossy = true;
    return name;
  });

  let stem: string;
  if (last === '') {
    stem = 'index';
  } else {
    const decoded = decodeSegment(last);
    const html = /^(.+)\.html$/.exec(decoded);
    const base = html?.[1] ?? decoded;
    stem = safeSegment(base);
    if (!html || stem !== base) lossy = true;
  }
  if (lossy || folders.some((f) => f.includes('__')) || stem.includes('__')) {
    const hash = createHash('sha256').update(rest + parsed.search).digest('hex').slice(0, 8);
    stem = `${stem}__${parsed.search === '' ? 'h' : 'q'}-${hash}`;
  }
  return [...folders, `${stem}.md`].join('/');
}

/**
 * The Markdown link target from note `fromNote` to note `toNote` (both vault-relative POSIX
 * paths): a relative path (`api/index.md` → `intro.md` gives `../intro.md`) with every
 * segment percent-encoded, parentheses included, so it is safe inside `[text](target)`.
 */
export function relativeLink(fromNote: string, toNote: string): string {
  const relative = posix.relative(posix.dirname(posix.join('/', fromNote)), posix.join('/', toNote));
  return relative.split('/').map(encodeSegment).join('/');
}

/** Percent-encodes one path segment for a Markdown link (`..` is kept). */
export function encodeSegment(segment: string): string {
  return encodeURIComponent(segment).replace(/[()!*']/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function originOf(url: URL): string {
  return url.protocol === 'file:' ? 'file://' : url.origin;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

const RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;
const MAX_SEGMENT = 100;

/** A file-name-safe version of one path segment: letters, digits, space, `.`, `_`, `-`. */
function safeSegment(segment: string): string {
  let safe = segment.replace(/[^\p{L}\p{N} ._-]/gu, '_').replace(/^[. ]+|[. ]+$/g, (m) => '_'.repeat(m.length));
  if (safe === '') safe = '_';
  if (RESERVED.test(safe)) safe = `_${safe}`;
  return safe.length > MAX_SEGMENT ? safe.slice(0, MAX_SEGMENT) : safe;
}
