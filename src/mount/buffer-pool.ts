/**
 * Buffers of one size, lent and given back: the chunks a mount fetches ahead
 * and the replies it joins from two of them. Made anew, every megabyte of a
 * long sequential read was a buffer outside V8's heap that only a garbage
 * collection frees, and V8 lets tens of megabytes of those pile up before it
 * collects: the process's RSS grew with them. Lent from here, the same few
 * buffers serve the whole read.
 */
export class BufferPool {
  private readonly idle: Buffer[] = [];
  private readonly lent = new Set<Buffer>();
  /** Buffers made so far (the rest of what was lent came back and was lent again). */
  made = 0;

  constructor(
    readonly size: number,
    /** At most this many are kept when given back; more are left to the garbage collector. */
    private readonly keep: number,
  ) {}

  /** A buffer of `size` bytes (their content is whatever the last borrower left), the caller's until given back. */
  take(): Buffer {
    let b = this.idle.pop();
    if (!b) {
      b = Buffer.allocUnsafeSlow(this.size);
      this.made++;
    }
    this.lent.add(b);
    return b;
  }

  /** Gives back a buffer take() lent; giving one back twice, or one it never lent, is a bug and throws. */
  give(b: Buffer): void {
    if (!this.lent.delete(b)) throw new Error('a buffer given back to a pool that did not lend it, or given back twice');
    if (this.idle.length < this.keep) this.idle.push(b);
  }

  /** Buffers lent and not yet given back. */
  get inUse(): number {
    return this.lent.size;
  }

  /** Buffers kept to be lent again. */
  get kept(): number {
    return this.idle.length;
  }
}
