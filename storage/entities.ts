/**
 * troupe's own tables. They live beside the pipeline's entities in the same SQLite file so
 * that the Writer records an item's outcome in the same transaction as its effect.
 */

import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/**
 * The item ledger: one row per (item key, stage) with the latest status and attempt count.
 * The Writer upserts it for every item it applies, in the same transaction.
 */
export const TroupeLedger = defineEntity({
  name: 'TroupeLedger',
  tableName: 'troupe_ledger',
  properties: {
    key: p.string().primary(),
    stage: p.string().primary(),
    status: p.string(),
    attempts: p.integer(),
    lastError: p.text().nullable(),
    /** Envelope id of the message last applied for this key: a redelivery of it is skipped. */
    lastId: p.string().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});
export type TroupeLedger = InferEntity<typeof TroupeLedger>;

/** Named checkpoints, such as a Scanner's cursor; `cursor` holds JSON text. */
export const TroupeCheckpoint = defineEntity({
  name: 'TroupeCheckpoint',
  tableName: 'troupe_checkpoint',
  properties: {
    name: p.string().primary(),
    cursor: p.text(),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});
export type TroupeCheckpoint = InferEntity<typeof TroupeCheckpoint>;

/** The entities every store registers besides the pipeline's own. */
export const troupeEntities = [TroupeLedger, TroupeCheckpoint] as const;
