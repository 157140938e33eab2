// The report of one check, as data (report.json) and for people (report.md).

export interface ChangeEntry {
  path: string;
  size: number | null;
  prevSize: number | null;
  sha256: string | null;
  prevSha256: string | null;
}

export interface CheckReport {
  root: string;
  /** The check's number (epoch); the manifest's previous state is that of check - 1. */
  check: number;
  previous: { check: number; finishedAt: string } | null;
  startedAt: string;
  finishedAt: string;
  counts: { seen: number; added: number; changed: number; unchanged: number; unreadable: number; missing: number };
  instrumentation: {
    durationMs: number;
    filesPerSecond: number;
    hashedFiles: number;
    hashedBytes: number;
    /** Files whose size and mtime matched the manifest, so their hash was taken from it. */
    hashSkipped: number;
    rssStartBytes: number;
    rssEndBytes: number;
    rssDeltaBytes: number;
    /** Highest RSS seen by the Writer (sampled once per batch). */
    rssPeakBytes: number;
    /** The check was interrupted and resumed by another process: duration includes the pause, the RSS delta compares two processes. */
    resumed: boolean;
  };
  /** Up to `listLimit` entries of each kind, by path; `counts` has the totals. */
  listLimit: number;
  added: ChangeEntry[];
  changed: ChangeEntry[];
  missing: ChangeEntry[];
  unreadable: Array<{ path: string; error: string }>;
}

const MD_LIST = 100;

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

function list<T>(title: string, total: number, entries: T[], line: (e: T) => string): string[] {
  if (total === 0) return [];
  const out = ['', `## ${title} (${total})`, ''];
  for (const e of entries.slice(0, MD_LIST)) out.push(`- ${line(e)}`);
  if (total > Math.min(entries.length, MD_LIST)) out.push(`- … and ${total - Math.min(entries.length, MD_LIST)} more (report.json lists up to the first ${entries.length})`);
  return out;
}

const code = (path: string) => `\`${path.replaceAll('`', "'")}\``;

/** Renders the report as Markdown. */
export function renderReport(r: CheckReport): string {
  const c = r.counts;
  const i = r.instrumentation;
  const since = r.previous ? `since check ${r.previous.check} (${r.previous.finishedAt})` : 'first check: every file is new to the manifest';
  const sign = i.rssDeltaBytes >= 0 ? '+' : '−';
  return [
    `# Manifest check ${r.check} of ${code(r.root)}`,
    '',
    `${r.finishedAt} — ${since}.`,
    '',
    '| | files |',
    '|---|---:|',
    `| added | ${c.added} |`,
    `| changed | ${c.changed} |`,
    `| missing | ${c.missing} |`,
    `| unchanged | ${c.unchanged} |`,
    `| unreadable | ${c.unreadable} |`,
    `| seen | ${c.seen} |`,
    '',
    '## Instrumentation',
    '',
    `- duration ${(i.durationMs / 1000).toFixed(2)} s${i.resumed ? ' (resumed after an interruption: includes the pause)' : ''}, ${i.filesPerSecond} files/s`,
    `- hashed ${i.hashedFiles} files (${mib(i.hashedBytes)}); ${i.hashSkipped} taken from the manifest (same size and mtime)`,
    `- memory (process RSS): ${mib(i.rssStartBytes)} at start, ${mib(i.rssEndBytes)} at end, delta ${sign}${mib(Math.abs(i.rssDeltaBytes))}, peak ${mib(i.rssPeakBytes)}`,
    ...list('Added', c.added, r.added, (e) => `${code(e.path)} (${e.size} bytes)`),
    ...list('Changed', c.changed, r.changed, (e) => `${code(e.path)} (${e.prevSize} → ${e.size} bytes)`),
    ...list('Missing', c.missing, r.missing, (e) => `${code(e.path)} (was ${e.prevSize} bytes)`),
    ...list('Unreadable', c.unreadable, r.unreadable, (e) => `${code(e.path)}: ${e.error}`),
    '',
  ].join('\n');
}
