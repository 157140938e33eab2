import test from 'ava';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './helpers/nats.ts';

const run = promisify(execFile);
const cacheModule = new URL('../compile-cache.ts', import.meta.url).href;

/** A fresh Node process that imports compile-cache.ts, then asks a worker thread for its cache folder. */
async function cacheDirs(env: Record<string, string>): Promise<{ main: string | null; worker: string | null }> {
  const script = `
    await import(${JSON.stringify(cacheModule)});
    const { getCompileCacheDir } = await import('node:module');
    const { Worker } = await import('node:worker_threads');
    const w = new Worker("require('node:worker_threads').parentPort.postMessage(require('node:module').getCompileCacheDir() ?? null)", { eval: true, execArgv: [] });
    const worker = await new Promise((r) => w.once('message', r));
    await w.terminate();
    console.log(JSON.stringify({ main: getCompileCacheDir() ?? null, worker }));`;
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NODE_COMPILE') && k !== 'NODE_DISABLE_COMPILE_CACHE'));
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { env: { ...clean, ...env } });
  return JSON.parse(stdout.trim().split('\n').at(-1)!);
}

test('compile cache - the CLI turns it on for its own thread and for every replica thread', async (t) => {
  const tmp = await tempDir('troupe-ncc-');
  const { main, worker } = await cacheDirs({ TMPDIR: tmp });
  t.truthy(main);
  t.true(main!.startsWith(join(tmp, 'node-compile-cache')), `${main} is Node's default folder in the temp folder`);
  t.is(worker, main, 'a worker thread started afterwards uses the same cache');
});

test('compile cache - a NODE_COMPILE_CACHE already set is used as it is, by every thread', async (t) => {
  const dir = await tempDir('troupe-ncc-');
  const { main, worker } = await cacheDirs({ NODE_COMPILE_CACHE: dir });
  t.is(main !== null && dirname(main), dir, 'one version folder inside the given one');
  t.is(worker, main);
});

test('compile cache - NODE_DISABLE_COMPILE_CACHE=1 leaves it off everywhere', async (t) => {
  const { main, worker } = await cacheDirs({ NODE_DISABLE_COMPILE_CACHE: '1' });
  t.is(main, null);
  t.is(worker, null);
});
