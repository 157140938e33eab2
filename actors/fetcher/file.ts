import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { codes } from '../../messages/errors.ts';
import { FetchError } from './retry.ts';

/** What reading a local file yields: the body and its size. */
export interface FileBody {
  path: string;
  body: Uint8Array;
  mtimeMs: number;
}

const STATUS_OF: Readonly<Record<string, [number, string]>> = {
  ENOENT: [404, 'not found'],
  ENOTDIR: [404, 'not found'],
  EISDIR: [400, 'is a directory'],
  EACCES: [403, 'permission denied'],
  EPERM: [403, 'permission denied'],
};

/**
 * Reads a `file://` URL with the same size limit as HTTP bodies, so pipelines work on
 * local sources. A missing file is a permanent `404`; a file over the limit is
 * `TROUPE_TOO_LARGE` (checked before reading and again while reading, as it may grow).
 */
export async function readFileUrl(url: URL, maxBytes: number, signal?: AbortSignal): Promise<FileBody> {
  const path = fileURLToPath(url);
  let handle;
  try {
    handle = await open(path, 'r');
    const st = await handle.stat();
    if (st.isDirectory()) throw Object.assign(new Error(`${path} is a directory`), { code: 'EISDIR' });
    if (st.size > maxBytes) throw tooLarge(url, st.size, maxBytes);
    const buf = new Uint8Array(Math.min(st.size, maxBytes) + 1);
    let size = 0;
    for (;;) {
      signal?.throwIfAborted();
      const { bytesRead } = await handle.read(buf, size, buf.length - size, size);
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > maxBytes) throw tooLarge(url, size, maxBytes);
      if (size === buf.length) break;
    }
    return { path, body: buf.subarray(0, size), mtimeMs: st.mtimeMs };
  } catch (err) {
    if (err instanceof FetchError || signal?.aborted) throw err;
    const code = (err as { code?: string }).code ?? '';
    const [status, what] = STATUS_OF[code] ?? [500, (err as Error).message];
    throw new FetchError(`${status} ${what}: ${url.href}`, { code: codes.HTTP, url: url.href, status, attempts: 1, cause: err });
  } finally {
    await handle?.close();
  }
}

/** The permanent error of a body over `maxBodyBytes` (`size` is what was seen so far or announced). */
export function tooLarge(url: URL | string, size: number, maxBytes: number, attempts = 1, status?: number): FetchError {
  const href = typeof url === 'string' ? url : url.href;
  return new FetchError(`body of ${href} is larger than maxBodyBytes (${size} > ${maxBytes} bytes)`,
    { code: codes.TOO_LARGE, url: href, attempts, status });
}
