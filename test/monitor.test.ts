import test from 'ava';
import { Svcm } from '@nats-io/services';
import { decode } from '../messages/mod.ts';
import { pipelineStatus } from '../actors/monitor.ts';
import { troupe } from './helpers/cli.ts';
import { startNats, tempDir, uniqueName, until, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

test('monitoring - every replica is a NATS micro service; status and stats answer while a job runs', async (t) => {
  const pipeline = uniqueName('mon');
  const out = await tempDir();
  const job = troupe(['start', 'test/fixtures/numbers.ts', '--nats', nats.server.url, '--out', out, '--progress', 'none',
    '--count', '3000', '--delayMs', '150', '--replicas', 'generate=2'], { NUMBERS_PIPELINE: pipeline });
  // ~100 items/s: the job outlives every check below on a loaded machine; control.stop ends it.
  t.teardown(() => { job.child.kill('SIGKILL'); });

  const client = new Svcm(nats.nc as unknown as ConstructorParameters<typeof Svcm>[0]).client();
  const names = await until(async () => {
    const seen: string[] = [];
    try {
      for await (const info of await client.ping()) seen.push(info.name);
    } catch { return undefined; } // no responders yet
    const ours = seen.filter((n) => n.startsWith(`troupe-${pipeline}-`));
    return ours.length >= 4 ? ours.sort() : undefined;
  }, 30_000, 'services to answer $SRV.PING');
  if (!names) return t.fail();
  t.deepEqual([...new Set(names)], [`troupe-${pipeline}-generator`, `troupe-${pipeline}-scanner`, `troupe-${pipeline}-writer`]);
  t.is(names.filter((n) => n.endsWith('-generator')).length, 2, 'one service instance per generator replica');

  const stats = [];
  for await (const s of await client.stats(`troupe-${pipeline}-generator`)) stats.push(s);
  t.is(stats.length, 2);
  t.true(stats.every((s) => s.endpoints?.[0]?.name === 'stats'));

  const replies = [];
  for await (const m of await nats.nc.requestMany(`troupe.${pipeline}.control.stats`, undefined, { maxWait: 1_000 })) replies.push(decode(m.data) as { role: string });
  t.true(replies.length >= 4, `${replies.length} replicas answered control.stats`);

  const status = await pipelineStatus(nats.nc, pipeline, 1_500);
  t.deepEqual(status.stages.map((s) => s.stage).sort(), ['generate', 'write']);
  t.is(status.writer?.pid, job.child.pid, 'the Writer lease names the supervisor process');
  t.true(status.replicas.some((r) => r.role === 'generator'));
  // Queued and in-flight counts are items, not messages: the Scanner's pages of 20 travel as frames.
  const gen = status.stages.find((s) => s.stage === 'generate')!;
  const info = await nats.jsm.consumers.info(`TROUPE_${pipeline}_WORK_generate`, 'troupe-generate');
  const messages = info.num_pending + info.num_ack_pending;
  t.true(messages > 0 && gen.queued + gen.inFlight > 5 * messages, `${gen.queued + gen.inFlight} items estimated for ${messages} messages`);

  const cli = troupe(['status', pipeline, '--nats', nats.server.url, '--json']);
  t.is(await cli.exited, 0, cli.stderr);
  t.deepEqual(JSON.parse(cli.stdout).pipeline, pipeline);

  const live = decode((await nats.nc.request(`troupe.${pipeline}.control.status`, undefined, { timeout: 5_000 })).data) as { stages: Array<{ stage: string }> };
  t.deepEqual(live.stages.map((v) => v.stage).sort(), ['generate', 'scan', 'write']);
  // control.stop drains the job like Ctrl+C: it ends with exit 0 before its source is exhausted.
  t.like(decode((await nats.nc.request(`troupe.${pipeline}.control.stop`, undefined, { timeout: 5_000 })).data), { stopping: true });
  t.is(await job.exited, 0, job.stderr);
});

test('monitoring - status of an unknown pipeline is a clear error', async (t) => {
  const cli = troupe(['status', 'nosuchpipeline', '--nats', nats.server.url]);
  t.is(await cli.exited, 1);
  t.regex(cli.stderr, /pipeline nosuchpipeline has no streams/);
});
