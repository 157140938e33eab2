// The site-notes Writer: pages, the link graph and the vault's files, one transaction a batch.
import type { Item, WriteTx } from '../../actors/mod.ts';
import { nativeDatabase, upsertRows, type SqliteDatabase } from '../../storage/mod.ts';
import type { WriteCommand } from './commands.ts';
import { Meta, Page } from './entities.ts';
import { exportLine, inScope, notePath, renderBrokenLinks, renderIndex, renderNote, rewriteLinks, scopeOf, VAULT_DIR, type Scope } from './lib/mod.ts';

export const vaultFile = (note: string) => `${VAULT_DIR}/${note}`;

/** Applies a batch of commands. Idempotent: replaying a command leaves the same rows and files. */
export async function applyCommands(batch: Array<Item<WriteCommand>>, tx: WriteTx): Promise<void> {
  const scope = scopeOf(tx.params.url!);
  const db = await nativeDatabase(tx.em);
  const pages = [];
  for (const { body: c } of batch) {
    if (c.kind === 'page') pages.push(c);
  }
  if (pages.length > 0) await writePages(pages, scope, db, tx);
  for (const { body: c } of batch) {
    switch (c.kind) {
      case 'page': break;
      case 'unchanged':
        db.prepare('update page set epoch = ? where url = ?').run(c.epoch, c.url);
        break;
      case 'broken':
      case 'skipped': {
        const prev = db.prepare('select status, note_path from page where url = ?').get(c.url) as { status: string; note_path: string } | undefined;
        if (prev?.status === 'done') await tx.files.remove(vaultFile(prev.note_path)); // the page is gone from the site
        await upsertRows(tx.em, Page, [{ url: c.url, notePath: prev?.note_path ?? notePath(c.url, scope), status: c.kind, epoch: c.epoch, httpStatus: c.httpStatus }]);
        break;
      }
      case 'render-note':
        await renderNoteFile(c.url, db, tx);
        break;
      case 'render-site':
        await renderSite(db, tx);
        await upsertRows(tx.em, Meta, [{ key: 'completed_epoch', value: String(c.epoch) }]);
        break;
    }
  }
}

async function writePages(pages: Array<Extract<WriteCommand, { kind: 'page' }>>, scope: Scope, db: SqliteDatabase, tx: WriteTx): Promise<void> {
  await upsertRows(tx.em, Page, pages.map((c) => ({
    url: c.url, notePath: notePath(c.url, scope), status: 'done', epoch: c.epoch, httpStatus: c.httpStatus, title: c.title,
    markdown: c.markdown, headings: JSON.stringify(c.headings), etag: c.etag, lastModified: c.lastModified, hash: c.hash,
  })));
  const dropLinks = db.prepare('delete from link where from_url = ?');
  const addLink = db.prepare('insert into link (from_url, to_url, in_body, in_scope) values (?, ?, ?, ?) on conflict do update set in_body = excluded.in_body');
  // Discovered pages join the frontier with epoch 0, which every crawl generation picks up.
  const discover = db.prepare("insert into page (url, note_path, status, epoch) values (?, ?, 'pending', 0) on conflict do nothing");
  for (const c of pages) {
    dropLinks.run(c.url);
    const body = new Set(c.bodyLinks);
    for (const to of new Set([...c.links, ...c.bodyLinks])) {
      const internal = inScope(to, scope);
      addLink.run(c.url, to, body.has(to) ? 1 : 0, internal ? 1 : 0);
      if (internal) discover.run(to, notePath(to, scope));
    }
    // First version of the note at once; the Exporter re-renders it with backlinks at the end.
    const note = notePath(c.url, scope);
    const markdown = rewriteLinks(c.markdown, note, (u) => (inScope(u, scope) ? notePath(u, scope) : undefined));
    await tx.files.write(vaultFile(note), renderNote({ url: c.url, title: c.title, markdown }, [], note));
  }
}

async function renderNoteFile(url: string, db: SqliteDatabase, tx: WriteTx): Promise<void> {
  const page = db.prepare("select url, note_path, title, markdown from page where url = ? and status = 'done'").get(url) as
    { url: string; note_path: string; title: string; markdown: string } | undefined;
  if (!page) return;
  const targets = new Map((db.prepare(
    "select l.to_url as url, p.note_path as note from link l join page p on p.url = l.to_url where l.from_url = ? and p.status = 'done'",
  ).all(url) as Array<{ url: string; note: string }>).map((r) => [r.url, r.note]));
  const backlinks = db.prepare(
    "select distinct p.title as title, p.note_path as notePath from link l join page p on p.url = l.from_url where l.to_url = ? and l.in_body = 1 and p.status = 'done'",
  ).all(url) as Array<{ title: string; notePath: string }>;
  const markdown = rewriteLinks(page.markdown, page.note_path, (u) => targets.get(u));
  await tx.files.write(vaultFile(page.note_path), renderNote({ url: page.url, title: page.title, markdown }, backlinks, page.note_path));
}

async function renderSite(db: SqliteDatabase, tx: WriteTx): Promise<void> {
  const pages = db.prepare("select url, note_path as notePath, title, headings from page where status = 'done' order by note_path").all() as
    Array<{ url: string; notePath: string; title: string; headings: string }>;
  await tx.files.write('index.md', renderIndex(pages));
  const linksOf = db.prepare('select to_url from link where from_url = ? order by rowid');
  const lines = pages.map((p) => exportLine({ url: p.url, title: p.title, notePath: p.notePath, headings: JSON.parse(p.headings ?? '[]'),
    links: (linksOf.all(p.url) as Array<{ to_url: string }>).map((r) => r.to_url) }));
  await tx.files.write('export.jsonl', lines.length ? `${lines.join('\n')}\n` : '');
  const broken = db.prepare(
    "select l.from_url as \"from\", f.note_path as fromNote, l.to_url as \"to\", t.http_status as status from link l join page t on t.url = l.to_url join page f on f.url = l.from_url where t.status = 'broken' and l.in_body = 1 and f.status = 'done'",
  ).all() as Array<{ from: string; fromNote: string; to: string; status: string }>;
  await tx.files.write('broken-links.md', renderBrokenLinks(broken));
}
