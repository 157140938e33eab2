// A lazy, sorted, resumable directory walk.
import { statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { codes, TroupeError } from '../../messages/mod.ts';

/** What is wrong with `--root` (missing, not a directory), naming the value given; undefined if fine. */
export function rootProblem(root: string | undefined): string | undefined {
  if (!root) return '--root is required: the directory tree to check';
  const st = statSync(resolve(root), { throwIfNoEntry: false });
  if (!st) return `--root ${root} does not exist`;
  if (!st.isDirectory()) return `--root ${root} is not a directory`;
  return undefined;
}

/** Resolves `--root`, throwing when it is not a directory. */
export function checkRoot(root: string | undefined): string {
  const problem = rootProblem(root);
  if (problem) throw new TroupeError(codes.BAD_OPTION, problem);
  return resolve(root!);
}

export interface WalkOptions {
  /** Yield only files after this relative path (in walk order). */
  after?: string | null;
  /** Absolute folders to leave out (e.g. the job's own output folder inside the root). */
  exclude?: string[];
  /** Called for a folder that cannot be read (it is skipped). */
  onError?: (path: string, err: Error) => void;
}

/**
 * Yields the relative paths (`/`-separated) of the regular files under `root`, depth first
 * with every folder's entries sorted by code unit — so the order is that of the paths'
 * segment lists, and a path is a complete cursor. Holds one folder listing per level, never
 * the tree; resuming after a path skips whole folders before it without reading them.
 * Symbolic links are not followed.
 */
export async function* walkFiles(root: string, options: WalkOptions = {}): AsyncGenerator<string> {
  const cursor = options.after ? options.after.split('/') : [];
  const exclude = new Set((options.exclude ?? []).map((d) => resolve(d)));
  yield* walkFolder(root, [], cursor, cursor.length > 0, exclude, options.onError);
}

async function* walkFolder(root: string, prefix: string[], cursor: string[], onCursorPath: boolean,
  exclude: Set<string>, onError: WalkOptions['onError']): AsyncGenerator<string> {
  const abs = join(root, ...prefix);
  if (exclude.has(abs)) return;
  let entries;
  try {
    entries = await readdir(abs, { withFileTypes: true });
  } catch (err) {
    if (prefix.length === 0) throw err;
    onError?.(prefix.join('/'), err as Error);
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // On the cursor's path, entries before the cursor's segment at this depth were done.
  const from = onCursorPath ? cursor[prefix.length] : undefined;
  for (const e of entries) {
    let childOnCursorPath = false;
    if (from !== undefined) {
      if (e.name < from) continue;
      if (e.name === from) {
        if (!e.isDirectory()) continue; // the cursor itself
        childOnCursorPath = true;
      }
    }
    const path = [...prefix, e.name];
    if (e.isDirectory()) yield* walkFolder(root, path, cursor, childOnCursorPath, exclude, onError);
    else if (e.isFile()) yield path.join('/');
  }
}
