/**
 * The FUSE binding: fuse-napi (libfuse 3 over N-API), an optional
 * dependency. npm installs it in node_modules; where npm leaves it out (it
 * declares a newer Node than 20), the postinstall script builds the same
 * locked version in node_modules/.fuse-napi (scripts/fuse-napi.mjs). Loaded
 * only by `strata mount`, and only the parts of its API strata uses are typed
 * here, so that strata builds where it is absent.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { StrataError } from '../errors.js';

export type Callback<T = unknown> = (code: number, value?: T) => void;

export interface FuseStats {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino?: number;
  blksize?: number;
  blocks?: number;
  /** A device node's number. */
  rdev?: number | bigint;
  atime: { seconds: number; nanoseconds: number };
  mtime: { seconds: number; nanoseconds: number };
  ctime: { seconds: number; nanoseconds: number };
}

/** What a listing needs of an entry's stat: its type bits (the binding fills the rest with zeros). */
export type DirentStats = Pick<FuseStats, 'mode'> & Partial<FuseStats>;

export interface FuseOpenResult {
  fd: number;
  keepCache?: boolean;
}

export interface FuseInitConfig {
  maxReadahead?: number;
  maxBackground?: number;
  congestionThreshold?: number;
  asyncRead?: boolean;
}

export interface FuseConnection {
  maxReadahead: number;
  maxRead: number;
  maxBackground: number;
  congestionThreshold: number;
}

/** The callbacks strata implements; all others answer ENOSYS. */
export interface FuseOperations {
  initWithConfig?(connection: FuseConnection, cb: (code: number, config?: FuseInitConfig) => void): void;
  getattr?(p: string, cb: Callback<FuseStats>): void;
  readdir?(p: string, cb: (code: number, names?: string[], stats?: DirentStats[]) => void): void;
  open?(p: string, flags: number, cb: Callback<FuseOpenResult>): void;
  opendir?(p: string, flags: number, cb: Callback<FuseOpenResult>): void;
  read?(p: string, fd: number, buffer: Buffer, length: number, position: number, cb: (bytes: number) => void): void;
  /** A read answered with a buffer of ours (at most `length` bytes), which the binding copies before the event loop's next turn. */
  readBuffer?(p: string, fd: number, length: number, position: number, cb: (code: number, data?: Buffer) => void): void;
  release?(p: string, fd: number, cb: (code: number) => void): void;
  releasedir?(p: string, fd: number, cb: (code: number) => void): void;
  readlink?(p: string, cb: Callback<string>): void;
  statfs?(p: string, cb: Callback<Record<string, number>>): void;
  access?(p: string, mode: number, cb: (code: number) => void): void;
  listxattr?(p: string, cb: Callback<string[]>): void;
  getxattr?(p: string, name: string, position: number, cb: Callback<Buffer | null>): void;
  [write: string]: unknown;
}

export interface FuseOptions {
  fsname?: string;
  subtype?: string;
  autoUnmount?: boolean;
  maxRead?: number;
  entryTimeout?: number;
  attrTimeout?: number;
  kernelCache?: boolean;
  maxConcurrency?: number;
  timeout?: number | false | Record<string, number | false>;
  defaultPermissions?: boolean;
  allowOther?: boolean;
  onError?: (error: unknown, operation: string, args: readonly unknown[]) => void;
}

export interface FuseInstance {
  mount(cb: (err?: Error | null) => void): void;
  unmount(cb: (err?: Error | null) => void): void;
  /** Asks the kernel to drop a name it keeps (FUSE_NOTIFY_INVAL_ENTRY); never from inside an operation. */
  invalidateEntry(path: string, cb: (err?: Error | null) => void): void;
}

export interface FuseModule {
  new (mnt: string, ops: FuseOperations, opts?: FuseOptions): FuseInstance;
  [errno: string]: unknown;
}

/** Where strata's own files are: the directory holding node_modules (above dist/ or src/). */
function installRoots(): string[] {
  const out: string[] = [];
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'node_modules'))) out.push(dir);
    if (path.dirname(dir) === dir) return out;
  }
}

/** How to get FUSE, said once for every way it can be missing. */
export const HOW_TO_GET_FUSE =
  'install FUSE 3 and its headers (Debian/Ubuntu: apt-get install fuse3 libfuse3-dev pkg-config), then run "npm ci" in strata\'s directory to build the binding';

let loaded: FuseModule | undefined;

/** fuse-napi, or a StrataError (code no_fuse) that says how to get it. */
export function loadFuse(): FuseModule {
  if (loaded) return loaded;
  let failure: Error | undefined;
  const places = [fileURLToPath(import.meta.url), ...installRoots().map((r) => path.join(r, 'node_modules', '.fuse-napi', 'package.json'))];
  for (const from of places) {
    try {
      loaded = createRequire(from)('fuse-napi') as FuseModule;
      return loaded;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      // Not there: look in the next place. There but failing to load (no libfuse3.so): say why.
      if (err.code === 'MODULE_NOT_FOUND' && /'fuse-napi'/.test(err.message)) continue;
      failure = err;
    }
  }
  if (failure) throw new StrataError('no_fuse', `strata mount needs FUSE, and its binding did not load (${failure.message.split('\n')[0]}): ${HOW_TO_GET_FUSE}`);
  throw new StrataError('no_fuse', `strata mount needs FUSE, which is not installed with this strata: ${HOW_TO_GET_FUSE}`);
}

/** A negated errno fuse-napi answers with (Fuse.ENOENT and so on). */
export function errno(fuse: FuseModule, name: string): number {
  const v = fuse[name];
  return typeof v === 'number' ? v : -5;
}
