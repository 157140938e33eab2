import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { BODY_REF_THRESHOLD, BodyStore, isBodyRef, type BodyRef } from '../messages/bodies.ts';
import { codes, PermanentError, TroupeError } from '../messages/errors.ts';
import { decode, encode } from '../messages/codec.ts';
import { startNats, uniqueName, type TestNats } from './helpers/nats.ts';

let nats: TestNats;
test.before(async () => { nats = await startNats(); });
test.after.always(async () => { await nats?.stop(); });

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('bodies - a body over 1 MiB is put and got back intact', async (t) => {
  const pipeline = uniqueName();
  const store = await BodyStore.open(nats.nc, pipeline);
  const bytes = new Uint8Array(randomBytes(1024 * 1024 + 12_345));
  t.true(bytes.byteLength > BODY_REF_THRESHOLD);
  const ref = await store.put('run1/https://api.example.com/items/1', bytes);
  t.deepEqual(ref, { bucket: `troupe-${pipeline}-bodies`, name: 'run1/https://api.example.com/items/1', size: bytes.byteLength, sha256: sha(bytes) });
  t.true(isBodyRef(ref));
  // A ref travels inside a message as a plain map.
  const wired = decode(encode({ body: ref })) as { body: unknown };
  t.true(isBodyRef(wired.body));
  const back = await store.get(wired.body as BodyRef);
  t.is(back.byteLength, bytes.byteLength);
  t.is(sha(back), sha(bytes));
});

test('bodies - a second store of the same pipeline reads what the first one put', async (t) => {
  const pipeline = uniqueName();
  const one = await BodyStore.open(nats.nc, pipeline);
  const two = await BodyStore.open(nats.nc, pipeline);
  const ref = await one.put('k', new TextEncoder().encode('hello'));
  t.is(new TextDecoder().decode(await two.get(ref)), 'hello');
});

test('bodies - a deleted (missing) body errors clearly', async (t) => {
  const store = await BodyStore.open(nats.nc, uniqueName());
  const ref = await store.put('gone', new Uint8Array(1000).fill(7));
  t.true(await store.delete(ref));
  const err = await t.throwsAsync(store.get(ref), { instanceOf: PermanentError });
  t.is(err?.code, codes.BAD_MESSAGE);
  t.regex(err?.message ?? '', /gone is not in the object store/);
});

test('bodies - a ref whose sha256 or size does not match errors clearly', async (t) => {
  const store = await BodyStore.open(nats.nc, uniqueName());
  const bytes = new Uint8Array(randomBytes(300_000));
  const ref = await store.put('x', bytes);
  const wrongSha = await t.throwsAsync(store.get({ ...ref, sha256: sha(new Uint8Array([1])) }), { instanceOf: TroupeError });
  t.is(wrongSha?.code, codes.BAD_MESSAGE);
  t.regex(wrongSha?.message ?? '', /has SHA-256 [0-9a-f]{64}, its reference says/);
  const wrongSize = await t.throwsAsync(store.get({ ...ref, size: ref.size + 1 }), { instanceOf: TroupeError });
  t.regex(wrongSize?.message ?? '', /has 300000 bytes, its reference says 300001/);
});

test('bodies - a ref that is not one, or of another bucket, is refused', async (t) => {
  const store = await BodyStore.open(nats.nc, uniqueName());
  const ref = await store.put('y', new Uint8Array([1, 2, 3]));
  t.false(isBodyRef({ ...ref, sha256: 'nope' }));
  t.false(isBodyRef(null));
  t.false(isBodyRef({ bucket: 'b', name: 'n', size: -1, sha256: ref.sha256 }));
  const notRef = await t.throwsAsync(store.get({ ...ref, size: 'big' } as unknown as BodyRef), { instanceOf: TroupeError });
  t.regex(notRef?.message ?? '', /not a body reference/);
  const other = await t.throwsAsync(store.get({ ...ref, bucket: 'troupe-other-bodies' }), { instanceOf: TroupeError });
  t.regex(other?.message ?? '', /belongs to another bucket/);
});

test('bodies - an empty body round-trips', async (t) => {
  const store = await BodyStore.open(nats.nc, uniqueName());
  const ref = await store.put('empty', new Uint8Array(0));
  t.is(ref.size, 0);
  t.is((await store.get(ref)).byteLength, 0);
});
