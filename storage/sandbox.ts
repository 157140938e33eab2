/**
 * The Writer's output folder. Every path is resolved inside the root, and every write is
 * atomic: readers see the old file or the new one, never a torn one, even across a crash.
 */

import { randomBytes } from 'node:crypto';
import { lstatSync, realpathSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { codes, PermanentError } from '../messages/errors.ts';

/** Prefix of the temp files `writeAtomic` renames into place; leftovers mean a crash. */
export const TEMP_PREFIX = '.troupe-tmp-';

/** A folder that relative paths cannot escape, by `..`, absolute paths or symlinks. */
export class FileSandbox {
  /** Absolute path of the root folder (it need not exist yet). */
  readonly root: string;

  constructor(root: string) {
    if (typeof root !== 'string' || root === '') throw new PermanentError('FileSandbox root must be a non-empty path', { code: codes.BAD_OPTION });
    this.root = resolve(root);
  }

  /**
   * The absolute path of `relPath` inside the root. Throws a {@link PermanentError} with code
   * `TROUPE_PATH_ESCAPE` for an absolute path, a path whose `..` leaves the root, or one
   * whose deepest existing part is (or passes through) a symlink leading outside the root.
   */
  resolve(relPath: string): string {
    if (typeof relPath !== 'string' || relPath === '' || relPath.includes('\0')) {
      throw new PermanentError(`path ${JSON.stringify(relPath)} must be a non-empty string without NUL bytes`, { code: codes.BAD_NAME });
    }
    if (isAbsolute(relPath)) throw this.#escape(relPath, 'is absolute');
    const target = resolve(this.root, relPath);
    if (!inside(this.root, target) || target === this.root) throw this.#escape(relPath, 'leaves the root');
    // Symlinks: the real location of the deepest part that exists decides. Parts below it do
    // not exist yet, so they will be created as plain folders inside it.
    let existing = target;
    while (existing !== this.root && !exists(existing)) existing = dirname(existing);
    if (existing !== this.root) {
      const realRoot = exists(this.root) ? realpathSync(this.root) : this.root;
      let real: string;
      try {
        real = realpathSync(existing);
      } catch {
        // A dangling symlink: exists() saw the link, realpath cannot follow it.
        throw this.#escape(relPath, 'goes through a symlink that leads nowhere');
      }
      if (!inside(realRoot, real)) throw this.#escape(relPath, `goes through a symlink to ${real}`);
    }
    return target;
  }

  /**
   * Writes `content` to `relPath` atomically: creates the parent folders, writes a temp file
   * in the same folder, fsyncs it, renames it over the target and fsyncs the folder.
   */
  async writeAtomic(relPath: string, content: string | Uint8Array): Promise<void> {
    const target = this.resolve(relPath);
    if (basename(target).startsWith(TEMP_PREFIX)) {
      throw new PermanentError(`path ${JSON.stringify(relPath)} uses the reserved prefix ${TEMP_PREFIX}`, { code: codes.BAD_NAME });
    }
    const dir = dirname(target);
    await mkdir(dir, { recursive: true });
    const temp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    let fh: FileHandle | undefined = await open(temp, 'wx', 0o644);
    try {
      await fh.writeFile(content);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(temp, target);
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined); // the original error is the one that matters
      throw err;
    }
    await syncDir(dir);
  }

  /** Removes `relPath`; a missing file is fine. */
  async remove(relPath: string): Promise<void> {
    try {
      await unlink(this.resolve(relPath));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** The bytes of `relPath`, or undefined if it does not exist. */
  async read(relPath: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.resolve(relPath));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Removes the temp files an interrupted `writeAtomic` left anywhere under the root (call
   * it before the Writer starts). Does not follow symlinks. Returns how many it removed.
   */
  async cleanTemp(): Promise<number> {
    let removed = 0;
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      for (const e of entries) {
        const path = join(dir, e.name);
        if (e.isDirectory()) await walk(path);
        else if (e.isFile() && e.name.startsWith(TEMP_PREFIX)) {
          await unlink(path);
          removed++;
        }
      }
    };
    await walk(this.root);
    return removed;
  }

  #escape(relPath: string, why: string): PermanentError {
    return new PermanentError(`path ${JSON.stringify(relPath)} ${why}: it must stay inside the output root ${this.root}`, { code: codes.PATH_ESCAPE });
  }
}

function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/** Whether `path` exists as an entry; unlike existsSync, a dangling symlink counts. */
function exists(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}
