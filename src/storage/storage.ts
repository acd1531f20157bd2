/**
 * Storage: moves bytes by handle and knows nothing else. A handle is a kind
 * (pack, key, config, dict) and a name. Implementations (a local directory now;
 * HTTP and S3-compatible stores later) must honour this contract:
 *
 * - `put` is atomic: a reader sees the whole object or none of it.
 * - `put` writes once: the same bytes again under a name are fine (a retried
 *   upload), other bytes are refused with code "conflict" and the first stay.
 *   Names are content hashes or random, so nothing is ever replaced.
 * - `read` returns exactly `length` bytes from `offset`, or throws a
 *   StorageError with code "short_read" (never a shorter buffer).
 * - `get` of a missing object throws a StorageError with code "not_found".
 * - `list` yields the names of one kind, in no particular order.
 */
import { StrataError } from '../errors.js';

export type Kind = 'config' | 'key' | 'pack' | 'dict';

export interface Handle {
  kind: Kind;
  name: string;
  /**
   * The object's size as the caller believes it (a pack's, from the
   * catalog): lets a store skip asking. A hint only: what the store answers
   * overrules it, and a wrong one costs a request, never a wrong byte.
   */
  size?: number;
}

export interface Storage {
  /** A description for messages (a path or a URL). */
  readonly location: string;
  /** Stores an object made of `data` (one buffer, or parts written in order). */
  put(h: Handle, data: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /**
   * put() streamed from `source` (`size` bytes), for what arrives in pieces
   * (a server's uploads): "created", "identical" when the same bytes were
   * there (a retried upload), or "conflict" when other bytes are. If `source`
   * fails or falls short, nothing is left behind.
   */
  putStream(h: Handle, source: AsyncIterable<Uint8Array>, size: number): Promise<'created' | 'identical' | 'conflict'>;
  get(h: Handle): Promise<Buffer>;
  /** Bytes start…end (inclusive) as a stream, for answers too large to hold (a server sending a pack). */
  stream(h: Handle, start: number, end: number): AsyncIterable<Buffer>;
  read(h: Handle, offset: number, length: number): Promise<Buffer>;
  /** Size and last modification time (ms since the epoch). */
  stat(h: Handle): Promise<{ size: number; mtimeMs: number }>;
  exists(h: Handle): Promise<boolean>;
  list(kind: Kind): AsyncIterable<string>;
  delete(h: Handle): Promise<void>;
  /**
   * How another thread of this process reads this store itself, for a store
   * whose objects are files here (a directory): a restore's worker threads
   * then read runs of blocks without a round trip to this one. Absent for
   * stores reached over a network.
   */
  threadReader?(): ThreadReaderSpec;
  /** Removes partial objects that interrupted puts left, older than `olderThanMs`; returns their bytes. */
  sweepTemporary(olderThanMs: number): Promise<number>;
  /** Releases what the store holds open (file handles, connections). */
  close(): Promise<void>;
}

/** What a thread needs to open its own reader of a store (it crosses threads as it is). */
export interface ThreadReaderSpec {
  driver: 'directory';
  root: string;
}

/** Synchronous ranged reads of a store's objects, in a thread of its own (storage/thread-reader.ts opens one). */
export interface ThreadReader {
  /** Exactly `length` bytes at `offset` of the object (a view valid until the next read), or a `short_read` error. */
  read(h: Handle, offset: number, length: number): Buffer;
  close(): void;
}

/** A store around another (retries, merged reads): where it is and the traffic it makes are the inner one's. */
export abstract class WrappedStorage {
  constructor(protected readonly inner: Storage) {}

  get location(): string {
    return this.inner.location;
  }

  /** The traffic the store beneath counts, if it does (a network store's). */
  get bytesSent(): number {
    return (this.inner as Partial<{ bytesSent: number }>).bytesSent ?? 0;
  }

  get bytesReceived(): number {
    return (this.inner as Partial<{ bytesReceived: number }>).bytesReceived ?? 0;
  }
}

export class StorageError extends StrataError {
  constructor(code: 'not_found' | 'short_read' | 'io' | 'conflict', message: string) {
    super(code, message);
  }
}

/**
 * Small objects that may be replaced, but only conditionally: what a store
 * shared by several machines offers for leases (an S3 bucket does). Not
 * part of Storage, whose objects are written once. `etag` names one
 * version of an object; a write against another version fails (undefined).
 */
export interface ConditionalObjects {
  /** Creates `name` unless it exists; its etag, or undefined when the name is taken. */
  create(name: string, body: Buffer): Promise<string | undefined>;
  /** Replaces `name` if it is still the version `etag`; the new etag, or undefined when it changed or is gone. */
  replace(name: string, body: Buffer, etag: string): Promise<string | undefined>;
  /** The object and its etag, or undefined. */
  read(name: string): Promise<{ body: Buffer; etag: string } | undefined>;
  /**
   * The names, in byte order, page by page as they are consumed (a reader
   * that stops early asks for no more pages): all, or those starting with
   * `prefix`; `firstPage` bounds the first answer (a reader that expects to
   * stop at once asks for little).
   */
  names(opts?: { prefix?: string; firstPage?: number }): AsyncIterable<string>;
  remove(name: string): Promise<void>;
}
