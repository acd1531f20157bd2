/**
 * Cursors kept between the pages a session asks for: a dataset's items or a
 * query's rows, paused where the last page ended, so the next page goes on
 * from there instead of reading (or sorting) everything before it again.
 * Nothing but the cursor is kept: no rows. Bounded: a few per session, each
 * closed once idle for a while or when a newer one of its session pushes it
 * out. A page before the cursor's place starts a new one.
 */

/** A source of rows read a page at a time, and what it holds open (a connection, a listing's reader). */
export class RowCursor<T> {
  /** The index of the next row a page takes. */
  private at = 0;
  /** The row at `at`, read to tell whether another follows the last page. */
  private ahead?: { value: T };
  private ended = false;

  constructor(private readonly rows: AsyncGenerator<T>) {}

  /** Where the next page may start without starting again. */
  get position(): number {
    return this.at;
  }

  /**
   * Rows [offset, offset + limit) (offset at or after `position`: the rows
   * between are read and dropped), and whether another follows. `total`
   * is the number of rows once the source has ended, else undefined.
   */
  async page(offset: number, limit: number): Promise<{ rows: T[]; more: boolean; total?: number }> {
    if (offset < this.at) throw new Error(`a cursor at row ${this.at} cannot go back to ${offset}`);
    while (this.at < offset && (await this.take())) {
      // Skipped.
    }
    const rows: T[] = [];
    while (rows.length < limit) {
      const r = await this.take();
      if (!r) break;
      rows.push(r.value);
    }
    const more = await this.peek();
    return { rows, more, ...(more ? {} : { total: this.at }) };
  }

  close(): Promise<void> {
    return this.rows.return(undefined).then(() => undefined);
  }

  private async take(): Promise<{ value: T } | undefined> {
    if (!(await this.peek())) return undefined;
    const r = this.ahead!;
    this.ahead = undefined;
    this.at++;
    return r;
  }

  private async peek(): Promise<boolean> {
    if (this.ahead) return true;
    if (this.ended) return false;
    const n = await this.rows.next();
    if (n.done) {
      this.ended = true;
      return false;
    }
    this.ahead = { value: n.value };
    return true;
  }
}

export interface CursorLimits {
  /** Cursors one session keeps; the least recently used goes first. */
  perSession: number;
  /** A cursor unused this long is closed. */
  idleMs: number;
}

/** What a session's cursors may hold open: a few, for a minute each. */
export const CURSOR_LIMITS: CursorLimits = { perSession: 4, idleMs: 60_000 };

interface Kept<C> {
  cursor: C;
  timer: NodeJS.Timeout;
}

/** Cursors by session and by what they read (a key the caller makes of the snapshot, the path, the query...). */
export class Cursors<C extends { close(): Promise<void> }> {
  private readonly sessions = new Map<string, Map<string, Kept<C>>>();

  constructor(private readonly limits: CursorLimits = CURSOR_LIMITS) {}

  /** The cursor kept for `key`, taken out for the caller's use (give it back with keep), or undefined. */
  take(session: string, key: string): C | undefined {
    const mine = this.sessions.get(session);
    const k = mine?.get(key);
    if (!k) return undefined;
    clearTimeout(k.timer);
    mine!.delete(key);
    return k.cursor;
  }

  /** Keeps a cursor for the session's next page; one kept before under the same key, or the session's oldest past its bound, is closed. */
  keep(session: string, key: string, cursor: C): void {
    const old = this.sessions.get(session)?.get(key);
    if (old) this.drop(session, key, old);
    let mine = this.sessions.get(session);
    if (!mine) this.sessions.set(session, (mine = new Map()));
    const timer = setTimeout(() => this.drop(session, key, kept), this.limits.idleMs);
    timer.unref();
    const kept: Kept<C> = { cursor, timer };
    mine.set(key, kept);
    while (mine.size > this.limits.perSession) {
      const [oldest, o] = mine.entries().next().value as [string, Kept<C>];
      this.drop(session, oldest, o);
    }
  }

  /** How many cursors are open (kept, not taken out). */
  get size(): number {
    let n = 0;
    for (const m of this.sessions.values()) n += m.size;
    return n;
  }

  /** Closes every kept cursor (the server is stopping). */
  closeAll(): void {
    for (const [session, mine] of this.sessions) for (const [key, k] of mine) this.drop(session, key, k);
  }

  private drop(session: string, key: string, k: Kept<C>): void {
    clearTimeout(k.timer);
    const mine = this.sessions.get(session);
    if (mine?.get(key) === k) mine.delete(key);
    if (mine?.size === 0) this.sessions.delete(session);
    void k.cursor.close().catch(() => undefined);
  }
}
