/**
 * One fetched HTML page → the parts of its note: title, outline, Markdown body and links.
 */
import { parse } from 'node-html-parser';
import type { HTMLElement } from 'node-html-parser';
import { toMarkdown } from './markdown.ts';
import { normalizeUrl } from './urls.ts';

/** What a page contributes to the vault. */
export type PageNote = {
  title: string;
  /** The headings of the note body in document order, text with whitespace collapsed. */
  headings: Array<{ level: number; text: string }>;
  /** The body as Markdown; link targets are absolute canonical URLs (see {@link htmlToNote}). */
  markdown: string;
  /** Every page link of the whole document (navigation included), for the crawl frontier. */
  links: string[];
  /** The page links that appear in `markdown`, for backlinks and link checks of the note body. */
  bodyLinks: string[];
};

/** Elements that never carry note content. */
const CHROME = ['script', 'style', 'noscript', 'nav', 'header', 'footer', 'template', 'iframe'];

/**
 * Turns a page into its note parts.
 *
 * - title: `<title>`, else the first `<h1>`, else the URL's last path segment (without
 *   `.html`; a folder page `…/api/` or `…/api/index.html` gives `api`), else the host.
 * - body: `<main>`, else `<article>`, else `<body>`, without script, style, noscript, nav,
 *   header, footer (and template, iframe), converted by turndown (ATX headings, fenced code,
 *   `-` bullets, pipe tables).
 * - links: each `<a href>` resolved against `<base href>` (itself resolved against `pageUrl`)
 *   or `pageUrl`, canonicalised with {@link normalizeUrl}, de-duplicated, in document order;
 *   hrefs that are not pages (mailto:, javascript:, …) are left out.
 * - in the Markdown a page link's target is its canonical URL plus the original `#fragment`,
 *   if any (the fragment is kept so the rewritten vault link can still point at a section);
 *   mailto: and similar links keep their href; `javascript:` links lose their href.
 */
export function htmlToNote(html: string, pageUrl: string): PageNote {
  const root = parse(html, { comment: false });
  const baseHref = root.querySelector('base[href]')?.getAttribute('href');
  const base = (baseHref !== undefined && safeResolve(baseHref, pageUrl)) || pageUrl;

  const links = uniqueLinks(root.querySelectorAll('a[href]'), base);
  const title = pageTitle(root, pageUrl);

  for (const tag of CHROME) for (const el of root.querySelectorAll(tag)) el.remove();
  const body = root.querySelector('main') ?? root.querySelector('article') ?? root.querySelector('body') ?? root;

  for (const a of body.querySelectorAll('a[href]')) absolutizeLink(a, base);
  for (const img of body.querySelectorAll('img[src]')) {
    const src = safeResolve(img.getAttribute('src') ?? '', base);
    if (src) img.setAttribute('src', src);
  }
  const headings = body.querySelectorAll('h1, h2, h3, h4, h5, h6').map((h) => ({
    level: Number(h.tagName.slice(1)),
    text: collapse(h.text),
  }));
  return { title, headings, markdown: toMarkdown(body.innerHTML), links, bodyLinks: uniqueLinks(body.querySelectorAll('a[href]'), base) };
}

function pageTitle(root: HTMLElement, pageUrl: string): string {
  const fromTag = collapse(root.querySelector('title')?.text ?? '') || collapse(root.querySelector('h1')?.text ?? '');
  if (fromTag) return fromTag;
  const url = new URL(pageUrl);
  const segment = url.pathname.split('/').filter(Boolean).pop();
  if (segment === undefined) return url.hostname || 'index';
  const name = safeDecode(segment).replace(/\.html?$/i, '');
  return name === 'index' ? (safeDecode(url.pathname.split('/').filter(Boolean).at(-2) ?? '') || url.hostname || 'index') : name;
}

function uniqueLinks(anchors: HTMLElement[], base: string): string[] {
  const seen = new Set<string>();
  for (const a of anchors) {
    const url = normalizeUrl(a.getAttribute('href') ?? '', base);
    if (url !== null) seen.add(url);
  }
  return [...seen];
}

/** Rewrites an anchor's href to its canonical absolute URL, keeping the fragment. */
function absolutizeLink(a: HTMLElement, base: string): void {
  const href = a.getAttribute('href') ?? '';
  const url = normalizeUrl(href, base);
  if (url !== null) {
    const hash = safeResolve(href, base)?.split('#')[1];
    a.setAttribute('href', hash ? `${url}#${hash}` : url);
  } else if (/^\s*javascript:/i.test(href)) {
    a.removeAttribute('href');
  }
}

function safeResolve(href: string, base: string): string | undefined {
  try {
    return new URL(href.trim(), base).href;
  } catch {
    return undefined;
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function collapse(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}
