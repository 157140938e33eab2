import test from 'ava';
import { Packr } from 'msgpackr';
import {
  codes, decode, decodeEnvelope, encode, encodeEnvelope, encodeFrameItem, envelopeOfItem, frameContext, inheritFrameContext, makeEnvelope, messageId, parseEnvelope,
  subjects, TroupeError,
} from '../messages/mod.ts';

test('codec - round trip of strings, numbers, binary and nested maps', (t) => {
  const value = { s: 'héllo ✓', n: 42, f: 1.5, neg: -7, big: 2 ** 40, bin: new Uint8Array([0, 1, 255]),
    nested: { list: [1, 'two', { three: 3 }], empty: {}, nil: null, yes: true } };
  const back = decode(encode(value)) as typeof value;
  t.deepEqual({ ...back, bin: Array.from(back.bin) }, { ...value, bin: [0, 1, 255] });
  t.true(back.bin instanceof Uint8Array);
});

test('codec - output is plain msgpack (a fixmap with no extension types)', (t) => {
  const bytes = encode({ a: 1 });
  t.deepEqual(Array.from(bytes), [0x81, 0xa1, 0x61, 0x01]);
  // A decoder that knows nothing of records reads an envelope as an ordinary map.
  const plain = new Packr({ useRecords: false, mapsAsObjects: true });
  const env = makeEnvelope({ pipeline: 'p', stage: 's', key: 'k', body: { x: 1 } });
  t.deepEqual(plain.unpack(encodeEnvelope(env)), env);
});

test('codec - malformed msgpack is TROUPE_BAD_MESSAGE', (t) => {
  const err = t.throws(() => decode(new Uint8Array([0xc1])), { instanceOf: TroupeError });
  t.is(err.code, codes.BAD_MESSAGE);
  t.is((t.throws(() => decode(new Uint8Array([0x92, 0x01]))) as TroupeError).code, codes.BAD_MESSAGE, 'truncated array');
  t.is((t.throws(() => decode(new Uint8Array())) as TroupeError).code, codes.BAD_MESSAGE, 'empty');
  t.is((t.throws(() => decode(new Uint8Array([0x01, 0x02]))) as TroupeError).code, codes.BAD_MESSAGE, 'two values');
});

test('codec - oversized payload is TROUPE_TOO_LARGE', (t) => {
  const err = t.throws(() => decode(encode({ big: 'x'.repeat(2000) }), 1000));
  t.is((err as TroupeError).code, codes.TOO_LARGE);
  t.regex(err!.message, /above the limit of 1000/);
});

test('envelope - wrong shape is TROUPE_BAD_SHAPE naming the field', (t) => {
  const env = makeEnvelope({ pipeline: 'p', stage: 's', key: 'k', body: 1 });
  const err = t.throws(() => decodeEnvelope(encode({ ...env, key: 5 })));
  t.is((err as TroupeError).code, codes.BAD_SHAPE);
  t.regex(err!.message, /key/);
  t.is((t.throws(() => decodeEnvelope(encode('just a string'))) as TroupeError).code, codes.BAD_SHAPE);
});

test('envelope - unknown version is TROUPE_BAD_VERSION', (t) => {
  const env = makeEnvelope({ pipeline: 'p', stage: 's', key: 'k', body: 1 });
  const err = t.throws(() => decodeEnvelope(encode({ ...env, v: 99 })));
  t.is((err as TroupeError).code, codes.BAD_VERSION);
  t.regex(err!.message, /99/);
});

test('subjects - names per pipeline and refusal of bad names', (t) => {
  const s = subjects('notes');
  t.is(s.work('fetch'), 'troupe.notes.work.fetch');
  t.is(s.dead('fetch'), 'troupe.notes.dead.fetch');
  t.is(s.events('write', 'written'), 'troupe.notes.events.write.written');
  t.is(s.control('status'), 'troupe.notes.control.status');
  t.is(s.all, 'troupe.notes.>');
  t.is((t.throws(() => subjects('a.b')) as TroupeError).code, codes.BAD_NAME);
  t.throws(() => s.work('x>'), { message: /stage "x>"/ });
  t.is(messageId('fetch', 'https://a/b'), messageId('fetch', 'https://a/b'));
  t.not(messageId('fetch', 'https://a/b'), messageId('generate', 'https://a/b'));
  t.not(messageId('fetch', 'https://a/b'), messageId('fetch', 'https://a/c'));
  t.regex(messageId('fetch', 'https://a/b'), /^[A-Za-z0-9_-]{22}$/, '22 base64url characters');
});

test('envelope - a frame item leaves out what it shares with its frame and the defaults; alone or inherited, it is the whole envelope again', (t) => {
  const env = makeEnvelope({ pipeline: 'notes', stage: 'fetch', key: 'https://a/b', body: { n: 1 }, trace: 't-1', id: messageId('fetch', 'https://a/b') });
  const item = encodeFrameItem(env);
  const bare = decode(item) as Record<string, unknown>;
  t.deepEqual(Object.keys(bare).sort(), ['body', 'id', 'key', 'trace'], 'no pipeline, stage, ts, nor v and attempt at their defaults');
  const context = frameContext(env);
  t.deepEqual(context, { pipeline: 'notes', stage: 'fetch', ts: env.ts, v: 1, attempt: 1 });
  t.is(item.byteLength + encode(context).byteLength - 1, encodeEnvelope(env).byteLength, 'alone, the same size as the whole envelope');
  t.deepEqual(decodeEnvelope(envelopeOfItem(item, context)), env);
  inheritFrameContext(bare, 'notes', 'fetch', env.ts);
  t.deepEqual(parseEnvelope(bare), env);

  // What differs from the defaults travels with the item, and wins over the frame's.
  const retried = makeEnvelope({ pipeline: 'notes', stage: 'fetch', key: 'k', body: null, attempt: 3 });
  const kept = decode(encodeFrameItem(retried)) as Record<string, unknown>;
  t.is(kept.attempt, 3);
  t.deepEqual(frameContext(retried), { pipeline: 'notes', stage: 'fetch', ts: retried.ts, v: 1 });
  t.deepEqual(decodeEnvelope(envelopeOfItem(encodeFrameItem(retried), frameContext(retried))), retried);
  inheritFrameContext(kept, 'notes', 'fetch', 1);
  t.is(kept.attempt, 3);
  t.is(kept.ts, 1, 'ts comes from the frame');
  const own = { ...bare, stage: 'generate', v: 1, ts: 5 };
  inheritFrameContext(own, 'notes', 'fetch', 9);
  t.is(own.stage, 'generate', 'an item that has a stage keeps it');
  t.is(own.ts, 5, 'and its own ts');
  t.is((t.throws(() => envelopeOfItem(encode([1, 2]), context)) as TroupeError).code, codes.BAD_SHAPE);
});
