import test from 'ava';
import { readFile } from 'node:fs/promises';
import { NODE_FLAGS } from '../actors/memory.ts';

const root = new URL('../', import.meta.url);

test('memory flags - the troupe command and the npm scripts start Node with every flag of NODE_FLAGS', async (t) => {
  const shebang = (await readFile(new URL('bin/troupe.mjs', root), 'utf8')).split('\n')[0]!;
  const scripts = (JSON.parse(await readFile(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const nodeScripts = Object.entries(scripts).filter(([, cmd]) => /^node .*cli\.ts/.test(cmd));
  t.true(nodeScripts.length >= 2, 'start and troupe run cli.ts');
  for (const flag of NODE_FLAGS) {
    t.true(shebang.split(' ').includes(flag), `bin/troupe.mjs starts Node with ${flag}`);
    for (const [name, cmd] of nodeScripts) t.true(cmd.split(' ').includes(flag), `npm run ${name} starts Node with ${flag}`);
  }
});
