import { C1, Packr } from 'msgpackr';
import { codes, TroupeError } from './errors.ts';

/**
 * Plain msgpack: no records extension and no private types, so any language's msgpack
 * decoder reads troupe's messages. Binary stays binary (`bin` family), maps stay maps.
 */
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, variableMapSize: true, int64AsType: 'number' });

/** Encodes a value as plain msgpack. */
export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

/**
 * Decodes msgpack bytes into `unknown`. Throws a `TROUPE_TOO_LARGE` error above `maxBytes`
 * and a `TROUPE_BAD_MESSAGE` error on anything that is not one complete msgpack value.
 */
export function decode(bytes: Uint8Array, maxBytes = Infinity): unknown {
  if (bytes.byteLength > maxBytes) {
    throw new TroupeError(codes.TOO_LARGE, `message is ${bytes.byteLength} bytes, above the limit of ${maxBytes}`);
  }
  if (bytes.byteLength === 0) throw new TroupeError(codes.BAD_MESSAGE, 'message is empty, expected msgpack');
  let values: unknown[];
  try {
    values = packr.unpackMultiple(bytes) as unknown[];
  } catch (cause) {
    throw new TroupeError(codes.BAD_MESSAGE, `message is not valid msgpack: ${(cause as Error).message}`, { cause });
  }
  // 0xc1 is reserved by the msgpack spec; msgpackr returns a marker instead of failing.
  if (values.length === 1 && values[0] === C1) throw new TroupeError(codes.BAD_MESSAGE, 'message is not valid msgpack: reserved byte 0xc1');
  if (values.length !== 1) {
    throw new TroupeError(codes.BAD_MESSAGE, `message holds ${values.length} msgpack values, expected exactly one`);
  }
  return values[0];
}
