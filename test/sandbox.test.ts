import test from 'ava';
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { codes, PermanentError } from '../messages/mod.ts';
import { FileSandbox, TEMP_PREFIX } from '../storage/mod.ts';
import { tempDir } from './helpers/nats.ts';

const dirs: string[] = [];
test.after.always(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function sandbox(): Promise<{ box: FileSandbox; root: string; outside: string }> {
  const base = await tempDir('troupe-sandbox-');
  dirs.push(base);
  const root = join(base, 'out');
  const outside = join(base, 'elsewhere');
  await mkdir(root);
  await mkdir(outside);
  return { box: new FileSandbox(root), root, outside };
}

function refusedAsEscape(t: import('ava').ExecutionContext, fn: () => unknown, root: string, path: string): void {
  const err = t.throws(fn, { instanceOf: PermanentError });
  t.is((err as PermanentError).code, codes.PATH_ESCAPE);
  t.true(err!.message.includes(JSON.stringify(path)), err!.message);
  t.true(err!.message.includes(root), err!.message);
}

test('sandbox - writeAtomic writes the content, creating folders, and leaves no temp file', async (t) => {
  const { box, root } = await sandbox();
  await box.writeAtomic('notes/2026/a.md', '# A\n');
  await box.writeAtomic('notes/2026/a.md', new TextEncoder().encode('# A, again\n'));
  t.is(await readFile(join(root, 'notes/2026/a.md'), 'utf8'), '# A, again\n');
  t.is((await box.read('notes/2026/a.md'))?.toString(), '# A, again\n');
  t.deepEqual(await readdir(join(root, 'notes/2026')), ['a.md']);
});

test('sandbox - read of a missing file is undefined and remove of one is fine', async (t) => {
  const { box } = await sandbox();
  t.is(await box.read('missing.txt'), undefined);
  await box.remove('missing.txt');
  await box.writeAtomic('gone.txt', 'x');
  await box.remove('gone.txt');
  t.is(await box.read('gone.txt'), undefined);
});

test('sandbox - resolve keeps inner paths, even with harmless ..', async (t) => {
  const { box, root } = await sandbox();
  t.is(box.resolve('a/b/../c.txt'), join(root, 'a/c.txt'));
});

test('sandbox - ../x is refused with TROUPE_PATH_ESCAPE', async (t) => {
  const { box, root } = await sandbox();
  refusedAsEscape(t, () => box.resolve('../x'), root, '../x');
  refusedAsEscape(t, () => box.resolve('a/../../x'), root, 'a/../../x');
  const err = await t.throwsAsync(box.writeAtomic('../x', 'no'));
  t.is((err as PermanentError).code, codes.PATH_ESCAPE);
});

test('sandbox - an absolute path is refused with TROUPE_PATH_ESCAPE', async (t) => {
  const { box, root } = await sandbox();
  refusedAsEscape(t, () => box.resolve('/etc/passwd'), root, '/etc/passwd');
  const err = await t.throwsAsync(box.read('/etc/passwd'));
  t.is((err as PermanentError).code, codes.PATH_ESCAPE);
});

test('sandbox - a symlink leading outside the root is refused, for the file and the folders below it', async (t) => {
  const { box, root, outside } = await sandbox();
  await writeFile(join(outside, 'secret.txt'), 'secret');
  await symlink(outside, join(root, 'link'));
  await symlink(join(outside, 'secret.txt'), join(root, 'secret-link.txt'));
  refusedAsEscape(t, () => box.resolve('link/secret.txt'), root, 'link/secret.txt');
  refusedAsEscape(t, () => box.resolve('link/new/deeper.txt'), root, 'link/new/deeper.txt');
  refusedAsEscape(t, () => box.resolve('secret-link.txt'), root, 'secret-link.txt');
  const err = await t.throwsAsync(box.writeAtomic('link/planted.txt', 'x'));
  t.is((err as PermanentError).code, codes.PATH_ESCAPE);
  t.deepEqual(await readdir(outside), ['secret.txt']);
});

test('sandbox - a symlink staying inside the root is allowed', async (t) => {
  const { box, root } = await sandbox();
  await mkdir(join(root, 'real'));
  await symlink(join(root, 'real'), join(root, 'alias'));
  await box.writeAtomic('alias/x.txt', 'ok');
  t.is(await readFile(join(root, 'real/x.txt'), 'utf8'), 'ok');
});

test('sandbox - cleanTemp removes leftover temp files anywhere and nothing else', async (t) => {
  const { box, root } = await sandbox();
  await box.writeAtomic('keep.md', 'keep');
  await box.writeAtomic('deep/er/keep2.md', 'keep');
  await writeFile(join(root, `${TEMP_PREFIX}abc`), 'partial');
  await writeFile(join(root, 'deep/er', `${TEMP_PREFIX}def`), 'partial');
  await writeFile(join(root, 'deep', 'troupe-tmp-lookalike.md'), 'real');
  t.is(await box.cleanTemp(), 2);
  t.deepEqual((await readdir(root, { recursive: true })).sort(),
    ['deep', 'deep/er', 'deep/er/keep2.md', 'deep/troupe-tmp-lookalike.md', 'keep.md']);
  t.is(await box.cleanTemp(), 0);
});

test('sandbox - cleanTemp on a root that does not exist yet removes nothing', async (t) => {
  const { root } = await sandbox();
  t.is(await new FileSandbox(join(root, 'not-yet')).cleanTemp(), 0);
});
