import { randomUUID } from 'node:crypto';
import { z } from 'zod';
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
  /** Delivery attempt that produced this message (1 for a fresh item). */
  attempt: number;
  /** Milliseconds since the epoch when the message was made. */
  ts: number;
  trace?: string;
  body: B;
}

const shape = z.object({
  v: z.number().int(),
  id: z.string().min(1).max(128),
  key: z.string().min(1).max(4096),
  pipeline: z.string().min(1).max(64),
  stage: z.string().min(1).max(64),
  attempt: z.number().int().min(0),
  ts: z.number(),
  trace: z.string().max(256).optional(),
  body: z.unknown(),
});

export interface EnvelopeInit<B> {
  pipeline: string;
  stage: string;
  key: string;
  body: B;
  attempt?: number;
  trace?: string | undefined;
}

export function makeEnvelope<B>(init: EnvelopeInit<B>): Envelope<B> {
  const env: Envelope<B> = {
    v: ENVELOPE_VERSION,
    id: randomUUID(),
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
  const r = shape.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'envelope';
    throw new TroupeError(codes.BAD_SHAPE, `bad envelope: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data as Envelope<unknown>;
}

export function encodeEnvelope(env: Envelope<unknown>): Uint8Array {
  return encode(env);
}

/** Decodes and validates an envelope; every failure is a typed error with a stable code. */
export function decodeEnvelope(bytes: Uint8Array, maxBytes = Infinity): Envelope<unknown> {
  return parseEnvelope(decode(bytes, maxBytes));
}
