/**
 * A repository: config + keys + block store + catalog. Opening one checks the
 * config's format version and unlocks the master key (from a password, which
 * pays for scrypt, or from an exported key file, which does not).
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chunkerParams, DEFAULT_AVG, gearTable, type ChunkerParams } from '../chunker/fastcdc.js';
import { Keyring } from '../crypto/keyring.js';
import { calibrateScrypt, wrapKey, type ScryptParams } from '../crypto/password.js';
import { ExitCode, noRepository, StrataError, usageError } from '../errors.js';
import { BlockCache, DEFAULT_CACHE_BYTES, defaultCacheDir } from '../storage/cache.js';
import type { HttpStorage } from '../storage/http.js';
import { LocalStorage } from '../storage/local.js';
import { locate, type Location } from '../storage/location.js';
import type { S3Storage, S3StorageOptions } from '../storage/s3.js';
import type { Storage, ThreadReaderSpec } from '../storage/storage.js';
import { addDictionary, decodeBlock, type Dictionary } from './blockcodec.js';
import { allDictionaries, decodeWithDictionaries, loadDictionary, sealDictionary } from './dictionary.js';
import { Catalog, type BlobKind } from '../catalog/catalog.js';
import type { UnpackPool } from '../workers/unpack-pool.js';
import { ClaimChecker } from './claims.js';
import { FORMAT_VERSION, parseConfig, readConfig, type RepoConfig } from './config.js';
import { unlock, type Credentials, type ExportedKey } from './unlock.js';
import { DEFAULT_PACK_SIZE, Packer } from './packer.js';
import type { RemoteService } from '../catalog/remote.js';
import { LocalService, type CatalogReader, type CatalogService } from '../catalog/service.js';
import { liveLeases } from '../catalog/lease.js';
import { listPacks, packDrift, SharedLeases } from '../catalog/shared-lease.js';
import { CatalogJournal } from '../catalog/journal.js';

export interface InitOptions {
  chunkAvg?: number;
  scrypt?: ScryptParams;
  packSize?: number;
  compressionLevel?: number;
}

/** How to reach a repository behind `strata serve`. */
export interface RemoteOptions {
  token?: string;
  /** Extra trusted certificate authority (PEM file), for a server with a self-signed certificate. */
  caFile?: string;
  /** Where sealed blocks are cached; null for no cache. */
  cacheDir?: string | null;
  cacheBytes?: number;
  /** For an s3:// repository: the endpoint, region and credentials when not from the environment. */
  s3?: S3StorageOptions;
}

/**
 * Blocks a long read fetches ahead of the one it is at, refilled in bursts
 * of half: so a server gets them in one request. A store where each read is
 * a request of its own, merged with its neighbours (S3), is kept busy with
 * longer bursts: 256 blocks are about 8 MiB.
 */
const READ_AHEAD = 32;
const READ_AHEAD_BY_REQUEST = 256;

export class Repository {
  private readonly cache = new Map<string, Buffer>();
  /** Blocks a long read asks for ahead of the one it is at (engine/read.ts). */
  readonly readAhead: number;
  private readonly cacheLimit = 16;
  readonly chunker: ChunkerParams;
  private gearCache?: Uint32Array;

  private constructor(
    /** A directory, or a server's URL. */
    readonly root: string,
    readonly storage: Storage,
    readonly config: RepoConfig,
    readonly keyring: Keyring,
    /** Who keeps the catalog: this process, or the server (a cache's new copy, once adopted). */
    public service: CatalogService,
    private localCatalog?: Catalog,
    /**
     * For a repository in a bucket: the catalog is a local cache, in this
     * file, rebuilt from the bucket when it lacks what the bucket holds.
     */
    readonly cachedCatalog?: string,
  ) {
    const { min, avg, max, zeros } = config.chunker;
    // The scan relies on runs of at least 64 (see gear.wat); a config saying otherwise cuts no zeros out.
    const cutsZeros = config.chunker.algorithm === 'fastcdc-gear32-zeros' && Number.isInteger(zeros) && zeros! >= 64 && zeros! <= max;
    this.chunker = { min, avg, max, zeros: cutsZeros ? zeros : 0 };
    // No local files and no server to batch for us: every read is a request.
    this.readAhead = !storage.threadReader && service instanceof LocalService ? READ_AHEAD_BY_REQUEST : READ_AHEAD;
  }

  /** The chunker's keyed gear table: made when a backup first asks, as reads never need it. */
  get gear(): Uint32Array {
    return (this.gearCache ??= gearTable(this.keyring.chunkerSeed));
  }

  /** The catalog's reading role alone: what a read-only front end is given. */
  get reader(): CatalogReader {
    return this.service;
  }

  /** True for a repository behind `strata serve`. */
  get remote(): boolean {
    return this.service.remote;
  }

  /** The catalog itself, for what only runs where it lives (maintenance). */
  get catalog(): Catalog {
    if (!this.localCatalog) {
      throw new StrataError('local_only', `this command runs where the repository is: on the server, against its directory (not ${this.root})`);
    }
    return this.localCatalog;
  }

  static async init(root: string, password: string, opts: InitOptions = {}, remote: RemoteOptions = {}): Promise<Repository> {
    const where = locate(root);
    if (where.kind === 'server') return Repository.initRemote(where.url, password, opts, remote);
    if (where.kind === 's3') return Repository.initS3(where, password, opts, remote);
    const dir = where.dir;
    if (fs.existsSync(dir)) {
      if (!fs.statSync(dir).isDirectory()) throw usageError(`${dir} exists and is not a directory`);
      if (fs.readdirSync(dir).length > 0) {
        if (fs.existsSync(path.join(dir, 'config'))) throw new StrataError('exists', `a repository already exists at ${dir}`);
        throw usageError(`${dir} is not empty; choose a new or empty directory`);
      }
    }
    fs.mkdirSync(dir, { recursive: true });
    const storage = new LocalStorage(dir);
    let catalog: Catalog | undefined;
    const { config, keyring } = await writeNewRepository(storage, password, opts, async () => void (catalog = new Catalog(path.join(dir, 'catalog.db'))));
    return new Repository(dir, storage, config, keyring, new LocalService(catalog!, storage), catalog);
  }

  /** A new repository on a server: the key is made and wrapped here, the server only stores it. */
  private static async initRemote(url: string, password: string, opts: InitOptions, options: RemoteOptions): Promise<Repository> {
    const { storage, remote } = await connect(url, options);
    try {
      if (await storage.exists({ kind: 'config', name: 'config' })) throw new StrataError('exists', `a repository already exists at ${storage.location}`);
      const { config, keyring } = await writeNewRepository(storage, password, opts, async () => {});
      return new Repository(storage.location, storage, config, keyring, await remoteService(storage, config, remote, keyring));
    } catch (e) {
      await storage.close();
      throw e;
    }
  }

  /**
   * A new repository in a bucket, made when missing: the key and config go
   * in the bucket, the catalog starts empty in the cache directory.
   */
  private static async initS3(where: S3Where, password: string, opts: InitOptions, options: RemoteOptions): Promise<Repository> {
    const { storage, s3 } = await connectS3(where, options);
    try {
      await s3.createBucket();
      if (await storage.exists({ kind: 'config', name: 'config' })) throw new StrataError('exists', `a repository already exists at ${storage.location}`);
      let file = '';
      let catalog: Catalog | undefined;
      const { config, keyring } = await writeNewRepository(storage, password, opts, async (config) => {
        file = await s3CatalogFile(s3, config.id, options);
        removeCatalog(file);
        catalog = new Catalog(file);
      });
      const service = new LocalService(catalog!, storage, false, new SharedLeases(s3.leases), new CatalogJournal(s3.journal), blockCache(config.id, options));
      return new Repository(storage.location, storage, config, keyring, service, catalog, file);
    } catch (e) {
      await storage.close();
      throw e;
    }
  }

  /** A repository in a bucket, on its local catalog (made empty if there is none: see cachedCatalog). */
  private static async openS3(where: S3Where, creds: Credentials, options: RemoteOptions, fresh = false, readWindows = false, drift = false): Promise<{ repo: Repository; previous?: string }> {
    const { storage, s3 } = await connectS3(where, options);
    // The listing that tells whether the cache is behind the bucket goes out first: the key and the catalog are opened meanwhile.
    const listed = drift ? listPacks(storage) : undefined;
    listed?.catch(() => {});
    try {
      const { config, keyring } = await unlockKept(storage, `${s3.endpoint}\n${s3.location}`, creds, options);
      const file = await s3CatalogFile(s3, config.id, options);
      const previous = fresh ? setAside(file) : undefined;
      // A command that only reads lets its statements share short read transactions, as on a directory.
      const catalog = new Catalog(file, { readWindows });
      const service = new LocalService(catalog, storage, false, new SharedLeases(s3.leases), new CatalogJournal(s3.journal), blockCache(config.id, options));
      const repo = new Repository(storage.location, storage, config, keyring, service, catalog, file);
      repo.packsListed = listed;
      return { repo, previous };
    } catch (e) {
      await storage.close();
      throw e;
    }
  }

  /**
   * The packs of a repository in a bucket that its local catalog does not
   * know, and those it knows that the bucket no longer holds: none of either
   * means the cache is up to date (the bucket changes only by packs added
   * and removed). One listing of the bucket's packs.
   */
  catalogDrift(): Promise<{ added: string[]; removed: string[] }> {
    const listed = this.packsListed;
    this.packsListed = undefined;
    return packDrift(this.catalog, this.storage, listed);
  }

  /** The listing of the bucket's packs opened with `drift` began (see open): taken by the next catalogDrift. */
  private packsListed?: Promise<string[]>;

  /**
   * Goes on with the catalog of `next`: this repository opened again on its
   * cache brought up to date (engine/rebuild.ts, refreshCatalog, which closed
   * the one this object had), so that what holds this object (a mount's
   * trees) reads the new one.
   */
  adopt(next: Repository): void {
    if (next.storage !== this.storage || !this.cachedCatalog || next.cachedCatalog !== this.cachedCatalog) throw new Error(`${next.root} is not this repository's cache brought up to date`);
    this.service = next.service;
    this.localCatalog = next.localCatalog;
  }

  /** Whether another process of this machine holds a lease in the catalog (a backup, forget or prune under way here). */
  catalogBusy(): boolean {
    return liveLeases(this.catalog).length > 0;
  }

  /**
   * For rebuilding a cached catalog: this repository (its key and store) on
   * a new catalog beside the cache, empty or a copy of it, which install()
   * then puts in its place, returning the repository opened on it.
   */
  rebuilding(from: 'empty' | 'copy' = 'empty'): { repo: Repository; install(): Repository; discard(): void } {
    const file = this.cachedCatalog;
    if (!file) throw new StrataError('local_only', `the catalog of ${this.root} is not a cache`);
    const next = `${file}.rebuild-${process.pid}-${randomBytes(4).toString('hex')}`;
    if (from === 'copy') this.catalog.copyTo(next);
    const catalog = new Catalog(next);
    const { shared, journal, metaCache } = this.service as LocalService;
    const repo = new Repository(this.root, this.storage, this.config, this.keyring, new LocalService(catalog, this.storage, false, shared, journal, metaCache), catalog, next);
    return {
      repo,
      install: () => {
        catalog.close();
        this.localCatalog?.close();
        removeCatalog(file);
        fs.renameSync(next, file);
        const installed = new Catalog(file, { readWindows: this.catalog.windowedReads });
        return new Repository(this.root, this.storage, this.config, this.keyring, new LocalService(installed, this.storage, false, shared, journal, metaCache), installed, file);
      },
      discard: () => {
        catalog.close();
        removeCatalog(next);
      },
    };
  }

  /**
   * Opens the repository at `root`. `drift`: for one in a bucket, its packs
   * are listed at once, for the catalogDrift that follows.
   */
  static async open(root: string, creds: Credentials, opts: { readonly?: boolean; drift?: boolean } = {}, options: RemoteOptions = {}): Promise<Repository> {
    const where = locate(root);
    if (where.kind === 's3') return (await Repository.openS3(where, creds, options, false, opts.readonly, opts.drift)).repo;
    if (where.kind === 'server') {
      const { storage, remote } = await connect(where.url, options);
      try {
        const { config, keyring } = await unlockKept(storage, storage.location, creds, remote);
        return new Repository(storage.location, storage, config, keyring, await remoteService(storage, config, remote, keyring));
      } catch (e) {
        await storage.close();
        throw e;
      }
    }
    const dir = where.dir;
    const config = readConfig(dir);
    const storage = new LocalStorage(dir, true);
    const keyring = await unlock(storage, config, creds);
    // A command that only reads lets its statements share short read transactions (see CatalogDb).
    const catalog = openCatalog(dir, { readWindows: opts.readonly });
    return new Repository(dir, storage, config, keyring, new LocalService(catalog, storage), catalog);
  }

  /**
   * Opens a repository on a new, empty catalog (for rebuilding it from the
   * packs); the old catalog.db, if any, is renamed and its new name returned.
   */
  static async openForRebuild(root: string, creds: Credentials, options: RemoteOptions = {}): Promise<{ repo: Repository; previous?: string }> {
    const where = locate(root);
    if (where.kind === 'server') throw new StrataError('local_only', 'rebuild-catalog runs on the server, against the repository directory');
    if (where.kind === 's3') return Repository.openS3(where, creds, options, true);
    const dir = where.dir;
    const config = readConfig(dir);
    const storage = new LocalStorage(dir);
    const keyring = await unlock(storage, config, creds);
    const file = path.join(dir, 'catalog.db');
    const previous = setAside(file);
    const catalog = new Catalog(file);
    return { repo: new Repository(dir, storage, config, keyring, new LocalService(catalog, storage), catalog), previous };
  }

  newPacker(relocate = false): Packer {
    return new Packer(this.service, this.keyring, this.config.packSize, relocate, this.config.version >= 2);
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
    let plain: Buffer;
    try {
      let sealed = await this.readSealed(id);
      try {
        plain = await this.decode(id, sealed);
      } catch (e) {
        // A damaged copy in a local block cache: drop it and fetch the block again.
        if (!(e instanceof StrataError) || e.code !== 'integrity' || !this.service.evict(id)) throw e;
        sealed = await this.readSealed(id);
        plain = await this.decode(id, sealed);
      }
    } catch (e) {
      if (!(e instanceof StrataError) || e.code !== 'integrity') throw e;
      plain = await this.fromSpare(id, e);
    }
    if (kind === 'data') this.blocksRead++;
    this.cache.set(key, plain);
    if (this.cache.size > this.cacheLimit) this.cache.delete(this.cache.keys().next().value!);
    return plain;
  }

  /**
   * A block whose first copy fails, from one of its spare copies (catalog
   * schema 7): stored again by a client that found the first one forged.
   * Each is authenticated as any copy is; `failure` is thrown if none opens.
   */
  private async fromSpare(id: Buffer, failure: StrataError): Promise<Buffer> {
    for (const sealed of await this.service.spares(id).catch(() => [])) {
      try {
        return await this.decode(id, sealed);
      } catch {
        // The next one.
      }
    }
    throw failure;
  }

  /** Authenticates and decodes a sealed blob, fetching the dictionary it was compressed with the first time one is needed. */
  decode(id: Buffer, sealed: Uint8Array, limit = this.maxBlobSize): Promise<Buffer> {
    return decodeWithDictionaries(this.dictionarySource, this.keyring, () => decodeBlock(this.keyring.encKey, this.keyring.idKey, id, sealed, limit));
  }

  private readonly dictionarySource = (name: string, fresh?: boolean) => this.service.sealedDictionary(name, fresh);

  /** Whether new blocks may be compressed with a dictionary (format 2, compression on). */
  get dictionariesAllowed(): boolean {
    return this.config.version >= 2 && this.compressionLevel > 0;
  }

  /** Whether a file of one block is recorded in its tree entry instead of a sealed TOC (format 3). */
  get blocksInEntries(): boolean {
    return this.config.version >= 3;
  }

  /** The dictionary new blocks are compressed with: the repository's first, if it has one. */
  async dictionary(): Promise<Dictionary | undefined> {
    if (!this.dictionariesAllowed) return undefined;
    let first: string | undefined;
    for await (const name of this.storage.list('dict')) if (first === undefined || name < first) first = name;
    return first === undefined ? undefined : loadDictionary(this.dictionarySource, this.keyring, first);
  }

  /** Stores a new dictionary made of `bytes`; blocks may name it once this resolves. */
  async addDictionary(bytes: Uint8Array): Promise<Dictionary> {
    const { dict, name, sealed } = sealDictionary(this.keyring, bytes);
    await this.storage.put({ kind: 'dict', name }, sealed);
    addDictionary(dict);
    return dict;
  }

  /** The largest plaintext a stored blob may decode to (trees and TOCs may be larger than blocks). */
  get maxBlobSize(): number {
    return Math.max(this.chunker.max, 256 * 1024 * 1024);
  }

  /**
   * How worker threads read this repository's packs themselves, when this
   * process reads its store directly (a restore then hands them runs of
   * blocks to read and write); undefined over a server.
   */
  get threadReader(): ThreadReaderSpec | undefined {
    if (!this.storage.threadReader || !(this.service instanceof LocalService) || !this.localCatalog) return undefined;
    return this.storage.threadReader();
  }

  /**
   * Whether a restore's workers decode and write blocks (unpackers): this
   * process reads the store itself, and the workers read its packs too
   * (threadReader) or are handed the sealed bytes this thread fetched (a
   * bucket); not over a server.
   */
  get unpacksOnThreads(): boolean {
    return this.service instanceof LocalService && this.localCatalog !== undefined;
  }

  private unpackPool?: Promise<UnpackPool>;

  /**
   * Worker threads that restore blocks from pack files (started on first use;
   * only restores load their code). Files restored at once all ask for it
   * before it exists: they share one promise, so one pool is made and closed.
   */
  unpackers(): Promise<UnpackPool> {
    if (!this.unpacksOnThreads) return Promise.reject(new Error('worker threads restore only from a repository this process reads itself'));
    const store = this.threadReader;
    return (this.unpackPool ??= (async () => {
      const { UnpackPool } = await import('../workers/unpack-pool.js');
      // Workers cannot fetch: they get every dictionary up front (a repository has one or two).
      return new UnpackPool(this.keyring, this.maxBlobSize, await allDictionaries(this.storage, this.dictionarySource, this.keyring), store);
    })());
  }

  /**
   * Whether blocks fetched from a server are added to the local block cache
   * (they are always looked up there). A whole restore reads each block once:
   * adding them would only evict what cat and mounts come back to.
   */
  get fillCache(): boolean {
    return this.service.remote ? (this.service as RemoteService).fillCache : false;
  }

  set fillCache(fill: boolean) {
    if (this.service.remote) (this.service as RemoteService).fillCache = fill;
  }

  /**
   * Whether a pack read a few times is fetched whole and kept for its other
   * reads (a bucket's store: storage/coalesce.ts): for a restore, which reads
   * most blocks of every pack it touches. Other stores read as they always do.
   */
  get wholePacks(): boolean {
    return (this.storage as { wholePacks?: boolean }).wholePacks === true;
  }

  set wholePacks(on: boolean) {
    const store = this.storage as { wholePacks?: boolean };
    if ('wholePacks' in store) store.wholePacks = on;
  }

  /** A blob's sealed bytes. */
  readSealed(id: Buffer): Promise<Buffer> {
    return this.service.readSealed(id);
  }

  /** Data blocks fetched from the store by this process (cache misses). */
  blocksRead = 0;

  /** Bytes sent to and received from a server or an S3 endpoint (0 for a local repository). */
  get traffic(): { bytesSent: number; bytesReceived: number } {
    const s = this.storage as Partial<HttpStorage>;
    return { bytesSent: s.bytesSent ?? 0, bytesReceived: s.bytesReceived ?? 0 };
  }

  close(): void {
    void this.unpackPool?.then((pool) => pool.close()).catch(() => {});
    void this.service.close();
  }
}

/** Writes a new repository's key, then (last: a store with a config is a complete repository) its config. */
async function writeNewRepository(storage: Storage, password: string, opts: InitOptions, beforeConfig: (config: RepoConfig) => Promise<void>): Promise<{ config: RepoConfig; keyring: Keyring }> {
  const params = chunkerParams(opts.chunkAvg ?? DEFAULT_AVG);
  const keyring = Keyring.generate();
  const config: RepoConfig = {
    strata: 'repository',
    version: FORMAT_VERSION,
    id: randomBytes(16).toString('hex'),
    created: new Date().toISOString(),
    chunker: { algorithm: 'fastcdc-gear32-zeros', ...params },
    compression: { algorithm: 'zstd', level: opts.compressionLevel ?? 3 },
    cipher: 'aes-256-gcm',
    packSize: opts.packSize ?? DEFAULT_PACK_SIZE,
  };
  const wrapped = await wrapKey(keyring.master, password, opts.scrypt ?? (await calibrateScrypt()), config.id);
  await storage.put({ kind: 'key', name: randomBytes(8).toString('hex') }, Buffer.from(JSON.stringify(wrapped, null, 2)));
  await beforeConfig(config);
  await storage.put({ kind: 'config', name: 'config' }, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
  return { config, keyring };
}

/**
 * A repository opened without its key, for what the catalog alone can do:
 * forget and prune by a server's admin (or on the server's directory).
 */
export class KeylessRepository {
  private constructor(
    readonly root: string,
    readonly service: CatalogService,
  ) {}

  static async open(root: string, options: RemoteOptions = {}): Promise<KeylessRepository> {
    const where = locate(root);
    if (where.kind === 's3') {
      throw usageError(`--no-key is for a server's admin: a repository in a bucket (${root}) is kept by its clients, which open it with the key`);
    }
    if (where.kind === 'server') {
      const { storage, remote } = await connect(where.url, options);
      try {
        const { kept, fetch } = keptConfig(storage, storage.location, remote);
        const config = parseConfig(kept ?? (await fetch()), storage.location);
        return new KeylessRepository(storage.location, await remoteService(storage, config, remote));
      } catch (e) {
        await storage.close();
        throw e;
      }
    }
    const dir = where.dir;
    readConfig(dir);
    return new KeylessRepository(dir, new LocalService(openCatalog(dir), new LocalStorage(dir)));
  }

  close(): void {
    void this.service.close();
  }
}

/** The code for a repository on a server, loaded only for one (it pulls in HTTP and TLS). */
async function remoteModules() {
  const [http, service] = await Promise.all([import('../storage/http.js'), import('../catalog/remote.js')]);
  return { HttpStorage: http.HttpStorage, RemoteService: service.RemoteService };
}

/** Storage on a server, and the options with the cache directory resolved (null: no cache). */
async function connect(url: string, options: RemoteOptions): Promise<{ storage: HttpStorage; remote: RemoteOptions }> {
  const { HttpStorage } = await remoteModules();
  const remote = { ...options, cacheDir: options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir };
  if (!remote.token) throw usageError('a server needs a token: use --token or set STRATA_TOKEN');
  let ca: Buffer | undefined;
  if (remote.caFile) {
    try {
      ca = fs.readFileSync(remote.caFile);
    } catch (e) {
      throw usageError(`cannot read certificate ${remote.caFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  return { storage: new HttpStorage(url, { token: remote.token, ...(ca ? { ca } : {}) }), remote };
}

async function remoteService(storage: HttpStorage, config: RepoConfig, remote: RemoteOptions, keyring?: Keyring): Promise<RemoteService> {
  const { RemoteService } = await remoteModules();
  const cache = blockCache(config.id, remote);
  return new RemoteService(storage, cache, keyring && new ClaimChecker(storage, keyring));
}

/**
 * The config of a server's or a bucket's repository, kept in the cache
 * directory: it never changes (objects are write-once), and not asking for it
 * saves a round trip on every command. `where` names the store.
 */
function configFile(where: string, options: RemoteOptions): string | undefined {
  if (options.cacheDir === null) return undefined;
  const name = createHash('sha256').update(where).digest('hex').slice(0, 32);
  return path.join(options.cacheDir ?? defaultCacheDir(), 'servers', `${name}.config`);
}

/** The config as kept here (undefined: not yet), and a fetch of it from the store that keeps it. */
function keptConfig(storage: Storage, where: string, options: RemoteOptions): { kept?: string; fetch: () => Promise<string> } {
  const file = configFile(where, options);
  let kept: string | undefined;
  try {
    kept = file ? fs.readFileSync(file, 'utf8') : undefined;
  } catch {
    // Not kept yet.
  }
  const fetch = async () => {
    const text = await configText(storage);
    if (file) {
      try {
        fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
        const tmp = `${file}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, text, { mode: 0o600 });
        fs.renameSync(tmp, file);
      } catch {
        // A cache is optional.
      }
    }
    return text;
  };
  return { kept, fetch };
}

/** The repository's config (as kept, else fetched and kept) and the key it opens with. */
async function unlockKept(storage: Storage, where: string, creds: Credentials, options: RemoteOptions): Promise<{ config: RepoConfig; keyring: Keyring }> {
  const { kept, fetch } = keptConfig(storage, where, options);
  let config = parseConfig(kept ?? (await fetch()), storage.location);
  try {
    return { config, keyring: await unlock(storage, config, creds) };
  } catch (e) {
    // A config kept from an earlier run may belong to a repository since made again at this place.
    if (kept === undefined || !(e instanceof StrataError) || e.exitCode !== ExitCode.wrongKey) throw e;
    config = parseConfig(await fetch(), storage.location);
    return { config, keyring: await unlock(storage, config, creds) };
  }
}

/** A store's config object, as text; a store without one holds no repository. */
async function configText(storage: Storage): Promise<string> {
  try {
    return (await storage.get({ kind: 'config', name: 'config' })).toString('utf8');
  } catch (e) {
    if (e instanceof StrataError && e.code === 'not_found') throw noRepository(`no repository at ${storage.location} (create one with "strata init")`);
    throw e;
  }
}

type S3Where = Extract<Location, { kind: 's3' }>;

/** A bucket's store, through the retry and coalescing wrappers, and the driver itself (for the bucket, its endpoint and leases). */
async function connectS3(where: S3Where, options: RemoteOptions): Promise<{ storage: Storage; s3: S3Storage }> {
  const [{ S3Storage, S3_RETRY }, { RetryingStorage }, { CoalescingStorage }] = await Promise.all([
    import('../storage/s3.js'),
    import('../storage/retry.js'),
    import('../storage/coalesce.js'),
  ]);
  const s3 = new S3Storage({ bucket: where.bucket, prefix: where.prefix }, options.s3);
  // Each read is a request: those asked together (a restore's blocks) are merged, then retried as one.
  return { storage: new CoalescingStorage(new RetryingStorage(s3, S3_RETRY)), s3 };
}

/**
 * Where the catalog of a repository in a bucket is kept on this machine:
 * under the cache directory, one per endpoint, bucket, prefix and repository
 * id (a repository made again at the same place gets a new catalog).
 */
async function s3CatalogFile(s3: S3Storage, id: string, options: RemoteOptions): Promise<string> {
  const base = options.cacheDir ?? defaultCacheDir();
  const name = createHash('sha256').update(`${s3.endpoint}\n${s3.location}\n${id}`).digest('hex').slice(0, 32);
  const dir = path.join(base, 'catalogs', name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return path.join(dir, 'catalog.db');
}

/**
 * The repository's block cache under the cache directory (the default one
 * when none is given): a server's client keeps sealed blocks there, a
 * bucket's client its sealed trees, TOCs and records (LocalService). None
 * with --no-cache.
 */
function blockCache(id: string, options: RemoteOptions): BlockCache | undefined {
  if (options.cacheDir === null) return undefined;
  return BlockCache.open(options.cacheDir ?? defaultCacheDir(), id, options.cacheBytes ?? DEFAULT_CACHE_BYTES);
}

/** Renames a catalog (and its -wal, -shm) aside as FILE.<time>.old; returns the new name, if there was one. */
function setAside(file: string): string | undefined {
  if (!fs.existsSync(file)) return undefined;
  const previous = `${file}.${new Date().toISOString().replace(/[:.]/g, '-')}.old`;
  fs.renameSync(file, previous);
  for (const ext of ['-wal', '-shm']) if (fs.existsSync(file + ext)) fs.renameSync(file + ext, previous + ext);
  return previous;
}

function removeCatalog(file: string): void {
  for (const ext of ['', '-wal', '-shm']) fs.rmSync(file + ext, { force: true });
}

/** Opens the catalog for writing (upgrading its schema if needed), or read-only where writing is not allowed. */
function openCatalog(dir: string, opts: { readWindows?: boolean } = {}): Catalog {
  const file = path.join(dir, 'catalog.db');
  if (!fs.existsSync(file)) throw noRepository(`repository at ${dir} has no catalog.db (if it was lost, run "strata rebuild-catalog")`);
  try {
    return new Catalog(file, opts);
  } catch (e) {
    if (e instanceof StrataError && e.code === 'read_only') return new Catalog(file, { readonly: true });
    if (e instanceof StrataError) throw e;
    const msg = (e as Error).message;
    if (/readonly|read-only|EACCES|permission/i.test(msg)) return new Catalog(file, { readonly: true });
    if (/malformed|not a database|corrupt/i.test(msg)) throw new StrataError('catalog_damaged', 'catalog.db is damaged; run "strata rebuild-catalog" to rebuild it from the packs');
    throw new StrataError('catalog', `cannot open catalog.db: ${msg}`);
  }
}
