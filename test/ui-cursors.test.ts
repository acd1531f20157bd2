/**
 * The cursors strata ui keeps between a session's pages (src/ui/cursors.ts):
 * a page goes on where the last one ended, the rows skipped are read and
 * dropped, and the store keeps few per session, closing those pushed out or
 * left idle. Real generators, whose `finally` says they were closed.
 */
import { describe, expect, it } from 'vitest';
import { Cursors, RowCursor } from '../src/ui/cursors.js';

/** Rows 0..n-1, with what was read and whether the source was closed. */
function source(n: number) {
  const state = { read: 0, closed: false };
  const rows = (async function* () {
    try {
      for (let i = 0; i < n; i++) {
        state.read++;
        yield i;
      }
    } finally {
      state.closed = true;
    }
  })();
  return { state, cursor: new RowCursor(rows), close: () => rows.return(undefined).then(() => undefined) };
}

describe('cursors of strata ui', () => {
  it('pages go on from where the last ended; the count is told at the end', async () => {
    const { state, cursor } = source(25);
    expect(await cursor.page(0, 10)).toEqual({ rows: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], more: true });
    // One row read ahead to tell whether more follow.
    expect(state.read).toBe(11);
    expect(cursor.position).toBe(10);
    expect(await cursor.page(15, 5)).toEqual({ rows: [15, 16, 17, 18, 19], more: true });
    expect(await cursor.page(20, 10)).toEqual({ rows: [20, 21, 22, 23, 24], more: false, total: 25 });
    expect(state.read).toBe(25);
    await expect(cursor.page(0, 10)).rejects.toThrow(/cannot go back/);
  });

  it('keeps a few per session, closes those pushed out, and those left idle', async () => {
    const store = new Cursors<ReturnType<typeof source>>({ perSession: 2, idleMs: 150 });
    const [a, b, c, d] = [source(5), source(5), source(5), source(5)];
    for (const s of [a, b, c, d]) await s.cursor.page(0, 1);
    store.keep('s1', 'a', a);
    store.keep('s1', 'b', b);
    store.keep('s2', 'a', d);
    store.keep('s1', 'c', c);
    await new Promise((r) => setTimeout(r, 10));
    // The session's oldest went; another session's cursor of the same key is its own.
    expect(a.state.closed).toBe(true);
    expect(store.take('s1', 'a')).toBeUndefined();
    expect(store.take('s2', 'a')).toBe(d);
    expect(store.size).toBe(2);
    // Taken out, a cursor is the caller's until kept again: idle time does not close it.
    const taken = store.take('s1', 'b')!;
    await new Promise((r) => setTimeout(r, 250));
    expect(taken.state.closed).toBe(false);
    expect(c.state.closed).toBe(true);
    expect(store.size).toBe(0);
    // Kept again under a key that holds one: the old one is closed.
    store.keep('s1', 'b', taken);
    store.keep('s1', 'b', d);
    await new Promise((r) => setTimeout(r, 10));
    expect(taken.state.closed).toBe(true);
    store.closeAll();
    await new Promise((r) => setTimeout(r, 10));
    expect(d.state.closed).toBe(true);
    expect(store.size).toBe(0);
  });
});
