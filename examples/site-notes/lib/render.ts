/**
 * The vault's text outputs: link rewriting, notes, the index, the broken-link report and
 * export lines. Pure and deterministic: equal inputs give byte-equal outputs.
 */
import { encodeSegment, relativeLink } from './urls.ts';

/** The folder, next to `index.md` and `broken-links.md`, that holds the notes. */
export const VAULT_DIR = 'vault';

/**
 * Rewrites each inline Markdown link or image `[text](target "title")` whose target
 * `resolve` maps to a note path into a relative link from `fromNote` to that note; every
 * other link (external, unarchived, mailto:) is left byte-for-byte as it was.
 *
 * `resolve` receives the target without its `#fragment` (and without Markdown escapes or
 * `<>`); a fragment of the original target is appended to the rewritten link. Targets may
 * be wrapped in `<>`, contain escaped or balanced parentheses, and link text may contain
 * escaped brackets. Fenced code blocks and inline code spans are not touched.
 */
export function rewriteLinks(markdown: string, fromNote: string, resolve: (absUrl: string) => string | undefined): string {
  let fence: string | undefined;
  return markdown
    .split('\n')
    .map((line) => {
      const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
      if (marker !== undefined && (fence === undefined || (marker[0] === fence[0] && marker.length >= fence.length))) {
        fence = fence === undefined ? marker : undefined;
        return line;
      }
      return fence === undefined ? rewriteLine(line, fromNote, resolve) : line;
    })
    .join('\n');
}

function rewriteLine(line: string, fromNote: string, resolve: (absUrl: string) => string | undefined): string {
  let out = '';
  let i = 0;
  while (i < line.length) {
    const ch = line[i];
    if (ch === '\\') {
      out += line.slice(i, i + 2);
      i += 2;
    } else if (ch === '`') {
      const ticks = /^`+/.exec(line.slice(i))![0];
      const close = line.indexOf(ticks, i + ticks.length);
      const end = close === -1 ? i + ticks.length : close + ticks.length;
      out += line.slice(i, end);
      i = end;
    } else if (ch === ']' && line[i + 1] === '(') {
      const dest = parseDestination(line, i + 2);
      const target = dest && resolveTarget(dest.url, fromNote, resolve);
      if (dest && target !== undefined) {
        out += `](${target}`;
        i = dest.end;
      } else {
        out += '](';
        i += 2;
      }
    } else {
      out += ch;
      i += 1;
    }
  }
  return out;
}

/** Parses a link destination starting at `start`: `<…>` or a run with balanced parens. */
function parseDestination(line: string, start: number): { url: string; end: number } | undefined {
  let i = start;
  while (line[i] === ' ') i++;
  let raw = '';
  if (line[i] === '<') {
    for (i++; i < line.length && line[i] !== '>'; i++) {
      if (line[i] === '\\' && i + 1 < line.length) i++;
      raw += line[i];
    }
    if (line[i] !== '>') return undefined;
    return { url: raw, end: i + 1 };
  }
  let depth = 0;
  for (; i < line.length; i++) {
    const ch = line[i]!;
    if (ch === '\\' && i + 1 < line.length) {
      raw += line[++i];
      continue;
    }
    if (/\s/.test(ch) || (ch === ')' && depth === 0)) break;
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    raw += ch;
  }
  return raw === '' ? undefined : { url: raw, end: i };
}

function resolveTarget(url: string, fromNote: string, resolve: (absUrl: string) => string | undefined): string | undefined {
  const hashAt = url.indexOf('#');
  const page = hashAt === -1 ? url : url.slice(0, hashAt);
  const note = page === '' ? undefined : resolve(page);
  if (note === undefined) return undefined;
  const fragment = hashAt === -1 ? '' : url.slice(hashAt + 1);
  return relativeLink(fromNote, note) + (fragment ? `#${encodeURIComponent(decodeSafe(fragment))}` : '');
}

/**
 * One finished note: YAML front matter (`title`, `source`), the body (Markdown whose links
 * are already rewritten), and a `## Backlinks` list of the notes linking here, sorted by note
 * path and de-duplicated; the section is left out when there are none. Ends with a newline.
 */
export function renderNote(
  page: { url: string; title: string; markdown: string },
  backlinks: Array<{ title: string; notePath: string }>,
  fromNote: string,
): string {
  const parts = [`---\ntitle: ${JSON.stringify(page.title)}\nsource: ${JSON.stringify(page.url)}\n---`];
  const body = page.markdown.trim();
  if (body) parts.push(body);
  const linking = uniqueSorted(backlinks, (b) => b.notePath).filter((b) => b.notePath !== fromNote);
  if (linking.length > 0) {
    parts.push(['## Backlinks', '', ...linking.map((b) => `- [${linkText(b.title)}](${relativeLink(fromNote, b.notePath)})`)].join('\n'));
  }
  return `${parts.join('\n\n')}\n`;
}

/**
 * `index.md`, the table of contents next to the `vault/` folder: one nested list following
 * the vault's folders, a folder's `index.md` first (as the folder's own entry), then its
 * notes sorted by path, then its sub-folders. Links are `vault/<notePath>`.
 */
export function renderIndex(pages: Array<{ title: string; notePath: string; url: string }>): string {
  const root = folderOf(uniqueSorted(pages, (p) => p.notePath));
  const lines = ['# Site notes', '', `${pages.length === 0 ? 'No pages.' : `${countPages(root)} pages.`}`, ''];
  if (root.index) lines.push(`- ${entry(root.index)}`);
  lines.push(...folderLines(root, 0));
  return `${lines.join('\n').trimEnd()}\n`;
}

/**
 * `broken-links.md`: broken targets sorted by URL, each with its status and the notes that
 * link to it (links into `vault/`), sorted and de-duplicated; "No broken links." when empty.
 */
export function renderBrokenLinks(broken: Array<{ from: string; fromNote: string; to: string; status: number | string }>): string {
  const lines = ['# Broken links', ''];
  if (broken.length === 0) return `${lines.join('\n')}\nNo broken links.\n`;
  const byTarget = new Map<string, typeof broken>();
  for (const link of broken) byTarget.set(link.to, [...(byTarget.get(link.to) ?? []), link]);
  const targets = [...byTarget.keys()].sort(compare);
  lines.push(`${targets.length} broken ${targets.length === 1 ? 'target' : 'targets'}.`, '');
  for (const to of targets) {
    const links = uniqueSorted(byTarget.get(to)!, (l) => `${l.fromNote}\n${l.from}\n${l.status}`);
    const statuses = [...new Set(links.map((l) => String(l.status)))].sort(compare).join(', ');
    lines.push(`## <${to}>`, '', `Status: ${statuses}`, '');
    lines.push(...links.map((l) => `- [${linkText(l.fromNote)}](${vaultLink(l.fromNote)}) (${l.from})`), '');
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

/**
 * One line of `export.jsonl` (without the newline): `{"url","title","path","links"}` and
 * `"headings"` when given, always in that key order. `path` is the note path in the vault.
 */
export function exportLine(page: { url: string; title: string; notePath: string; links: string[]; headings?: Array<{ level: number; text: string }> }): string {
  const line: Record<string, unknown> = { url: page.url, title: page.title, path: page.notePath, links: page.links };
  if (page.headings !== undefined) line.headings = page.headings.map((h) => ({ level: h.level, text: h.text }));
  return JSON.stringify(line);
}

type Entry = { title: string; notePath: string };
type Folder = { name: string; index?: Entry; notes: Entry[]; folders: Map<string, Folder> };

function folderOf(pages: Entry[]): Folder {
  const root: Folder = { name: '', notes: [], folders: new Map() };
  for (const page of pages) {
    const segments = page.notePath.split('/');
    const file = segments.pop()!;
    let folder = root;
    for (const name of segments) {
      let next = folder.folders.get(name);
      if (!next) folder.folders.set(name, (next = { name, notes: [], folders: new Map() }));
      folder = next;
    }
    if (file === 'index.md') folder.index = page;
    else folder.notes.push(page);
  }
  return root;
}

function folderLines(folder: Folder, depth: number): string[] {
  const pad = '  '.repeat(depth);
  const lines = folder.notes.map((n) => `${pad}- ${entry(n)}`);
  for (const name of [...folder.folders.keys()].sort(compare)) {
    const sub = folder.folders.get(name)!;
    lines.push(`${pad}- ${sub.index ? entry(sub.index) : `${linkText(name)}/`}`, ...folderLines(sub, depth + 1));
  }
  return lines;
}

function countPages(folder: Folder): number {
  let n = folder.notes.length + (folder.index ? 1 : 0);
  for (const sub of folder.folders.values()) n += countPages(sub);
  return n;
}

function entry(page: Entry): string {
  return `[${linkText(page.title || page.notePath)}](${vaultLink(page.notePath)})`;
}

function vaultLink(notePath: string): string {
  return [VAULT_DIR, ...notePath.split('/')].map(encodeSegment).join('/');
}

/** Escapes text for use inside `[…]`. */
function linkText(text: string): string {
  return text.replace(/[\\[\]]/g, '\\$&').replace(/\s+/g, ' ');
}

function uniqueSorted<T>(items: T[], key: (item: T) => string): T[] {
  const byKey = new Map<string, T>();
  for (const item of items) if (!byKey.has(key(item))) byKey.set(key(item), item);
  return [...byKey.keys()].sort(compare).map((k) => byKey.get(k)!);
}

/** Code-unit order: locale-independent, so output is the same on every machine. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function decodeSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
