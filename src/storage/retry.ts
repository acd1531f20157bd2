/**
 * Retries as a wrapper around any Storage: a store reached over a network
 * (S3, say) fails now and then for reasons that pass. Only transient
 * failures are tried again; an answer (not found, a short object, a
 * conflicting write) is final. Every operation may be repeated safely: puts
 * write once (the same bytes again are fine) and deletes of what is gone are
 * not errors. The S3 driver is used through it; the HTTP driver retries its
 * own requests, its catalog calls included, and needs no wrapper.
 */
import { StorageError, WrappedStorage, type Handle, type Kind, type Storage } from './storage.js';

export interface RetryPolicy {
  /** Tries in all, the first included. */
  attempts: number;
  /** Wait before the second try; doubled for each one after, each wait jittered. */
  delayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, delayMs: 250 };

/**
 * The wait before try `attempt + 1`: delayMs doubled per try made, then
 * spread over ±50% so that clients which failed together (a store that was
 * overloaded, 503 SlowDown) do not come back together.
 */
export function backoff(policy: RetryPolicy, attempt: number, random = Math.random()): number {
  return policy.delayMs * 2 ** (attempt - 1) * (0.5 + random);
}

/** Failures worth another try: an I/O error, a dropped or refused connection, a timeout. */
export function transient(e: unknown): boolean {
  if (e instanceof StorageError) return e.code === 'io';
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNRESET' || code === 'ECONNREFUSED' || code === 'ETIMEDOUT' || code === 'EPIPE' || code === 'EAI_AGAIN' || code === 'EBUSY' || code === 'EAGAIN';
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * `op` tried again on transient failures, up to the policy's attempts, with
 * backoff: for a driver's own steps that the wrapper cannot repeat alone
 * (one part of a multipart upload, whose source is read once).
 */
export async function retrying<T>(policy: RetryPolicy, op: () => Promise<T>, onRetry: () => void = () => {}): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (e) {
      if (attempt >= policy.attempts || !transient(e)) throw e;
      onRetry();
      await sleep(backoff(policy, attempt));
    }
  }
}

/** A store whose calls are tried again on transient failures (see transient). */
export class RetryingStorage extends WrappedStorage implements Storage {
  /** Tries made again, over the wrapper's life (for tests and progress). */
  retried = 0;

  constructor(
    inner: Storage,
    private readonly policy: RetryPolicy = DEFAULT_RETRY,
  ) {
    super(inner);
  }

  private again<T>(op: () => Promise<T>): Promise<T> {
    return retrying(this.policy, op, () => this.retried++);
  }

  put(h: Handle, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.again(() => this.inner.put(h, data));
  }

  /** Not tried again: the source is read as it is sent, and cannot be read twice. */
  putStream(h: Handle, source: AsyncIterable<Uint8Array>, size: number): Promise<'created' | 'identical' | 'conflict'> {
    return this.inner.putStream(h, source, size);
  }

  get(h: Handle): Promise<Buffer> {
    return this.again(() => this.inner.get(h));
  }

  /** Tried again from where it stopped: a stream that fails part way goes on with the rest of the range. */
  async *stream(h: Handle, start: number, end: number): AsyncIterable<Buffer> {
    let at = start;
    for (let attempt = 1; at <= end; attempt++) {
      try {
        for await (const chunk of this.inner.stream(h, at, end)) {
          at += chunk.length;
          yield chunk;
        }
        return;
      } catch (e) {
        if (attempt >= this.policy.attempts || !transient(e)) throw e;
        this.retried++;
        await sleep(backoff(this.policy, attempt));
      }
    }
  }

  read(h: Handle, offset: number, length: number): Promise<Buffer> {
    return this.again(() => this.inner.read(h, offset, length));
  }

  stat(h: Handle): Promise<{ size: number; mtimeMs: number }> {
    return this.again(() => this.inner.stat(h));
  }

  exists(h: Handle): Promise<boolean> {
    return this.again(() => this.inner.exists(h));
  }

  /** A listing is tried again from the start while it has yielded nothing; past that, a failure ends it. */
  async *list(kind: Kind): AsyncIterable<string> {
    const first = await this.again(async () => {
      const it = this.inner.list(kind)[Symbol.asyncIterator]();
      return { it, step: await it.next() };
    });
    for (let step = first.step; !step.done; step = await first.it.next()) yield step.value;
  }

  delete(h: Handle): Promise<void> {
    return this.again(() => this.inner.delete(h));
  }

  sweepTemporary(olderThanMs: number): Promise<number> {
    return this.again(() => this.inner.sweepTemporary(olderThanMs));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
