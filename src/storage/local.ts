/**
 * A Storage in a local directory: config at the top, keys/ and packs/xx/ below.
 * Writes go to a temporary name, are synced, then renamed into place.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { StorageError, type Handle, type Kind, type Storage, type ThreadReader, type ThreadReaderSpec } from './storage.js';

const NAME = /^[0-9a-zA-Z_.-]+$/;
/** Kinds kept in one directory each (packs are spread over 256). */
const FLAT_DIRS: Partial<Record<Kind, string>> = { key: 'keys', dict: 'dicts' };
/** Room left free on the repository's disk for the catalog and for cleaning up. */
const RESERVE = 1024 * 1024;
const OPEN_HANDLES = 16;
/** Reads up to this size are synchronous when the storage is made with `syncReads`. */
const SYNC_READ_BYTES = 256 * 1024;

interface OpenObject {
  fh: fs.FileHandle;
  size: number;
  /** Reads under way. */
  users: number;
  /** No longer in the table of handles: closed once no read uses it. */
  retired: boolean;
}

function retire(open: OpenObject): void {
  open.retired = true;
  if (open.users === 0) void open.fh.close().catch(() => {});
}

function release(open: OpenObject): void {
  open.users--;
  if (open.retired && open.users === 0) void open.fh.close().catch(() => {});
}

export class LocalStorage implements Storage {
  readonly location: string;

  /**
   * Small reads (a block) are made synchronously: from the page cache one
   * takes microseconds, its round trip through the thread pool far longer
   * (a restore of small files spent a fifth of its time there). For a
   * command's own repository; a server, serving many at once, keeps them
   * asynchronous.
   */
  constructor(
    readonly root: string,
    private readonly syncReads = false,
  ) {
    this.location = root;
  }

  threadReader(): ThreadReaderSpec {
    return { driver: 'directory', root: this.root };
  }

  /** The file an object is stored in (its name checked: no path can leave the root). */
  file(h: Handle): string {
    if (!NAME.test(h.name) || h.name.startsWith('.')) throw new StorageError('io', `invalid object name ${JSON.stringify(h.name)}`);
    switch (h.kind) {
      case 'config':
        return path.join(this.root, 'config');
      case 'key':
        return path.join(this.root, 'keys', h.name);
      case 'pack':
        return path.join(this.root, 'packs', h.name.slice(0, 2), h.name);
      case 'dict':
        return path.join(this.root, 'dicts', h.name);
    }
  }

  async put(h: Handle, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const target = this.file(h);
    await fs.mkdir(path.dirname(target), { recursive: true });
    const parts = Array.isArray(data) ? (data as readonly Uint8Array[]) : [data as Uint8Array];
    const size = parts.reduce((n, p) => n + p.byteLength, 0);
    await this.ensureSpace(size);
    const tmp = path.join(path.dirname(target), `.tmp-${randomBytes(8).toString('hex')}`);
    const fh = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      // writev takes a limited number of buffers per call.
      for (let i = 0; i < parts.length; i += 512) await fh.writev(parts.slice(i, i + 512) as NodeJS.ArrayBufferView[]);
      await fh.sync();
    } catch (e) {
      await fh.close().catch(() => {});
      await fs.rm(tmp, { force: true });
      throw e;
    }
    await fh.close();
    if ((await this.publish(h, tmp, size, () => hashStream(partsOf(parts)))) === 'conflict') {
      throw new StorageError('conflict', `${h.kind} ${h.name} already exists with other content; objects are never replaced`);
    }
  }

  /**
   * Stores an object streamed from `source` (`size` bytes) unless the name is
   * taken: an object is never replaced. Returns "created", "identical" when the
   * same bytes were already there (a retried upload), or "conflict" when other
   * bytes are. If `source` fails or falls short, nothing is left behind.
   */
  async putStream(h: Handle, source: AsyncIterable<Uint8Array>, size: number): Promise<'created' | 'identical' | 'conflict'> {
    const target = this.file(h);
    if (await this.exists(h)) {
      // Drain the upload before answering, so the connection stays usable.
      const digest = await hashStream(source);
      return (await sameContent(target, size, digest)) ? 'identical' : 'conflict';
    }
    await fs.mkdir(path.dirname(target), { recursive: true });
    await this.ensureSpace(size);
    const tmp = path.join(path.dirname(target), `.tmp-${randomBytes(8).toString('hex')}`);
    const fh = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const sha = createHash('sha256');
    try {
      let got = 0;
      for await (const chunk of source) {
        got += chunk.byteLength;
        if (got > size) throw new StorageError('io', `${h.kind} ${h.name}: more than the announced ${size} bytes`);
        sha.update(chunk);
        await fh.write(chunk);
      }
      if (got !== size) throw new StorageError('short_read', `${h.kind} ${h.name}: upload ended after ${got} of ${size} bytes`);
      await fh.sync();
      await fh.close();
    } catch (e) {
      await fh.close().catch(() => {});
      await fs.rm(tmp, { force: true });
      throw e;
    }
    return this.publish(h, tmp, size, async () => sha.digest());
  }

  /**
   * Gives the written temporary file `tmp` its name, unless the name is
   * taken: an object is never replaced. `digest` (asked at most once) is the
   * new bytes' SHA-256, compared with what is there.
   */
  private async publish(h: Handle, tmp: string, size: number, digest: () => Promise<Buffer>): Promise<'created' | 'identical' | 'conflict'> {
    const target = this.file(h);
    try {
      // A hard link fails if the name exists, where a rename would replace it.
      await fs.link(tmp, target);
      return 'created';
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return (await sameContent(target, size, await digest())) ? 'identical' : 'conflict';
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV') throw e;
      // A file system without hard links: check, then rename (a narrow race).
      if (await this.exists(h)) return (await sameContent(target, size, await digest())) ? 'identical' : 'conflict';
      await fs.rename(tmp, target);
      return 'created';
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  /**
   * Stops short of a full disk: a repository whose disk is full cannot even
   * open its catalog, so some room stays free for reading and cleaning up.
   */
  private async ensureSpace(bytes: number): Promise<void> {
    let free: number;
    try {
      const st = await fs.statfs(this.root);
      free = st.bavail * st.bsize;
    } catch {
      return;
    }
    if (free < bytes + RESERVE) {
      const e = new Error(`no space left on device (${free} bytes free in ${this.root}, ${bytes + RESERVE} needed)`) as NodeJS.ErrnoException;
      e.code = 'ENOSPC';
      throw e;
    }
  }

  async get(h: Handle): Promise<Buffer> {
    try {
      return await fs.readFile(this.file(h));
    } catch (e) {
      throw this.translate(e, h);
    }
  }

  async *stream(h: Handle, start: number, end: number): AsyncIterable<Buffer> {
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(this.file(h), 'r');
    } catch (e) {
      throw this.translate(e, h);
    }
    try {
      if (end < start) return;
      const size = (await fh.stat()).size;
      if (start < 0 || end >= size) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted bytes ${start}-${end}, it has ${size}`);
      for await (const chunk of fh.createReadStream({ start, end, autoClose: false })) yield chunk as Buffer;
    } finally {
      await fh.close();
    }
  }

  async read(h: Handle, offset: number, length: number): Promise<Buffer> {
    const open = await this.acquire(h);
    try {
      const { fh, size } = open;
      // A range past the end fails before anything is allocated: a damaged or
      // hostile catalog cannot make us reserve memory the object cannot fill.
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
        throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, it has ${size}`);
      }
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      const sync = this.syncReads && length <= SYNC_READ_BYTES;
      while (got < length) {
        const bytesRead = sync ? readSync(fh.fd, buf, got, length - got, offset + got) : (await fh.read(buf, got, length - got, offset + got)).bytesRead;
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got !== length) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, got ${got}`);
      return buf;
    } finally {
      release(open);
    }
  }

  /**
   * Open handles of recently read objects, with their sizes (objects never
   * change once written): a restore reads many blocks of one pack. A handle
   * pushed out while reads are under way is closed when the last one ends.
   */
  private readonly handles = new Map<string, Promise<OpenObject>>();

  private async acquire(h: Handle): Promise<OpenObject> {
    const file = this.file(h);
    for (;;) {
      let p = this.handles.get(file);
      if (p) {
        this.handles.delete(file);
        this.handles.set(file, p);
      } else {
        p = fs.open(file, 'r').then(async (fh) => {
          try {
            return { fh, size: (await fh.stat()).size, users: 0, retired: false };
          } catch (e) {
            await fh.close();
            throw e;
          }
        });
        this.handles.set(file, p);
        p.catch(() => this.handles.delete(file));
        if (this.handles.size > OPEN_HANDLES) {
          const [oldest, old] = this.handles.entries().next().value!;
          this.handles.delete(oldest);
          void old.then(retire).catch(() => {});
        }
      }
      let open: OpenObject;
      try {
        open = await p;
      } catch (e) {
        throw this.translate(e, h);
      }
      // Retired between the lookup and now: open it again.
      if (open.retired) continue;
      open.users++;
      return open;
    }
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map((p) => p.then(retire).catch(() => {})));
  }

  async stat(h: Handle): Promise<{ size: number; mtimeMs: number }> {
    try {
      const st = await fs.stat(this.file(h));
      return { size: st.size, mtimeMs: st.mtimeMs };
    } catch (e) {
      throw this.translate(e, h);
    }
  }

  async exists(h: Handle): Promise<boolean> {
    try {
      await fs.access(this.file(h));
      return true;
    } catch {
      return false;
    }
  }

  async *list(kind: Kind): AsyncIterable<string> {
    if (kind === 'config') {
      if (await this.exists({ kind, name: 'config' })) yield 'config';
      return;
    }
    const base = path.join(this.root, FLAT_DIRS[kind] ?? 'packs');
    const dirs = kind in FLAT_DIRS ? [base] : (await readdirOrEmpty(base)).map((d) => path.join(base, d));
    for (const dir of dirs) {
      for (const name of await readdirOrEmpty(dir)) if (!name.startsWith('.')) yield name;
    }
  }

  async sweepTemporary(olderThanMs: number): Promise<number> {
    const packs = path.join(this.root, 'packs');
    const dirs = [...Object.values(FLAT_DIRS).map((d) => path.join(this.root, d)), ...(await readdirOrEmpty(packs)).map((d) => path.join(packs, d))];
    let freed = 0;
    for (const dir of dirs) {
      for (const name of await readdirOrEmpty(dir)) {
        if (!name.startsWith('.tmp-')) continue;
        const file = path.join(dir, name);
        const st = await fs.stat(file).catch(() => undefined);
        if (!st || st.mtimeMs > Date.now() - olderThanMs) continue;
        await fs.rm(file, { force: true });
        freed += st.size;
      }
    }
    return freed;
  }

  async delete(h: Handle): Promise<void> {
    const open = this.handles.get(this.file(h));
    this.handles.delete(this.file(h));
    void open?.then(retire).catch(() => {});
    await fs.rm(this.file(h), { force: true });
  }

  private translate(e: unknown, h: Handle): Error {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new StorageError('not_found', `${h.kind} ${h.name} not found`);
    return e as Error;
  }
}

async function hashStream(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const sha = createHash('sha256');
  for await (const chunk of source) sha.update(chunk);
  return sha.digest();
}

async function sameContent(file: string, size: number, digest: Buffer): Promise<boolean> {
  const st = await fs.stat(file);
  if (st.size !== size) return false;
  const fh = await fs.open(file, 'r');
  try {
    return (await hashStream(fh.createReadStream({ autoClose: false }))).equals(digest);
  } finally {
    await fh.close();
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

async function* partsOf(parts: readonly Uint8Array[]): AsyncIterable<Uint8Array> {
  yield* parts;
}

/**
 * A directory's objects read synchronously by a thread of its own (a
 * restore's workers): the last few files stay open, and a range past an
 * object's end fails before anything is allocated for it.
 */
export class DirectoryThreadReader implements ThreadReader {
  private readonly store: LocalStorage;
  private readonly open = new Map<string, { fd: number; size: number }>();
  private buf = Buffer.allocUnsafe(1024 * 1024);

  constructor(root: string) {
    this.store = new LocalStorage(root);
  }

  read(h: Handle, offset: number, length: number): Buffer {
    const { fd, size } = this.opened(h);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
      throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, it has ${size}`);
    }
    if (this.buf.length < length) this.buf = Buffer.allocUnsafe(Math.max(length, this.buf.length * 2));
    let got = 0;
    while (got < length) {
      const n = readSync(fd, this.buf, got, length - got, offset + got);
      if (n === 0) break;
      got += n;
    }
    if (got < length) throw new StorageError('short_read', `${h.kind} ${h.name}: wanted ${length} bytes at ${offset}, got ${got}`);
    return this.buf.subarray(0, length);
  }

  private opened(h: Handle): { fd: number; size: number } {
    const file = this.store.file(h);
    let p = this.open.get(file);
    if (p) {
      this.open.delete(file);
      this.open.set(file, p);
      return p;
    }
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'ENOENT' ? new StorageError('not_found', `${h.kind} ${h.name} not found`) : e;
    }
    p = { fd, size: fstatSync(fd).size };
    this.open.set(file, p);
    if (this.open.size > OPEN_HANDLES) {
      const [oldest, old] = this.open.entries().next().value!;
      this.open.delete(oldest);
      closeSync(old.fd);
    }
    return p;
  }

  close(): void {
    for (const { fd } of this.open.values()) closeSync(fd);
    this.open.clear();
  }
}
