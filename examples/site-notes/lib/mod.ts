/**
 * The pure building blocks of the site-notes example: URL rules, HTML → note parts, and
 * the rendering of notes, index, broken-link report and export lines.
 */
export { scopeOf, normalizeUrl, inScope, notePath, relativeLink } from './urls.ts';
export type { Scope } from './urls.ts';
export { htmlToNote } from './html.ts';
export type { PageNote } from './html.ts';
export { rewriteLinks, renderNote, renderIndex, renderBrokenLinks, exportLine, VAULT_DIR } from './render.ts';
