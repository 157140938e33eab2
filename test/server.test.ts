import test from 'ava';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { codes, findNatsServer, NATS_MEMORY_LIMIT, natsMaxProcs, NatsServer, openNats, TroupeError, type NatsServerOptions } from '../messages/mod.ts';
import { tempDir } from './helpers/nats.ts';

test('embedded server - starts, serves, persists across a restart of the job, and stops', async (t) => {
  const stateDir = await tempDir();
  const saved = process.env.TROUPE_NATS_URL;
  delete process.env.TROUPE_NATS_URL;
  try {
    const first = await openNats({ stateDir });
    t.truthy(first.server);
    const kv = await first.jsm.streams.add({ name: 'KEEP', subjects: ['keep.>'] });
    t.is(kv.config.name, 'KEEP');
    await first.js.publish('keep.one', new TextEncoder().encode('hello'));
    const port = first.server!.port;
    await first.close();
    t.false(first.server!.running, 'stopped with the job');

    const second = await openNats({ stateDir });
    const info = await second.jsm.streams.info('KEEP');
    t.is(info.state.messages, 1, 'JetStream data survived the restart');
    const m = await second.jsm.streams.getMessage('KEEP', { seq: 1 });
    t.is(new TextDecoder().decode(m!.data), 'hello');
    t.true(second.server!.port > 0 && typeof port === 'number');
    await second.close();
  } finally {
    if (saved !== undefined) process.env.TROUPE_NATS_URL = saved;
    await rm(stateDir, { recursive: true, force: true });
  }
});

test('embedded server - a missing binary fails with instructions', (t) => {
  const err = t.throws(() => findNatsServer('/nonexistent/nats-server'), { instanceOf: TroupeError });
  t.is(err.code, codes.NO_NATS_SERVER);
  t.regex(err.message, /apt-get install -y nats-server/);
  t.regex(err.message, /--nats/);
});

test('embedded server - a server orphaned by a killed job is stopped before its store is reused', async (t) => {
  const dir = await tempDir();
  const { NatsServer } = await import('../messages/server.ts');
  const orphan = await NatsServer.start({ dir });
  const orphanPid = Number(await readFile(orphan.pidFile, 'utf8'));
  // The job that started `orphan` dies without stopping it; a new job starts on the same store.
  const next = await NatsServer.start({ dir });
  t.true(next.running);
  t.not(Number(await readFile(next.pidFile, 'utf8')), orphanPid);
  t.throws(() => process.kill(orphanPid, 0), { code: 'ESRCH' }, 'the orphan is gone');
  await next.stop();
  await orphan.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The environment a running process was started with. */
async function environOf(pid: number): Promise<Map<string, string>> {
  const raw = await readFile(`/proc/${pid}/environ`, 'utf8');
  return new Map(raw.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

/**
 * Runs `fn` with the environment variables `names` unset (it may set them), then restores
 * them; `started` starts a server in a fresh folder and returns `field` as the server reports
 * it and the `variable` its process was given.
 */
async function withGoSetting<F extends 'memoryLimit' | 'maxProcs'>(field: F, variable: string, names: string[],
  fn: (started: (options?: Partial<NatsServerOptions>) => Promise<[NatsServer[F], string | undefined]>) => Promise<void>): Promise<void> {
  const saved = names.map((k) => [k, process.env[k]] as const);
  for (const k of names) delete process.env[k];
  const dir = await tempDir();
  try {
    await fn(async (options = {}) => {
      const server = await NatsServer.start({ dir, ...options });
      try {
        const pid = Number(await readFile(server.pidFile, 'utf8'));
        return [server[field], (await environOf(pid)).get(variable)];
      } finally {
        await server.stop();
      }
    });
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await rm(dir, { recursive: true, force: true });
  }
}

test.serial('embedded server - runs with a soft memory limit: the default, an option, TROUPE_NATS_MEMORY_LIMIT, or GOMEMLIMIT kept', async (t) => {
  await withGoSetting('memoryLimit', 'GOMEMLIMIT', ['TROUPE_NATS_MEMORY_LIMIT', 'GOMEMLIMIT'], async (limitOf) => {
    t.deepEqual(await limitOf(), [NATS_MEMORY_LIMIT, NATS_MEMORY_LIMIT]);
    t.is(NATS_MEMORY_LIMIT, '32MiB');
    t.deepEqual(await limitOf({ memoryLimit: '256MiB' }), ['256MiB', '256MiB']);
    process.env.GOMEMLIMIT = '1GiB';
    t.deepEqual(await limitOf(), ['1GiB', '1GiB'], 'a GOMEMLIMIT already set is kept');
    process.env.TROUPE_NATS_MEMORY_LIMIT = 'off';
    t.deepEqual(await limitOf(), ['off', 'off'], 'TROUPE_NATS_MEMORY_LIMIT wins over GOMEMLIMIT');
    t.deepEqual(await limitOf({ memoryLimit: '64MiB' }), ['64MiB', '64MiB'], 'the option wins over both');
  });
});

test.serial('embedded server - runs Go on half the cores: the default, an option, TROUPE_NATS_MAX_PROCS, or GOMAXPROCS kept', async (t) => {
  await withGoSetting('maxProcs', 'GOMAXPROCS', ['TROUPE_NATS_MAX_PROCS', 'GOMAXPROCS'], async (procsOf) => {
    t.is(natsMaxProcs(), Math.max(1, Math.floor(availableParallelism() / 2)));
    t.deepEqual(await procsOf(), [natsMaxProcs(), String(natsMaxProcs())]);
    t.deepEqual(await procsOf({ maxProcs: 3 }), [3, '3']);
    process.env.GOMAXPROCS = '5';
    t.deepEqual(await procsOf(), [5, '5'], 'a GOMAXPROCS already set is kept');
    process.env.TROUPE_NATS_MAX_PROCS = '2';
    t.deepEqual(await procsOf(), [2, '2'], 'TROUPE_NATS_MAX_PROCS wins over GOMAXPROCS');
    t.deepEqual(await procsOf({ maxProcs: 1 }), [1, '1'], 'the option wins over both');
  });
});

test.serial('embedded server - a bad Go setting, as an option or in the environment, is refused before anything starts, naming the value', async (t) => {
  const cases: Array<{ options: Partial<NatsServerOptions>; says: RegExp; env: string; value: string }> = [
    { options: { memoryLimit: '32 megs' }, says: /memoryLimit .*"32 megs"/, env: 'TROUPE_NATS_MEMORY_LIMIT', value: '1.5GB' },
    { options: { maxProcs: 0 }, says: /maxProcs must be a whole number of threads, 1 or more \(as Go's GOMAXPROCS\); got 0$/, env: 'TROUPE_NATS_MAX_PROCS', value: 'all' },
    { options: { maxProcs: 1.5 }, says: /maxProcs .*got 1\.5$/, env: 'TROUPE_NATS_MAX_PROCS', value: '-2' },
  ];
  for (const c of cases) {
    const dir = await tempDir();
    const saved = process.env[c.env];
    try {
      const bad = await t.throwsAsync(NatsServer.start({ dir, ...c.options }), { instanceOf: TroupeError });
      t.is(bad.code, codes.BAD_OPTION);
      t.regex(bad.message, c.says);
      process.env[c.env] = c.value;
      const fromEnv = await t.throwsAsync(openNats({ stateDir: dir }), { instanceOf: TroupeError });
      t.true(fromEnv.message.includes(`${c.env} `) && fromEnv.message.includes(JSON.stringify(c.value)), fromEnv.message);
      await t.throwsAsync(readFile(join(dir, 'nats-server.pid'), 'utf8'), { code: 'ENOENT' }, 'no server was started');
    } finally {
      if (saved === undefined) delete process.env[c.env];
      else process.env[c.env] = saved;
      await rm(dir, { recursive: true, force: true });
    }
  }
});
