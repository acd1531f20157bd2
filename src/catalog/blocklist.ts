/**
 * A version's blocks in order, held compactly: 32 bytes of id and 8 of
 * position per block in flat typed arrays instead of an object and a Buffer
 * each. A 4 GiB file has some 130,000 blocks; as objects they cost over
 * 100 MB, here about 5 MB.
 *
 * A block's id may be unknown for a while (a worker is still hashing it) or
 * for good (a piece of a block, which cannot be matched: see blocksOf).
 */
export const ID_BYTES = 32;

export class BlockList {
  private ids: Buffer;
  private starts: Float64Array;
  private known: Uint8Array;
  private count = 0;
  /** Total bytes: where the next block would start. */
  size = 0;

  /**
   * Small by default: most files are a block or two, and an array of more
   * than 64 bytes is allocated outside V8's heap, at many times the cost
   * (a tree of small files makes several lists per file).
   */
  constructor(capacity = 2) {
    this.ids = zeroed(capacity * ID_BYTES);
    this.starts = new Float64Array(capacity);
    this.known = new Uint8Array(capacity);
  }

  static from(spans: readonly { id: Buffer | null; start: number; end: number }[]): BlockList {
    const list = new BlockList(Math.max(1, spans.length));
    for (const s of spans) {
      if (s.start !== list.size) throw new Error('spans must be contiguous from 0');
      list.push(s.id, s.end - s.start + 1);
    }
    return list;
  }

  get length(): number {
    return this.count;
  }

  /** Appends a block of `length` bytes; its id may come later (setId). Returns its index. */
  push(id: Uint8Array | null, length: number): number {
    if (this.count === this.starts.length) this.grow();
    const i = this.count++;
    this.starts[i] = this.size;
    this.size += length;
    if (id) this.setId(i, id);
    return i;
  }

  /** Appends blocks first..first+count-1 of `other`, ids and lengths. */
  pushFrom(other: BlockList, first: number, count: number): void {
    while (this.count + count > this.starts.length) this.grow();
    other.ids.copy(this.ids, this.count * ID_BYTES, first * ID_BYTES, (first + count) * ID_BYTES);
    this.known.set(other.known.subarray(first, first + count), this.count);
    for (let k = first; k < first + count; k++) {
      this.starts[this.count++] = this.size;
      this.size += other.end(k) - other.start(k) + 1;
    }
  }

  /** push() with the id in hex; false if it is not a whole id (the block is then appended without one). */
  pushHex(hex: string, length: number): boolean {
    const i = this.push(null, length);
    if (hex.length !== ID_BYTES * 2 || this.ids.write(hex, i * ID_BYTES, ID_BYTES, 'hex') !== ID_BYTES) return false;
    this.known[i] = 1;
    return true;
  }

  setId(i: number, id: Uint8Array): void {
    this.ids.set(id.subarray(0, ID_BYTES), i * ID_BYTES);
    this.known[i] = 1;
  }

  hasId(i: number): boolean {
    return this.known[i] === 1;
  }

  /** The id of block i (a view: copy it to keep it), or null if it has none. */
  id(i: number): Buffer | null {
    return this.known[i] === 1 ? this.ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES) : null;
  }

  start(i: number): number {
    return this.starts[i]!;
  }

  /** Inclusive end, as TOC ranges are. */
  end(i: number): number {
    return (i + 1 < this.count ? this.starts[i + 1]! : this.size) - 1;
  }

  /** Whether block i here and block j of `other` have the same (known) id. */
  sameId(i: number, other: BlockList, j: number): boolean {
    if (this.known[i] !== 1 || other.known[j] !== 1) return false;
    return this.ids.compare(other.ids, j * ID_BYTES, (j + 1) * ID_BYTES, i * ID_BYTES, (i + 1) * ID_BYTES) === 0;
  }

  /** Whether block i's id is `id`. */
  idEquals(i: number, id: Uint8Array): boolean {
    return this.known[i] === 1 && this.ids.compare(id, 0, ID_BYTES, i * ID_BYTES, (i + 1) * ID_BYTES) === 0;
  }

  /** A 32-bit hash of block i's id (ids are keyed hashes already: any 4 bytes do). */
  idHash(i: number): number {
    return this.ids.readUInt32LE(i * ID_BYTES);
  }

  /** Index of the block holding byte `pos` (binary search), or length if past the end. */
  indexAt(pos: number): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.end(mid) < pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private grow(): void {
    const capacity = Math.max(4, this.starts.length * 2);
    const ids = zeroed(capacity * ID_BYTES);
    this.ids.copy(ids);
    this.ids = ids;
    const starts = new Float64Array(capacity);
    starts.set(this.starts);
    this.starts = starts;
    const known = new Uint8Array(capacity);
    known.set(this.known);
    this.known = known;
  }
}

/** A zero-filled buffer: a small one from Node's shared pool, not an allocation of its own. */
function zeroed(bytes: number): Buffer {
  return Buffer.allocUnsafe(bytes).fill(0);
}

/**
 * A keyed fingerprint of a version's content, as its blocks (ids and
 * lengths): two versions with the same mark hold the same bytes. 16 bytes,
 * hex; see TreeEntry.parentContent.
 */
export function contentMark(keyring: { blockId(data: Uint8Array): Buffer }, blocks: BlockList): string {
  const fields = Buffer.alloc(blocks.length * (ID_BYTES + 8));
  for (let i = 0; i < blocks.length; i++) {
    const at = i * (ID_BYTES + 8);
    blocks.id(i)?.copy(fields, at);
    fields.writeDoubleBE(blocks.end(i) - blocks.start(i) + 1, at + ID_BYTES);
  }
  return keyring.blockId(fields).subarray(0, 16).toString('hex');
}
