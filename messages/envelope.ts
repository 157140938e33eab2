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
 * An envelope as an item of a frame: without `pipeline` and `stage`, which every item of a
 * frame shares with the frame (its subject says both; the consumer puts them back, see
 * {@link inheritFrameContext}). 30-odd bytes and two strings less per item: the Writer
 * actor's thread used 6-8% less CPU per row (16 interleaved pairs of 100k rows).
 */
export function encodeFrameItem(env: Envelope<unknown>): Uint8Array {
  const { pipeline: _pipeline, stage: _stage, ...item } = env;
  return encode(item);
}

/** What `pipeline` and `stage` add to an item's encoding: its size as a message of its own. */
export function contextBytes(pipeline: string, stage: string): Uint8Array {
  // A map's entries without its header byte (fixmap of 2), to append to another map.
  return encode({ pipeline, stage }).subarray(1);
}

/**
 * A frame item's bytes (see {@link encodeFrameItem}) made a complete envelope, for an item
 * that travels alone: its map gains the two entries of `context` (from {@link contextBytes}).
 */
export function envelopeOfItem(item: Uint8Array, context: Uint8Array): Uint8Array {
  const head = item[0]!;
  // Envelopes have at most 7 entries without the context: always a fixmap (0x80-0x8f).
  if ((head & 0xf0) !== 0x80 || (head & 0x0f) > 13) throw new TroupeError(codes.BAD_SHAPE, 'bad frame item: expected a map of at most 13 entries');
  const out = new Uint8Array(item.byteLength + context.byteLength);
  out.set(item, 0);
  out[0] = head + 2;
  out.set(context, item.byteLength);
  return out;
}

/**
 * Puts back the `pipeline` and `stage` that items of a frame leave out (an item that has them
 * keeps its own). Anything but a map is left for parseEnvelope to refuse.
 */
export function inheritFrameContext(value: unknown, pipeline: string, stage: string): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return;
  const item = value as { pipeline?: unknown; stage?: unknown };
  if (item.pipeline === undefined) item.pipeline = pipeline;
  if (item.stage === undefined) item.stage = stage;
}

/** Decodes and validates an envelope; every failure is a typed error with a stable code. */
export function decodeEnvelope(bytes: Uint8Array, maxBytes = Infinity): Envelope<unknown> {
  return parseEnvelope(decode(bytes, maxBytes));
}
