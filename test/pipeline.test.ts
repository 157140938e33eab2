import test from 'ava';
import { codes, stageConfig, TroupeError } from '../messages/mod.ts';
import { validatePipeline, type PipelineDefinition } from '../actors/pipeline.ts';
import { parseReplicas } from '../supervisor.ts';

const base = (): PipelineDefinition => ({
  name: 'ok',
  scanner: { async *scan() { /* nothing */ } },
  generator: { generate: () => [] },
  writer: { entities: [], apply: async () => undefined },
});

function refused(t: import('ava').ExecutionContext, def: unknown, message: RegExp): void {
  const err = t.throws(() => validatePipeline(def as PipelineDefinition), { instanceOf: TroupeError });
  t.true(err.code === codes.BAD_OPTION || err.code === codes.BAD_NAME, err.code);
  t.regex(err.message, message);
}

test('options - a valid definition passes unchanged', (t) => {
  const def = base();
  t.is(validatePipeline(def), def);
});
test('options - the definition must be an object', (t) => refused(t, null, /must be an object/));
test('options - a bad pipeline name is named', (t) => refused(t, { ...base(), name: 'a.b' }, /pipeline\.name "a\.b"/));
test('options - scanner.scan must be a function', (t) => refused(t, { ...base(), scanner: {} }, /pipeline\.scanner\.scan must be a function/));
test('options - writer.apply must be a function', (t) => refused(t, { ...base(), writer: { entities: [] } }, /pipeline\.writer\.apply must be a function/));
test('options - writer.entities must be an array', (t) => refused(t, { ...base(), writer: { apply: async () => undefined } }, /pipeline\.writer\.entities must be an array/));
test('options - fetcher.request must be a function', (t) => refused(t, { ...base(), fetcher: {} }, /pipeline\.fetcher\.request must be a function/));
test('options - generator.generate must be a function', (t) => refused(t, { ...base(), generator: {} }, /pipeline\.generator\.generate must be a function/));
test('options - an exporter needs export or finish', (t) => refused(t, { ...base(), exporter: {} }, /pipeline\.exporter needs export or finish/));
test('options - an unknown role in roles is named', (t) => refused(t, { ...base(), roles: { mailer: {} } }, /pipeline\.roles\.mailer is not a role/));
test('options - roles may only configure defined roles', (t) => refused(t, { ...base(), roles: { fetcher: { replicas: 2 } } }, /pipeline\.roles\.fetcher configures a role the pipeline does not define/));
test('options - role numbers must be positive integers', (t) => refused(t, { ...base(), roles: { generator: { maxInFlight: 0 } } }, /pipeline\.roles\.generator\.maxInFlight must be a positive integer \(got 0\)/));
test('options - exactly one Writer', (t) => refused(t, { ...base(), roles: { writer: { replicas: 2 } } }, /pipeline\.roles\.writer\.replicas must be 1/));
test('options - exactly one Scanner', (t) => refused(t, { ...base(), roles: { scanner: { replicas: 3 } } }, /pipeline\.roles\.scanner\.replicas must be 1/));
test('options - standby must be a boolean', (t) => refused(t, { ...base(), roles: { generator: { standby: 'no' } } }, /pipeline\.roles\.generator\.standby: must be true or false \(got "no"\)/));
test('options - only a Generator has standby replicas', (t) => refused(t, { ...base(), roles: { writer: { standby: false } } }, /pipeline\.roles\.writer\.standby: only a Generator has standby replicas/));
test('options - a param check must be a function', (t) => refused(t, { ...base(), params: { root: { description: 'x', check: 'yes' } } }, /pipeline\.params\.root\.check must be a function/));
test('options - restart limits must be positive integers', (t) => refused(t, { ...base(), restarts: { maxRestarts: -1 } }, /pipeline\.restarts\.maxRestarts must be a positive integer/));

test('options - stage limits are validated with the option named', (t) => {
  const err = t.throws(() => stageConfig('fetch', { maxMessages: 1.5 }, 'roles.fetcher'));
  t.regex(err!.message, /options\.roles\.fetcher\.maxMessages must be a positive integer \(got 1\.5\)/);
  t.regex(t.throws(() => stageConfig('fetch', { ackWaitMs: 10 }))!.message, /ackWaitMs must be at least 1000/);
});

test('options - --replicas is parsed by stage or role name and refuses bad entries', (t) => {
  t.deepEqual(parseReplicas('fetch=8, generate=2'), { fetcher: 8, generator: 2 });
  t.deepEqual(parseReplicas('generator=3'), { generator: 3 });
  t.regex(t.throws(() => parseReplicas('bogus=2'))!.message, /unknown role or stage "bogus"/);
  t.regex(t.throws(() => parseReplicas('fetch=x'))!.message, /fetch needs a non-negative integer \(got "x"\)/);
  t.regex(t.throws(() => parseReplicas('write=2'))!.message, /write can only have one replica/);
  t.regex(t.throws(() => parseReplicas('fetch=2', base()))!.message, /pipeline ok has no fetcher/);
});
