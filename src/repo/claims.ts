/**
 * Claims that a block is stored, checked with the key. A server answers
 * "stored" for any block a pack index names, and an `append` token can
 * register a pack index of its own (POST /v1/packs/{name}) claiming blocks
 * it never had, e.g. ones it saw before prune removed them. A backup that
 * believed it would leave the data out, and the file would not read back.
 *
 * So a client leaves a block out only when the pack the server names
 * vouches for it: the pack's sealed index, read from its tail, opens with
 * the key and lists the block at the offset and length claimed. An index
 * made without the key does not open. Each pack is read once per process.
 */
import type { Keyring } from '../crypto/keyring.js';
import { StrataError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import type { Claim, ClaimVerifier } from '../catalog/remote.js';
import { decodePackIndex } from './pack.js';

/** Bytes read from a pack's end at first: its index fits for any pack of ordinary size. */
const TAIL = 64 * 1024;

export class ClaimChecker implements ClaimVerifier {
  /** Per pack: where its authenticated index puts each block (id hex -> offset, length), or null when it does not open. */
  private readonly packs = new Map<string, Promise<Map<string, [number, number]> | null>>();

  constructor(
    private readonly storage: Storage,
    private readonly keyring: Keyring,
  ) {}

  /** For each claim, whether its pack's sealed index vouches for it (undefined: no claim). */
  async holds(ids: readonly Buffer[], claims: readonly (Claim | undefined)[]): Promise<boolean[]> {
    return Promise.all(
      claims.map(async (c, i) => {
        if (!c) return false;
        const index = await this.index(c.pack, c.packSize);
        const at = index?.get(ids[i]!.toString('hex'));
        return at !== undefined && at[0] === c.offset && at[1] === c.length;
      }),
    );
  }

  private index(pack: string, size: number): Promise<Map<string, [number, number]> | null> {
    const key = `${pack}/${size}`;
    let p = this.packs.get(key);
    if (!p) {
      p = this.load(pack, size);
      this.packs.set(key, p);
    }
    return p;
  }

  private async load(pack: string, size: number): Promise<Map<string, [number, number]> | null> {
    try {
      const h = { kind: 'pack' as const, name: pack };
      let want = Math.min(size, TAIL);
      let tail = await this.storage.read(h, size - want, want);
      const len = tail.length >= 12 ? tail.readUInt32LE(tail.length - 12) : 0;
      if (len + 12 > want && len + 12 <= size) {
        want = len + 12;
        tail = await this.storage.read(h, size - want, want);
      }
      const map = new Map<string, [number, number]>();
      for (const e of decodePackIndex(this.keyring, tail, size)) map.set(e.id.toString('hex'), [e.offset, e.length]);
      return map;
    } catch (e) {
      if (e instanceof StrataError) return null;
      throw e;
    }
  }
}
