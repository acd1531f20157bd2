/**
 * Compression dictionaries (format 2): a block may be compressed against a
 * dictionary made of fragments of the repository's own text, and names it in
 * its sealed header. Pinned byte for byte, then end to end through the CLI:
 * made once, stored sealed, used by later backups, and read back byte-exact
 * by cat, restore, check and a rebuilt catalog, in fresh processes.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blockId, Keyring, open } from '../src/crypto/keyring.js';
import { addDictionary, decodeBlock, encodeBlock, MissingDictionary } from '../src/repo/blockcodec.js';
import { DictionaryBuilder, loadDictionary, openDictionary, sealDictionary } from '../src/repo/dictionary.js';
import { BLOB_KINDS } from '../src/catalog/catalog.js';
import { decodePackIndex, encodePack } from '../src/repo/pack.js';
import { PACK_MAGIC } from '../src/catalog/packs.js';
import { initCliRepo, Rng, strata, tempDir } from './helpers.js';

const encKey = Buffer.alloc(32, 1);
const idKey = Buffer.alloc(32, 2);

const WORDS = 'request served user login failed retry cache miss hit backend timeout connection reset worker started stopped queue depth latency ok error warn info debug session token refresh upload download'.split(' ');

/** Log-like text: a small vocabulary in lines that never repeat whole. */
function logText(rng: Rng, bytes: number, mark = ''): Buffer {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const words = Array.from({ length: 6 + rng.int(10) }, () => rng.pick(WORDS));
    const line = `2026-01-01T00:${String(i % 60).padStart(2, '0')}:00Z host${rng.int(16)} app: ${words.join(' ')} ${mark}id=${rng.int(1_000_000)}\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.from(lines.join(''));
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe('blocks compressed with a dictionary', () => {
  const rng = new Rng(7);
  const dict = { ref: randomBytes(8), bytes: logText(rng, 32 * 1024) };

  it('are flag 2, the dictionary ref, then the zstd frame; they decode only where the dictionary is known', () => {
    const plain = logText(rng, 32 * 1024);
    const id = blockId(idKey, plain);
    const sealed = encodeBlock(encKey, id, plain, 3, dict);
    const framed = open(encKey, sealed, id, 'block');
    expect(framed[0]).toBe(2);
    expect(framed.subarray(1, 9).equals(dict.ref)).toBe(true);
    expect(() => decodeBlock(encKey, idKey, id, sealed, 1 << 20)).toThrow(MissingDictionary);
    addDictionary(dict);
    expect(decodeBlock(encKey, idKey, id, sealed, 1 << 20).equals(plain)).toBe(true);
    // The dictionary is what makes it small: the same block alone is larger.
    expect(sealed.length).toBeLessThan(encodeBlock(encKey, id, plain, 3).length * 0.95);
  });

  it('a block the dictionary does not help is stored as before', () => {
    const noise = randomBytes(20_000);
    const id = blockId(idKey, noise);
    expect(open(encKey, encodeBlock(encKey, id, noise, 3, dict), id, 'block')[0]).toBe(0);
  });

  it('a dictionary is sealed under its name, and its name is its keyed hash', () => {
    const keyring = Keyring.generate();
    const { name, sealed, dict: made } = sealDictionary(keyring, dict.bytes);
    expect(name).toMatch(/^[0-9a-f]{16}$/);
    expect(sealed.includes(dict.bytes.subarray(0, 64))).toBe(false);
    expect(Buffer.from(openDictionary(keyring, name, sealed).bytes).equals(dict.bytes)).toBe(true);
    expect(made.ref.toString('hex')).toBe(name);
    // Moved under another name, or changed, it does not open.
    expect(() => openDictionary(keyring, '0123456789abcdef', sealed)).toThrow(/authentication failed/);
    const bad = Buffer.from(sealed);
    bad[20]! ^= 1;
    expect(() => openDictionary(keyring, name, bad)).toThrow(/authentication failed/);
    // Sealed right but holding other bytes than its name says.
    const other = sealDictionary(keyring, logText(rng, 1000));
    const forged = keyring.seal(other.dict.bytes, Buffer.from(`strata dictionary ${name}`));
    expect(() => openDictionary(keyring, name, forged)).toThrow(/does not match its name/);
  });

  it('reads that need a dictionary at once share one fetch of it (a restore of many files starts so)', async () => {
    const keyring = Keyring.generate();
    const { name, sealed } = sealDictionary(keyring, logText(rng, 4000, 'shared'));
    let fetches = 0;
    const fetch = async () => {
      fetches++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return Buffer.from(sealed);
    };
    const loads = await Promise.all(Array.from({ length: 50 }, () => loadDictionary(fetch, keyring, name)));
    expect(fetches).toBe(1);
    expect(loads.every((d) => d === loads[0] && d.ref.toString('hex') === name)).toBe(true);
    // Known from then on: no fetch at all.
    await loadDictionary(fetch, keyring, name);
    expect(fetches).toBe(1);
    // A fetch that fails fails every read waiting for it, and the next read tries again.
    const other = sealDictionary(keyring, logText(rng, 4000, 'other'));
    let tries = 0;
    const failing = async () => {
      tries++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (tries === 1) throw new Error('gateway down');
      return Buffer.from(other.sealed);
    };
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => loadDictionary(failing, keyring, other.name)));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(tries).toBe(1);
    expect((await loadDictionary(failing, keyring, other.name)).ref.toString('hex')).toBe(other.name);
    expect(tries).toBe(2);
  });

  it('the builder takes fragments of text, not of noise, zeros or noise next to zeros', () => {
    const b = new DictionaryBuilder();
    const half = Buffer.concat([randomBytes(16 * 1024), Buffer.alloc(16 * 1024)]);
    expect(b.offer(randomBytes(32 * 1024), 32 * 1024 + 29)).toBe(false);
    expect(b.offer(Buffer.alloc(32 * 1024), 100)).toBe(false);
    // Compresses to about half, like text, but its fragments are noise or zeros.
    for (let i = 0; i < 40; i++) expect(b.offer(half, 16 * 1024 + 60)).toBe(false);
    expect(b.full).toBe(false);
    let full = false;
    for (let i = 0; i < 32; i++) full = b.offer(logText(rng, 32 * 1024), 8 * 1024);
    expect(full).toBe(true);
    expect(b.bytes().length).toBe(32 * 1024);
    expect(b.bytes().toString('latin1')).toMatch(/^[\x20-\x7e\n]+$/);
  });

  it('a dictionary never starts with the magic number of a trained one', () => {
    const b = new DictionaryBuilder();
    const text = logText(rng, 32 * 1024);
    // The first fragment is taken from offset 0.
    Buffer.from([0x37, 0xa4, 0x30, 0xec]).copy(text, 0);
    for (let i = 0; i < 32; i++) b.offer(text, 8 * 1024);
    expect(b.bytes().subarray(0, 4).equals(Buffer.from([0x37, 0xa4, 0x30, 0xec]))).toBe(false);
  });
});

describe('pack indexes', () => {
  it('are binary in format 2 (45 bytes a blob) and JSON in format 1; both read back', async () => {
    const keyring = Keyring.generate();
    const blobs = Array.from({ length: 50 }, (_, i) => ({ id: randomBytes(32), kind: BLOB_KINDS[i % 4]!, offset: PACK_MAGIC.length + i * 100, length: 100, size: 300 + i }));
    const body = Buffer.alloc(PACK_MAGIC.length + 50 * 100);
    PACK_MAGIC.copy(body);
    const sizes: number[] = [];
    for (const binary of [true, false]) {
      const pack = await encodePack(keyring, Buffer.from(body), body.length, blobs, binary);
      sizes.push(pack.bytes.length - body.length);
      const back = decodePackIndex(keyring, pack.bytes, pack.bytes.length);
      expect(back.map((e) => [e.id.toString('hex'), e.kind, e.offset, e.length, e.size])).toEqual(blobs.map((e) => [e.id.toString('hex'), e.kind, e.offset, e.length, e.size]));
    }
    expect(sizes[0]).toBeLessThan(50 * 46 + 64);
    expect(sizes[0]! * 1.8).toBeLessThan(sizes[1]!);
  });
});

describe('a repository with a dictionary, through the CLI', () => {
  const rng = new Rng(99);
  const src = path.join(tempDir(), 'logs');
  fs.mkdirSync(src);
  const files: Record<string, Buffer> = {};
  for (let i = 0; i < 4; i++) files[`app-${i}.log`] = logText(rng, 2_000_000);
  for (const [name, data] of Object.entries(files)) fs.writeFileSync(path.join(src, name), data);
  const { repo, env } = initCliRepo();
  const dicts = () => (fs.existsSync(path.join(repo, 'dicts')) ? fs.readdirSync(path.join(repo, 'dicts')) : []);

  it('the first backup makes one, sealed, and it makes the repository smaller than a format 1 one holding the same files', () => {
    const r = strata(['backup', src, '--json'], env);
    expect(r.status, r.stderr).toBe(0);
    const added = (JSON.parse(r.stdout) as { bytesAdded: number }).bytesAdded;
    expect(dicts()).toHaveLength(1);
    const sealed = fs.readFileSync(path.join(repo, 'dicts', dicts()[0]!));
    expect(sealed.includes(Buffer.from(' app: '))).toBe(false);

    // A format 1 repository (same chunking) takes the same files without a dictionary, and with JSON pack indexes.
    const v1 = initCliRepo();
    const configFile = path.join(v1.repo, 'config');
    fs.writeFileSync(configFile, fs.readFileSync(configFile, 'utf8').replace(/"version": \d+/, '"version": 1'));
    const old = strata(['backup', src, '--json'], v1.env);
    expect(old.status, old.stderr).toBe(0);
    expect(fs.existsSync(path.join(v1.repo, 'dicts'))).toBe(false);
    const oldAdded = (JSON.parse(old.stdout) as { bytesAdded: number }).bytesAdded;
    expect(added).toBeLessThan(oldAdded * 0.975);
  });

  it('cat, a range, restore and check --read-data read it back in fresh processes', () => {
    for (const [name, data] of Object.entries(files)) {
      const r = strata(['cat', path.join(src, name)], env);
      expect(r.status, r.stderr).toBe(0);
      expect(sha(r.raw)).toBe(sha(data));
    }
    const r = strata(['cat', path.join(src, 'app-3.log'), '--range', '1500000-1504095'], env);
    expect(r.status, r.stderr).toBe(0);
    expect(r.raw.equals(files['app-3.log']!.subarray(1_500_000, 1_504_096))).toBe(true);
    const target = path.join(tempDir(), 'out');
    const restored = strata(['restore', '--target', target], env);
    expect(restored.status, restored.stderr).toBe(0);
    for (const [name, data] of Object.entries(files)) expect(sha(fs.readFileSync(path.join(target, src, name)))).toBe(sha(data));
    const check = strata(['check', '--read-data'], env);
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('a later backup uses the same dictionary; a rebuilt catalog reads everything', () => {
    files['app-9.log'] = logText(rng, 1_000_000);
    fs.writeFileSync(path.join(src, 'app-9.log'), files['app-9.log']);
    const r = strata(['backup', src], env);
    expect(r.status, r.stderr).toBe(0);
    expect(dicts()).toHaveLength(1);
    for (const f of fs.readdirSync(repo)) if (f.startsWith('catalog.db')) fs.rmSync(path.join(repo, f));
    const rebuilt = strata(['rebuild-catalog'], env);
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    for (const [name, data] of Object.entries(files)) expect(sha(strata(['cat', path.join(src, name)], env).raw)).toBe(sha(data));
  });

  it('a damaged dictionary is a clear error for what needs it, and check finds it', () => {
    const file = path.join(repo, 'dicts', dicts()[0]!);
    const good = fs.readFileSync(file);
    const bad = Buffer.from(good);
    bad[bad.length - 1]! ^= 1;
    fs.writeFileSync(file, bad);
    try {
      const r = strata(['cat', path.join(src, 'app-3.log')], env);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/dictionary [0-9a-f]{16}: authentication failed/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      const check = strata(['check'], env);
      expect(check.status).toBe(1);
      expect(check.stdout + check.stderr).toMatch(/dictionary/);
    } finally {
      fs.writeFileSync(file, good);
    }
    expect(strata(['check'], env).status).toBe(0);
    // Gone altogether: check --read-data names it for every block that needs it.
    fs.renameSync(file, `${file}.away`);
    try {
      const check = strata(['check', '--read-data'], env);
      expect(check.status).toBe(1);
      expect(check.stdout + check.stderr).toMatch(/fails authentication or decoding: dictionary [0-9a-f]{16} is missing from the repository/);
    } finally {
      fs.renameSync(`${file}.away`, file);
    }
    expect(strata(['check', '--read-data'], env).status).toBe(0);
  });
});
