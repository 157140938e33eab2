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
  /** Blocks of 512 bits (one 64-byte cache line): all of a key's bits fall in one block. */
  readonly #blockMask: number;
  readonly #hashes: number;
  /** Keys added (with repeats). */
  added = 0;

  /**
   * @param log2Bits size: 2^log2Bits bits. @default 23 (1 MiB)
   * @param hashes bits set per key, 1 to 3. @default 3
   */
  constructor(log2Bits = 23, hashes = 3) {
    if (!Number.isInteger(log2Bits) || log2Bits < 9 || log2Bits > 32) throw new RangeError('log2Bits must be an integer from 9 to 32');
    if (!Number.isInteger(hashes) || hashes < 1 || hashes > 3) throw new RangeError('hashes must be 1, 2 or 3');
    this.bits = new Uint32Array(2 ** (log2Bits - 5));
    this.#blockMask = 2 ** (log2Bits - 9) - 1;
    this.#hashes = hashes;
  }

  add(key: string): void {
    hash(key);
    // A blocked Bloom filter: one cache line per key instead of one per bit. With the filter
    // far larger than the caches, each probe of a plain one was a miss: three per key.
    const base = (pair[0] & this.#blockMask) << 4;
    let h = pair[1];
    for (let i = 0; i < this.#hashes; i++, h >>>= 9) {
      const bit = h & 511;
      this.bits[base + (bit >>> 5)]! |= 1 << (bit & 31);
    }
    this.added++;
  }

  /** False: `key` was certainly never added. True: it may have been. */
  mayHave(key: string): boolean {
    hash(key);
    const base = (pair[0] & this.#blockMask) << 4;
    let h = pair[1];
    for (let i = 0; i < this.#hashes; i++, h >>>= 9) {
      const bit = h & 511;
      if ((this.bits[base + (bit >>> 5)]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

const pair: [number, number] = [0, 0];

/** Two 32-bit FNV-1a style hashes of the UTF-16 code units: one picks the block, one the bits in it. */
function hash(key: string): void {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ key.length;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  a ^= a >>> 13;
  b ^= b >>> 15;
  pair[0] = a >>> 0;
  pair[1] = b >>> 0;
}
