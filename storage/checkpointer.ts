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
/** A WAL unchanged this long belongs to a Writer that has paused: copy back what it left. */
const QUIET_MS = 100;
let wait = intervalMs;
let last = 0;
let changed = performance.now();
let stopping = false;
parentPort!.on('message', (m) => { if (m === 'stop') stopping = true; });
const tick = () => {
  if (stopping) {
    db.close();
    parentPort!.postMessage('stopped');
    return;
  }
  try {
    const frames = walFrames();
    const now = performance.now();
    if (frames !== last) {
      last = frames;
      changed = now;
    }
    if (frames >= minFrames || (frames > 0 && now - changed >= QUIET_MS)) {
      db.pragma('wal_checkpoint(PASSIVE)');
      last = 0;
      changed = now;
      wait = intervalMs;
    } else {
      // A WAL that grows is looked at again soon (it must not outgrow minFrames by much); an
      // idle one less and less often.
      wait = changed === now ? intervalMs : Math.min(wait * 2, frames > 0 ? QUIET_MS : IDLE_MS);
    }
  } catch { /* busy: the next tick tries again */ }
  setTimeout(tick, wait);
};
parentPort!.postMessage('running');
tick();
