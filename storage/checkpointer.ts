// Worker-thread entry: checkpoints a WAL-mode SQLite file in the background (see
// StoreOptions.backgroundCheckpoint in store.ts). Its own connection; PASSIVE checkpoints
// never block the writer, so the writer's commits stop paying for copying the WAL back.
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';

const { dbPath, intervalMs, minFrames } = workerData as { dbPath: string; intervalMs: number; minFrames: number };
const db = new Database(dbPath, { fileMustExist: true });
db.pragma('busy_timeout = 1000');
db.pragma('wal_autocheckpoint = 0');
const walFrames = () => {
  const r = db.pragma('wal_checkpoint(NOOP)' as string) as Array<{ log: number; checkpointed: number }>;
  return (r[0]?.log ?? 0) - (r[0]?.checkpointed ?? 0);
};
const IDLE_MS = 200;
let wait = intervalMs;
let stopping = false;
parentPort!.on('message', (m) => { if (m === 'stop') stopping = true; });
const tick = () => {
  if (stopping) {
    db.close();
    parentPort!.postMessage('stopped');
    return;
  }
  try {
    if (walFrames() >= minFrames) {
      db.pragma('wal_checkpoint(PASSIVE)');
      wait = intervalMs;
    } else {
      wait = Math.min(wait * 2, IDLE_MS); // an idle Writer: look less often
    }
  } catch { /* busy: the next tick tries again */ }
  setTimeout(tick, wait);
};
tick();
