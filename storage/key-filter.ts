/**
 * A Bloom filter of item keys, fixed in size: "certainly never added" or "maybe added".
 *
 * The Writer keeps one of the keys its ledger holds at the `write` stage, so that a batch of
 * keys the ledger has never seen (every batch of a fresh job) skips the lookup for messages
 * applied before (see `appliedIds`): that lookup was ~6% of the Writer's time per item. A
 * "maybe" only costs the lookup, so the filter may fill up (its false positives grow
 * towards 1 past ~2M keys at the default size) but never gives a wrong answer, and its
 * memory never grows.
 */
export class KeyFilter {
  readonly bits: Uint32Array;
  readonly #mask: number;
  readonly #hashes: number;
  /** Keys added (with repeats). */
  added = 0;

  /** @param log2Bits size: 2^log2Bits bits. @default 23 (1 MiB) */
  constructor(log2Bits = 23, hashes = 3) {
    if (!Number.isInteger(log2Bits) || log2Bits < 5 || log2Bits > 32) throw new RangeError('log2Bits must be an integer from 5 to 32');
    this.bits = new Uint32Array(2 ** (log2Bits - 5));
    this.#mask = 2 ** log2Bits - 1;
    this.#hashes = hashes;
  }

  add(key: string): void {
    const [h1, h2] = hash(key);
    for (let i = 0; i < this.#hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.#mask;
      this.bits[bit >>> 5]! |= 1 << (bit & 31);
    }
    this.added++;
  }

  /** False: `key` was certainly never added. True: it may have been. */
  mayHave(key: string): boolean {
    const [h1, h2] = hash(key);
    for (let i = 0; i < this.#hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) & this.#mask;
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

const pair: [number, number] = [0, 0];

/** Two 32-bit FNV-1a style hashes of the UTF-16 code units (double hashing derives the rest). */
function hash(key: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ key.length;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  b ^= b >>> 15;
  pair[0] = a >>> 0;
  pair[1] = (b | 1) >>> 0; // odd: the probes of one key never collapse onto one bit
  return pair;
}
