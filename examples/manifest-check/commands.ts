// What the manifest-check stages send each other.

/** What the manifest held for a file when the Scanner read it. */
export interface Known {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/** A file to check (Scanner → Generator): its path relative to the root and its stat. */
export interface FileRef {
  path: string;
  size: number;
  mtimeMs: number;
  epoch: number;
  known?: Known;
}

/** The Scanner's checkpointed cursor: the check (epoch) and the last path it emitted. */
export interface Cursor {
  epoch: number;
  /** Last relative path emitted, in walk order; null before the first. */
  after: string | null;
  /** When this epoch's scan began (ms since the epoch) and the process RSS then. */
  startedAt: number;
  rssStart: number;
  /** The process that began the epoch: another one at the end means the check was resumed. */
  pid: number;
}

export type WriteCommand =
  | { kind: 'file'; path: string; size: number; mtimeMs: number; epoch: number; sha256: string | null; hashed: boolean; error?: string }
  | { kind: 'finish'; epoch: number; root: string; startedAt: number; rssStart: number; pid: number };
