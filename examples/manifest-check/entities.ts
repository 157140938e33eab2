import { defineEntity, p } from '@mikro-orm/core';

/**
 * One file of the checked tree, as the last check saw it. `epoch` is the check that last saw
 * (or missed) the file; `status` what that check found: added, changed, unchanged,
 * unreadable (it could not be hashed; `sha256` keeps the last known hash) or missing.
 */
export const ManifestFile = defineEntity({
  name: 'ManifestFile',
  tableName: 'manifest',
  properties: {
    path: p.string().primary(),
    size: p.integer(),
    mtimeMs: p.float(),
    sha256: p.string().nullable(),
    epoch: p.integer().index(),
    status: p.string(),
    error: p.string().nullable(),
  },
});

/** What one check (epoch) found different from the one before: added, changed, missing, unreadable. */
export const ManifestChange = defineEntity({
  name: 'ManifestChange',
  tableName: 'manifest_change',
  properties: {
    epoch: p.integer().primary(),
    path: p.string().primary(),
    kind: p.string(),
    size: p.integer().nullable(),
    prevSize: p.integer().nullable(),
    sha256: p.string().nullable(),
    prevSha256: p.string().nullable(),
  },
});

/** Counters and measurements of one check, filled as its files are written and at its end. */
export const CheckRun = defineEntity({
  name: 'CheckRun',
  tableName: 'check_run',
  properties: {
    epoch: p.integer().primary(),
    files: p.integer().default(0),
    hashed: p.integer().default(0),
    hashedBytes: p.integer().default(0),
    rssPeak: p.integer().default(0),
    startedAt: p.float().nullable(),
    finishedAt: p.float().nullable(),
    rssStart: p.integer().nullable(),
    rssEnd: p.integer().nullable(),
  },
});

/** Small facts about the manifest, such as the last completed epoch. */
export const Meta = defineEntity({
  name: 'Meta',
  tableName: 'meta',
  properties: {
    key: p.string().primary(),
    value: p.string(),
  },
});
