import { randomUUID } from 'node:crypto';
import { decode, encode } from './codec.ts';
import { codes, TroupeError } from './errors.ts';

/** Wire format version of the envelope. */
export const ENVELOPE_VERSION = 1;

/** Every troupe message: one plain msgpack map. */
export interface Envelope<B = unknown> {
  v: number;
  /** Unique id of this message (a new one per publish). */
  id: string;
  /** Stable identity of the item: URL, file path, record id. */
  key: string;
  pipeline: string;
  stage: string;
  /** The attempt this message starts at: 1 for a fresh item, more for an item split out of a redelivered frame. */
  attempt: number;
  /** Milliseconds since the epoch when the message was made. */
  ts: number;
  trace?: string;
  body: B;
}

/**
 * Field checks of an envelope. Hand-written rather than a zod schema: this runs for every
 * message on every stage, and the bench profile showed the schema at ~5% of a stage's CPU.
 * Options and other cold paths use zod.
 */
const fields: Array<[keyof Envelope, (v: unknown) => boolean, string]> = [
  ['v', Number.isInteger, 'expected an integer'],
  ['id', (v) => typeof v === 'string' && v.length > 0 && v.length <= 128, 'expected a string of 1-128 characters'],
  ['key', (v) => typeof v === 'string' && v.length > 0 && v.length <= 4096, 'expected a string of 1-4096 characters'],
  ['pipeline', (v) => typeof v === 'string' && v.length > 0 && v.length <= 64, 'expected a string of 1-64 characters'],
  ['stage', (v) => typeof v === 'string' && v.length > 0 && v.length <= 64, 'expected a string of 1-64 characters'],
  ['attempt', (v) => Number.isInteger(v) && (v as number) >= 0, 'expected a non-negative integer'],
  ['ts', (v) => typeof v === 'number' && Number.isFinite(v), 'expected a number'],
];

export interface EnvelopeInit<B> {
  pipeline: string;
  stage: string;
  key: string;
  body: B;
  attempt?: number;
  trace?: string | undefined;
  /** The message id; a random one when not given (the producer derives it from run, stage and key). */
  id?: string;
}

export function makeEnvelope<B>(init: EnvelopeInit<B>): Envelope<B> {
  const env: Envelope<B> = {
    v: ENVELOPE_VERSION,
    id: init.id ?? randomUUID(),
    key: init.key,
    pipeline: init.pipeline,
    stage: init.stage,
    attempt: init.attempt ?? 1,
    ts: Date.now(),
    body: init.body,
  };
  if (init.trace !== undefined) env.trace = init.trace;
  return env;
}

/**
 * Checks a decoded value is an envelope of a version this build reads.
 * Throws `TROUPE_BAD_VERSION` or `TROUPE_BAD_SHAPE` naming what was wrong.
 */
export function parseEnvelope(value: unknown): Envelope<unknown> {
  if (typeof value === 'object' && value !== null && 'v' in value && value.v !== ENVELOPE_VERSION) {
    throw new TroupeError(codes.BAD_VERSION,
      `envelope version ${JSON.stringify(value.v)} is not supported (this build reads v${ENVELOPE_VERSION})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TroupeError(codes.BAD_SHAPE, `bad envelope: expected a map, got ${Array.isArray(value) ? 'an array' : value === null ? 'nil' : typeof value}`);
  }
  const env = value as Record<string, unknown>;
  for (const [name, ok, expected] of fields) {
    if (!ok(env[name])) throw new TroupeError(codes.BAD_SHAPE, `bad envelope: ${name}: ${expected}, got ${JSON.stringify(env[name]) ?? 'nothing'}`);
  }
  if (env.trace !== undefined && (typeof env.trace !== 'string' || env.trace.length > 256)) {
    throw new TroupeError(codes.BAD_SHAPE, 'bad envelope: trace: expected a string of at most 256 characters');
  }
  if (!('body' in env)) throw new TroupeError(codes.BAD_SHAPE, 'bad envelope: body: missing');
  return env as unknown as Envelope<unknown>;
}

export function encodeEnvelope(env: Envelope<unknown>): Uint8Array {
  return encode(env);
}

/**
 * An envelope as an item of a frame: only what is its own. It leaves out what every item of a
 * frame shares with the frame, which the consumer puts back (see {@link inheritFrameContext}):
 * `pipeline` and `stage` (the frame's subject names both) and `ts` (the frame's JetStream
 * timestamp, taken when the server stored it). It also leaves out the defaults: `v` when it
 * is this version (an item without `v` is version 1; later versions always write it) and
 * `attempt` when it is 1. Of a benchmark row's ~330 bytes as a whole envelope, that is ~55.
 * Pipeline and stage gave the Writer actor's thread 6-8% less CPU per row (16 interleaved
 * pairs of 100k rows); the defaults and `ts` 4-10% less again, and 102k against 89k rows/s
 * on average (8 pairs, 2026-11-24).
 */
export function encodeFrameItem(env: Envelope<unknown>): Uint8Array {
  const { pipeline: _pipeline, stage: _stage, ts: _ts, v, attempt, ...item } = env;
  if (v !== ENVELOPE_VERSION) (item as Record<string, unknown>).v = v;
  if (attempt !== 1) (item as Record<string, unknown>).attempt = attempt;
  return encode(item);
}

/** The fields of `env` that {@link encodeFrameItem} leaves out and a frame item inherits. */
export function frameContext(env: Pick<Envelope<unknown>, 'pipeline' | 'stage' | 'ts' | 'v' | 'attempt'>): Partial<Envelope<unknown>> {
  const context: Partial<Envelope<unknown>> = { pipeline: env.pipeline, stage: env.stage, ts: env.ts };
  if (env.v === ENVELOPE_VERSION) context.v = env.v;
  if (env.attempt === 1) context.attempt = 1;
  return context;
}

/**
 * A frame item's bytes (see {@link encodeFrameItem}) made a complete envelope, for an item
 * that travels alone: its map gains the entries of `context` (from {@link frameContext}),
 * without encoding the item again.
 */
export function envelopeOfItem(item: Uint8Array, context: Partial<Envelope<unknown>>): Uint8Array {
  const head = item[0]!;
  const extra = encode(context);
  const added = extra[0]! & 0x0f;
  // An envelope has at most 8 entries: both maps are fixmaps (0x80-0x8f), and so is the sum.
  if ((head & 0xf0) !== 0x80 || (extra[0]! & 0xf0) !== 0x80 || (head & 0x0f) + added > 15) {
    throw new TroupeError(codes.BAD_SHAPE, 'bad frame item: expected a map of at most 15 entries with its context');
  }
  const out = new Uint8Array(item.byteLength + extra.byteLength - 1);
  out.set(item, 0);
  out[0] = head + added;
  out.set(extra.subarray(1), item.byteLength);
  return out;
}

/**
 * Puts back what items of a frame leave out (see {@link encodeFrameItem}): `pipeline` and
 * `stage` from the frame's subject, `ts` from its JetStream timestamp, `v` and `attempt`
 * their defaults. An item that has a field keeps its own. Anything but a map is left for
 * parseEnvelope to refuse.
 */
export function inheritFrameContext(value: unknown, pipeline: string, stage: string, ts: number): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return;
  const item = value as Partial<Record<keyof Envelope, unknown>>;
  item.v ??= ENVELOPE_VERSION;
  item.pipeline ??= pipeline;
  item.stage ??= stage;
  item.attempt ??= 1;
  item.ts ??= ts;
}

/** Decodes and validates an envelope; every failure is a typed error with a stable code. */
export function decodeEnvelope(bytes: Uint8Array, maxBytes = Infinity): Envelope<unknown> {
  return parseEnvelope(decode(bytes, maxBytes));
}
