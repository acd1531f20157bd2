/**
 * A repository: config + keys + block store + catalog. Opening one checks the
 * config's format version and unlocks the master key (from a password, which
 * pays for scrypt, or from an exported key file, which does not).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chunkerParams, DEFAULT_AVG, gearTable, type ChunkerParams } from '../chunker/fastcdc.js';
import { Keyring } from '../crypto/keyring.js';
import { calibrateScrypt, unwrapKey, wrapKey, type ScryptParams, type WrappedKey } from '../crypto/password.js';
import { integrity, noRepository, StrataError, usageError, wrongKey } from '../errors.js';
import { LocalStorage } from '../storage/local.js';
import type { Storage } from '../storage/storage.js';
import { decodeBlock } from './blockcodec.js';
import { Catalog, type BlobKind } from './catalog.js';
import { DEFAULT_PACK_SIZE, Packer } from './packer.js';

export const FORMAT_VERSION = 1;

export interface RepoConfig {
  strata: 'repository';
  version: number;
  id: string;
  created: string;
  chunker: { algorithm: 'fastcdc-gear32'; min: number; avg: number; max: number };
  compression: { algorithm: 'zstd'; level: number };
  cipher: 'aes-256-gcm';
  packSize: number;
}

export interface ExportedKey {
  strata: 'key';
  repository: string;
  key: string;
}

export interface Credentials {
  /** Path of an exported key file: skips key derivation. */
  keyFile?: string;
  /** Asked only when no key file is given. */
  password?: () => Promise<string>;
}

export interface InitOptions {
  chunkAvg?: number;
  scrypt?: ScryptParams;
  packSize?: number;
  compressionLevel?: number;
}

export class Repository {
  private readonly cache = new Map<string, Buffer>();
  private readonly cacheLimit = 16;
  readonly chunker: ChunkerParams;
  readonly gear: Uint32Array;

  private constructor(
    readonly root: string,
    readonly storage: Storage,
    readonly config: RepoConfig,
    readonly keyring: Keyring,
    readonly catalog: Catalog,
  ) {
    this.chunker = { min: config.chunker.min, avg: config.chunker.avg, max: config.chunker.max };
    this.gear = gearTable(keyring.chunkerSeed);
  }

  static async init(root: string, password: string, opts: InitOptions = {}): Promise<Repository> {
    const dir = path.resolve(root);
    if (fs.existsSync(dir)) {
      if (!fs.statSync(dir).isDirectory()) throw usageError(`${dir} exists and is not a directory`);
      if (fs.readdirSync(dir).length > 0) {
        if (fs.existsSync(path.join(dir, 'config'))) throw new StrataError('exists', `a repository already exists at ${dir}`);
        throw usageError(`${dir} is not empty; choose a new or empty directory`);
      }
    }
    const params = chunkerParams(opts.chunkAvg ?? DEFAULT_AVG);
    const keyring = Keyring.generate();
    const config: RepoConfig = {
      strata: 'repository',
      version: FORMAT_VERSION,
      id: randomBytes(16).toString('hex'),
      created: new Date().toISOString(),
      chunker: { algorithm: 'fastcdc-gear32', ...params },
      compression: { algorithm: 'zstd', level: opts.compressionLevel ?? 3 },
      cipher: 'aes-256-gcm',
      packSize: opts.packSize ?? DEFAULT_PACK_SIZE,
    };
    fs.mkdirSync(dir, { recursive: true });
    const storage = new LocalStorage(dir);
    const wrapped = await wrapKey(keyring.master, password, opts.scrypt ?? (await calibrateScrypt()));
    await storage.put({ kind: 'key', name: randomBytes(8).toString('hex') }, Buffer.from(JSON.stringify(wrapped, null, 2)));
    const catalog = new Catalog(path.join(dir, 'catalog.db'));
    // The config goes last: a directory with a config is a complete repository.
    await storage.put({ kind: 'config', name: 'config' }, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
    return new Repository(dir, storage, config, keyring, catalog);
  }

  static async open(root: string, creds: Credentials, _opts: { readonly?: boolean } = {}): Promise<Repository> {
    const dir = path.resolve(root);
    const config = readConfig(dir);
    const storage = new LocalStorage(dir);
    const keyring = await unlock(storage, config, creds);
    const catalog = openCatalog(dir);
    return new Repository(dir, storage, config, keyring, catalog);
  }

  /**
   * Opens a repository on a new, empty catalog (for rebuilding it from the
   * packs); the old catalog.db, if any, is renamed and its new name returned.
   */
  static async openForRebuild(root: string, creds: Credentials): Promise<{ repo: Repository; previous?: string }> {
    const dir = path.resolve(root);
    const config = readConfig(dir);
    const storage = new LocalStorage(dir);
    const keyring = await unlock(storage, config, creds);
    const file = path.join(dir, 'catalog.db');
    let previous: string | undefined;
    if (fs.existsSync(file)) {
      previous = `${file}.${new Date().toISOString().replace(/[:.]/g, '-')}.old`;
      fs.renameSync(file, previous);
      for (const ext of ['-wal', '-shm']) if (fs.existsSync(file + ext)) fs.renameSync(file + ext, previous + ext);
    }
    return { repo: new Repository(dir, storage, config, keyring, new Catalog(file)), previous };
  }

  newPacker(): Packer {
    return new Packer(this.storage, this.keyring, this.catalog, this.config.packSize);
  }

  get compressionLevel(): number {
    return this.config.compression.level;
  }

  exportKey(): ExportedKey {
    return { strata: 'key', repository: this.config.id, key: this.keyring.master.toString('base64') };
  }

  /** Reads, authenticates and decodes one stored blob. */
  async readBlob(id: Buffer, kind: BlobKind = 'data'): Promise<Buffer> {
    const key = id.toString('hex');
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const sealed = await this.readSealed(id);
    const plain = decodeBlock(this.keyring.encKey, this.keyring.idKey, id, sealed, Math.max(this.chunker.max, 256 * 1024 * 1024));
    if (kind === 'data') this.blocksRead++;
    this.cache.set(key, plain);
    if (this.cache.size > this.cacheLimit) this.cache.delete(this.cache.keys().next().value!);
    return plain;
  }

  /**
   * A blob's sealed bytes. If its pack vanished under us (prune repacked it),
   * the catalog is asked again: the blob has moved, or it is really missing.
   */
  async readSealed(id: Buffer): Promise<Buffer> {
    const key = id.toString('hex');
    let last: StrataError | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      const loc = this.catalog.blockLocation(id);
      if (!loc) throw integrity(`block ${key.slice(0, 16)} is not in the repository`, { block: key });
      try {
        return await this.storage.read({ kind: 'pack', name: loc.pack }, loc.offset, loc.length);
      } catch (e) {
        if (!(e instanceof StrataError)) throw e;
        last = e;
        const now = this.catalog.blockLocation(id);
        if (!now || now.pack === loc.pack) break;
      }
    }
    throw integrity(`block ${key.slice(0, 16)}: ${last!.message}`, { block: key });
  }

  /** Data blocks fetched from the store by this process (cache misses). */
  blocksRead = 0;

  close(): void {
    void this.storage.close();
    this.catalog.close();
  }
}

function readConfig(dir: string): RepoConfig {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, 'config'), 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw noRepository(`no repository at ${dir} (create one with "strata init")`);
    if (code === 'EACCES') throw noRepository(`cannot read repository at ${dir}: permission denied`);
    throw e;
  }
  let config: RepoConfig;
  try {
    config = JSON.parse(text) as RepoConfig;
  } catch {
    throw noRepository(`${dir} is not a strata repository (config is not valid JSON)`);
  }
  if (config?.strata !== 'repository') throw noRepository(`${dir} is not a strata repository`);
  if (typeof config.version !== 'number' || config.version > FORMAT_VERSION) {
    throw new StrataError('format', `repository format version ${config.version} is newer than this strata supports (${FORMAT_VERSION}); upgrade strata`);
  }
  return config;
}

async function unlock(storage: Storage, config: RepoConfig, creds: Credentials): Promise<Keyring> {
  if (creds.keyFile) return new Keyring(readExportedKey(creds.keyFile, config.id));
  if (!creds.password) throw wrongKey('no password given: set STRATA_PASSWORD, use --password-file or --key-file, or run on a terminal');
  const keys: WrappedKey[] = [];
  for await (const name of storage.list('key')) {
    try {
      keys.push(JSON.parse((await storage.get({ kind: 'key', name })).toString('utf8')) as WrappedKey);
    } catch {
      // A damaged key file is skipped; another may still open the repository.
    }
  }
  if (keys.length === 0) throw noRepository(`repository at ${storage.location} has no keys`);
  const password = await creds.password();
  for (const k of keys) {
    const master = await unwrapKey(k, password);
    if (master) return new Keyring(master);
  }
  throw wrongKey('wrong password: no key in this repository opens with it');
}

function readExportedKey(file: string, repoId: string): Buffer {
  let parsed: ExportedKey;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as ExportedKey;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code) throw usageError(`cannot read key file ${file}: ${code === 'ENOENT' ? 'no such file' : code}`);
    throw wrongKey(`${file} is not a strata key file`);
  }
  if (parsed?.strata !== 'key' || typeof parsed.key !== 'string') throw wrongKey(`${file} is not a strata key file`);
  if (parsed.repository !== repoId) throw wrongKey(`key file ${file} belongs to another repository`);
  const master = Buffer.from(parsed.key, 'base64');
  if (master.length !== 32) throw wrongKey(`key file ${file} is damaged`);
  return master;
}

/** Opens the catalog for writing (upgrading its schema if needed), or read-only where writing is not allowed. */
function openCatalog(dir: string): Catalog {
  const file = path.join(dir, 'catalog.db');
  if (!fs.existsSync(file)) throw noRepository(`repository at ${dir} has no catalog.db (if it was lost, run "strata rebuild-catalog")`);
  try {
    return new Catalog(file);
  } catch (e) {
    if (e instanceof StrataError && e.code === 'read_only') return new Catalog(file, { readonly: true });
    if (e instanceof StrataError) throw e;
    const msg = (e as Error).message;
    if (/readonly|read-only|EACCES|permission/i.test(msg)) return new Catalog(file, { readonly: true });
    if (/malformed|not a database|corrupt/i.test(msg)) throw new StrataError('catalog_damaged', 'catalog.db is damaged; run "strata rebuild-catalog" to rebuild it from the packs');
    throw new StrataError('catalog', `cannot open catalog.db: ${msg}`);
  }
}
