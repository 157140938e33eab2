import test from 'ava';
import { readFile, rm } from 'node:fs/promises';
import { codes, findNatsServer, openNats, TroupeError } from '../messages/mod.ts';
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
