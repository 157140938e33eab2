import { createHash } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { codes, PermanentError, TroupeError } from './errors.ts';
import { checkName } from './subjects.ts';

/** Bodies larger than this (bytes) travel by {@link BodyRef} instead of inside a message. */
export const BODY_REF_THRESHOLD = 256 * 1024;

/** Where a large body lives in the JetStream object store, and how to check it. A plain msgpack-able object. */
export interface BodyRef {
  bucket: string;
  name: string;
  size: number;
  /** Lower-case hex SHA-256 of the bytes. */
  sha256: string;
}

/** Whether `v` has the shape of a {@link BodyRef} (decoded messages are `unknown`). */
export function isBodyRef(v: unknown): v is BodyRef {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.bucket === 'string' && r.bucket.length > 0 &&
    typeof r.name === 'string' && r.name.length > 0 &&
    typeof r.size === 'number' && Number.isSafeInteger(r.size) && r.size >= 0 &&
    typeof r.sha256 === 'string' && /^[0-9a-f]{64}$/.test(r.sha256);
}

/** Name of the object-store bucket holding a pipeline's large bodies. */
export function bodiesBucket(pipeline: string): string {
  return `troupe-${checkName('pipeline', pipeline)}-bodies`;
}

export interface BodyStoreOptions {
  /** Drop stored bodies after this long, ms. @default kept until deleted */
  ttlMs?: number;
}

/**
 * Large bodies of one pipeline in the JetStream object store (bucket `troupe-<pipeline>-bodies`,
 * chunked by the client, so a body may be far larger than the server's max payload).
 * Works on nats-server 2.9: the bucket is created without compression or other 2.10+ settings.
 */
export class BodyStore {
  readonly bucket: string;
  readonly #os: ObjectStore;

  private constructor(bucket: string, os: ObjectStore) {
    this.bucket = bucket;
    this.#os = os;
  }

  /** Opens the pipeline's bucket, creating it when missing. */
  static async open(nc: NatsConnection, pipeline: string, options: BodyStoreOptions = {}): Promise<BodyStore> {
    const bucket = bodiesBucket(pipeline);
    const ttl = options.ttlMs;
    if (ttl !== undefined && (!Number.isSafeInteger(ttl) || ttl < 1)) {
      throw new TroupeError(codes.BAD_OPTION, 'options.bodies.ttlMs must be a positive integer');
    }
    const os = await new Objm(nc).create(bucket, ttl === undefined ? {} : { ttl: ttl * 1_000_000 });
    return new BodyStore(bucket, os);
  }

  /** Stores `bytes` under `name` (replacing an object of that name) and returns its reference. */
  async put(name: string, bytes: Uint8Array): Promise<BodyRef> {
    if (typeof name !== 'string' || name.length === 0) throw new TroupeError(codes.BAD_NAME, 'a body name must be a non-empty string');
    const info = await this.#os.putBlob({ name }, bytes);
    if (info.size !== bytes.byteLength) {
      throw new TroupeError(codes.BAD_MESSAGE, `object store kept ${info.size} of ${bytes.byteLength} bytes of body ${this.bucket}/${name}`, { retryable: true });
    }
    return { bucket: this.bucket, name, size: bytes.byteLength, sha256: sha256(bytes) };
  }

  /** The body `ref` points to, checked against its size and SHA-256. */
  async get(ref: BodyRef): Promise<Uint8Array> {
    const where = this.#check(ref);
    let bytes: Uint8Array | null;
    try {
      bytes = await this.#os.getBlob(ref.name);
    } catch (err) {
      if ((err as Error).message?.includes('corrupt')) {
        throw new PermanentError(`body ${where} is corrupt in the object store: ${(err as Error).message}`, { code: codes.BAD_MESSAGE, cause: err });
      }
      throw err;
    }
    if (bytes === null) throw new PermanentError(`body ${where} is not in the object store (deleted or expired?)`, { code: codes.BAD_MESSAGE });
    if (bytes.byteLength !== ref.size) {
      throw new PermanentError(`body ${where} has ${bytes.byteLength} bytes, its reference says ${ref.size}`, { code: codes.BAD_MESSAGE });
    }
    const digest = sha256(bytes);
    if (digest !== ref.sha256) {
      throw new PermanentError(`body ${where} has SHA-256 ${digest}, its reference says ${ref.sha256}`, { code: codes.BAD_MESSAGE });
    }
    return bytes;
  }

  /** Removes the body `ref` points to; resolves whether it was there. */
  async delete(ref: BodyRef): Promise<boolean> {
    this.#check(ref);
    const res = await this.#os.delete(ref.name);
    return res.success;
  }

  #check(ref: BodyRef): string {
    if (!isBodyRef(ref)) throw new PermanentError(`not a body reference: ${JSON.stringify(ref)}`, { code: codes.BAD_MESSAGE });
    const where = `${ref.bucket}/${ref.name}`;
    if (ref.bucket !== this.bucket) {
      throw new PermanentError(`body ${where} belongs to another bucket than ${this.bucket}`, { code: codes.BAD_MESSAGE });
    }
    return where;
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
