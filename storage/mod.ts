// The Writer's world, public surface: the database, the output folder and the Writer lease.
export {
  openStore, Store, recordLedger, appliedIds, loadLedgerKeys, saveCheckpoint, loadCheckpoint, ledgerCounts, isDone,
  type EntityList, type LedgerEntry, type StoreOptions,
} from './store.ts';
export { TroupeLedger, TroupeCheckpoint, troupeEntities } from './entities.ts';
export { upsertRows, nativeDatabase, type SqliteDatabase, type SqliteStatement } from './upsert.ts';
export { FileSandbox, TEMP_PREFIX } from './sandbox.ts';
export { KeyFilter } from './key-filter.ts';
export { WriterLease, readLease, LEASE_BUCKET, type LeaseHolder, type LeaseInfo, type LeaseOptions } from './lease.ts';
