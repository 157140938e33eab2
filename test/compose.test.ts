import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ROOT } from './helpers/cli.ts';

// No Docker engine runs here: the file is checked for what it refers to, not run.
const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as {
  services: Record<string, { image?: string; command?: string[]; depends_on?: string[]; volumes?: string[]; environment?: Record<string, string>; deploy?: { replicas?: number } }>;
  volumes: Record<string, unknown>;
};
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };

test('compose - NATS runs with JetStream on a named volume', (t) => {
  const nats = compose.services.nats!;
  t.truthy(nats.image?.startsWith('nats:'));
  t.true(nats.command!.includes('-js'));
  const dataVolume = nats.volumes![0]!.split(':')[0]!;
  t.true(dataVolume in compose.volumes, `${dataVolume} is declared`);
});

test('compose - supervisor and workers run existing troupe commands on existing files against that NATS', (t) => {
  t.truthy(pkg.bin.troupe, 'package.json has a troupe bin');
  const commands = new Set(['start', 'worker', 'status', 'tap', 'dead']);
  for (const name of ['supervisor', 'worker']) {
    const svc = compose.services[name]!;
    const [npx, bin, command, pipeline] = svc.command!;
    t.is(npx, 'npx');
    t.is(bin, 'troupe');
    t.true(commands.has(command!), `${name}: troupe ${command} exists`);
    t.true(existsSync(join(ROOT, pipeline!)), `${name}: ${pipeline} exists`);
    t.is(svc.environment?.TROUPE_NATS_URL, 'nats://nats:4222');
    for (const dep of svc.depends_on ?? []) t.truthy(compose.services[dep], `${name} depends on a defined service ${dep}`);
  }
  t.is(compose.services.supervisor!.command![2], 'start');
  t.is(compose.services.worker!.command![2], 'worker');
  t.true((compose.services.worker!.deploy?.replicas ?? 1) > 1, 'several workers');
  const replicas = compose.services.worker!.command![compose.services.worker!.command!.indexOf('--replicas') + 1]!;
  t.notRegex(replicas, /write/, 'workers never run a second Writer');
});
