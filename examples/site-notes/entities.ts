import { defineEntity, p } from '@mikro-orm/core';

/**
 * One page of the crawl. `status`: pending (discovered, not fetched), done (archived as a
 * note), broken (fetch failed permanently), skipped (not HTML). `epoch` is the crawl
 * generation that last saw the page: a re-run starts a new epoch and re-checks every page.
 */
export const Page = defineEntity({
  name: 'Page',
  tableName: 'page',
  properties: {
    url: p.string().primary(),
    notePath: p.string(),
    status: p.string(),
    epoch: p.integer(),
    httpStatus: p.string().nullable(),
    title: p.text().nullable(),
    markdown: p.text().nullable(),
    headings: p.text().nullable(),
    etag: p.string().nullable(),
    lastModified: p.string().nullable(),
    hash: p.string().nullable(),
  },
});

/** A link from one archived page to any URL; `inBody` is false for navigation links. */
export const Link = defineEntity({
  name: 'Link',
  tableName: 'link',
  properties: {
    fromUrl: p.string().primary(),
    toUrl: p.string().primary(),
    inBody: p.boolean(),
    inScope: p.boolean(),
  },
});

/** Small facts about the crawl, such as the last completed epoch. */
export const Meta = defineEntity({
  name: 'Meta',
  tableName: 'meta',
  properties: {
    key: p.string().primary(),
    value: p.string(),
  },
});
