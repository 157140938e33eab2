// Fault tests of the runtime: the real `troupe` CLI as a child process, a real nats-server,
// the job's real SQLite file. The fixture (test/fixtures/numbers.ts) counts in `writes` how
// often each row was applied, so "nothing lost, nothing duplicated" is count = N, max = 1.
import test from 'ava';
import { rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { troupe } from './helpers/cli.ts';
import { startNats, tempDir, uniqueName, until, type TestNats } from './helpers/nats.ts';
import { FIXTURE, output, query, removeCrashMarks, squares, startNumbers, within } from './helpers/numbers.ts';
import { decode } from '../messages/mod.ts';

// The jobs run one at a time (test.serial): each is a Node process with several worker
// threads, and a 2-core machine running all at once turns timing bounds into noise. Their
// pipeline names and folders are unique all the same, so they could run concurrently.
let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

/** A fresh output folder, removed after the test. */
async function outDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await tempDir('troupe-runtime-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test.serial('runtime - a Generator replica whose thread crashes is restarted, and every row is written once', async (t) => {
  const pipeline = uniqueName('crash');
  const out = await outDir(t);
  t.teardown(() => removeCrashMarks(pipeline));
  const N = 70;
  // ackWaitMs 1.5 s: what a crashed thread held comes back quickly (the default is 30 s).
  const job = startNumbers(pipeline, out, ['--count', String(N), '--crash', '7'],
    { nats: nats.server.url, env: { NUMBERS_ACK_WAIT_MS: '1500' } });
  t.teardown(() => { job.child.kill('SIGKILL'); });

  t.is(await within(job.exited, 100_000, 'the job'), 0, output(job));
  t.regex(job.stderr, /replica generator-\d ended \(thread error: Error: generator crash on 7\b/);
  // At most one restart per 7th number: a thread that dies on one number takes the others it
  // held along, and those may be retried on another thread without crashing it.
  const restarts = Number(/restarts (\d+)/.exec(job.stderr)?.[1]);
  t.true(restarts >= 1 && restarts <= Math.floor(N / 7), `${restarts} restarts`);
  if (squares(out, pipeline, N).missing.length > 0) t.log(job.stderr); // what the job said, for a failure here
  t.deepEqual(squares(out, pipeline, N), { count: N, writes: N, maxWrites: 1, missing: [] });
});

test.serial('runtime - a crash loop past the restart intensity stops the job with exit 1 and the reason', async (t) => {
  const pipeline = uniqueName('loop');
  const out = await outDir(t);
  const job = startNumbers(pipeline, out, ['--count', '40', '--crashAlways', '5'],
    { nats: nats.server.url, env: { NUMBERS_ACK_WAIT_MS: '1000', NUMBERS_RESTARTS: '2' } });
  t.teardown(() => { job.child.kill('SIGKILL'); });

  t.is(await within(job.exited, 60_000, 'the job'), 1, output(job));
  t.regex(job.stderr, /troupe: stopping: replica generator-\d failed and the restart limit \(2 in 10 s\) is reached: thread error: Error: generator always crashes on 5/);
  t.regex(job.stderr, /✖ \S+ stopped in [\d.]+ s: replica generator-\d failed and the restart limit/);
});

test.serial('runtime - SIGINT drains the job with exit 0, and a second start finishes it exactly once', async (t) => {
  const pipeline = uniqueName('sigint');
  const out = await outDir(t);
  const N = 3000;
  // The embedded nats-server (no --nats): the second start finds the queues in <out>/.troupe.
  const args = ['--count', String(N), '--delayMs', '20'];
  const first = startNumbers(pipeline, out, args);
  t.teardown(() => { first.child.kill('SIGKILL'); });
  await until(() => squares(out, pipeline).count > 0 || first.child.exitCode !== null, 60_000, 'the first rows');
  first.child.kill('SIGINT');
  t.is(await within(first.exited, 60_000, 'the interrupted job'), 0, output(first));
  t.regex(first.stderr, /troupe: stopping — finishing in-flight work/);
  const partial = squares(out, pipeline, N);
  t.true(partial.count > 0 && partial.count < N, `interrupted with ${partial.count} of ${N} rows`);
  t.is(partial.maxWrites, 1);

  const second = startNumbers(pipeline, out, args);
  t.teardown(() => { second.child.kill('SIGKILL'); });
  t.is(await within(second.exited, 90_000, 'the resumed job'), 0, output(second));
  t.deepEqual(squares(out, pipeline, N), { count: N, writes: N, maxWrites: 1, missing: [] });
});

test.serial('runtime - a troupe worker beside troupe start takes a share of the work; stopping it loses nothing', async (t) => {
  const pipeline = uniqueName('worker');
  const out = await outDir(t);
  const workerOut = await outDir(t);
  const N = 3000;
  const env = {};
  const job = startNumbers(pipeline, out, ['--count', String(N), '--delayMs', '50'], { nats: nats.server.url, env });
  t.teardown(() => { job.child.kill('SIGKILL'); });
  await until(() => squares(out, pipeline).count > 0, 60_000, 'the first rows');

  const worker = troupe(['worker', FIXTURE, '--nats', nats.server.url, '--replicas', 'generate=2', '--out', workerOut,
    '--progress', 'none', '--delayMs', '50'], { NUMBERS_PIPELINE: pipeline, ...env });
  t.teardown(() => { worker.child.kill('SIGKILL'); });
  const workerPid = worker.child.pid!;
  const byWorker = () => query<{ n: number }>(out, pipeline, 'select count(*) as n from square where by = ?', workerPid)[0]!.n;
  await until(() => byWorker() >= 20 || job.child.exitCode !== null || worker.child.exitCode !== null, 60_000, 'rows generated by the worker');
  t.is(worker.child.exitCode, null, output(worker));
  worker.child.kill('SIGINT');
  t.is(await within(worker.exited, 60_000, 'the worker'), 0, output(worker));

  t.is(await within(job.exited, 90_000, 'the job'), 0, output(job));
  t.deepEqual(squares(out, pipeline, N), { count: N, writes: N, maxWrites: 1, missing: [] });
  const by = query<{ by: number; n: number }>(out, pipeline, 'select by, count(*) as n from square group by by order by by');
  t.deepEqual(by.map((r) => r.by).sort(), [job.child.pid!, workerPid].sort(), 'rows made by both processes');
  t.log(by.map((r) => `pid ${r.by}: ${r.n} rows`).join(', '));
});

test.serial('runtime - --replicas generate=3 starts three Generator replicas', async (t) => {
  const pipeline = uniqueName('three');
  const out = await outDir(t);
  // 3 replicas × maxInFlight 8 at 250 ms an item: ~100 items/s, so the job runs for ~12 s,
  // well past the start of `troupe status` on a loaded machine (at 20 ms it ended in ~1.5 s,
  // before status sampled, and the report held no replicas).
  const N = 1200;
  const seen = new Set<string>();
  const standby = new Map<string, string | undefined>();
  const sub = nats.nc.subscribe(`troupe.${pipeline}.events.generate.heartbeat`, {
    callback: (_e, m) => {
      const hb = decode(m.data) as { replica: string; standby?: string };
      seen.add(hb.replica);
      standby.set(hb.replica.split('-').at(-1)!, hb.standby);
    },
  });
  t.teardown(() => sub.unsubscribe());
  // The Writer announces each committed transaction once its batch is acked: the counts add up to the rows.
  let written = 0;
  const keys = new Set<string>();
  const writtenSub = nats.nc.subscribe(`troupe.${pipeline}.events.write.written`, {
    callback: (_e, m) => { const w = decode(m.data) as { count: number; keys: string[] }; written += w.count; for (const k of w.keys) keys.add(k); },
  });
  t.teardown(() => writtenSub.unsubscribe());
  const job = startNumbers(pipeline, out, ['--count', String(N), '--delayMs', '250', '--replicas', 'generate=3'], { nats: nats.server.url });
  t.teardown(() => { job.child.kill('SIGKILL'); });
  await until(() => seen.size >= 3 || job.child.exitCode !== null, 60_000, 'heartbeats of three generators');
  const status = troupe(['status', pipeline, '--nats', nats.server.url, '--json']);
  t.is(await within(status.exited, 30_000, 'troupe status'), 0, output(status));
  t.is(job.child.exitCode, null, 'the job was still running when status sampled it');

  t.is(await within(job.exited, 90_000, 'the job'), 0, output(job));
  const ids = [...seen].map((id) => id.split('/').slice(1).join('/')).sort();
  t.deepEqual(ids, [0, 1, 2].map((i) => `${job.child.pid}/generator-${i}`));
  // Replicas beyond the machine's cores stand by (actors/standby.ts), and say so.
  for (const i of [0, 1, 2]) {
    if (i < availableParallelism()) t.is(standby.get(String(i)), undefined, `generator-${i}`);
    else t.regex(standby.get(String(i)) ?? '', /^(active|parked)$/, `generator-${i}`);
  }
  const report = JSON.parse(status.stdout) as { replicas: Array<{ role: string; replica: string; standby?: string }> };
  t.is(report.replicas.filter((r) => r.role === 'generator').length, 3, status.stdout);
  t.deepEqual(report.replicas.filter((r) => r.standby !== undefined).map((r) => r.replica.split('/').at(-1)),
    [0, 1, 2].filter((i) => i >= availableParallelism()).map((i) => `generator-${i}`), status.stdout);
  t.deepEqual(squares(out, pipeline, N), { count: N, writes: N, maxWrites: 1, missing: [] });
  await until(() => written >= N, 10_000, 'written events for every row');
  t.is(written, N, 'written events count every row once');
  t.true(keys.size > 0 && keys.size <= N, `${keys.size} keys named`);
});

for (const [title, args, message] of [
  ['an unknown role in --replicas', ['--replicas', 'bogus=2'], /TROUPE_BAD_OPTION: --replicas: unknown role or stage "bogus"/],
  ['a second Writer in --replicas', ['--replicas', 'write=2'], /TROUPE_BAD_OPTION: --replicas: write can only have one replica/],
  ['an option the pipeline does not declare', ['--nope', '1'], /TROUPE_BAD_OPTION: unknown option --nope for pipeline \S+ \(its options: --count, /],
  ['a pipeline file that does not exist', ['--pipeline', 'test/fixtures/nosuch.ts'], /TROUPE_BAD_OPTION: cannot load pipeline \S*test\/fixtures\/nosuch\.ts/],
  ['a pipeline whose definition is bad', ['--pipeline', 'test/fixtures/two-writers.ts'], /TROUPE_BAD_OPTION: cannot load pipeline \S*two-writers\.ts: pipeline\.roles\.writer\.replicas must be 1: a pipeline has exactly one Writer/],
] as const) {
  test(`runtime - troupe start refuses ${title} with exit 1`, async (t) => {
    const out = await outDir(t);
    const [pipelineFile, rest] = args[0] === '--pipeline' ? [args[1], []] : [FIXTURE, args];
    const run = troupe(['start', pipelineFile, '--out', out, '--nats', nats.server.url, '--progress', 'none', ...rest],
      { NUMBERS_PIPELINE: uniqueName('bad') });
    t.teardown(() => { run.child.kill('SIGKILL'); });
    t.is(await within(run.exited, 30_000, 'troupe start'), 1, output(run));
    t.regex(run.stderr, message);
    t.notRegex(run.stderr, /\n\s+at /, 'a message, not a stack trace');
  });
}
