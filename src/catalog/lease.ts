/**
 * Leases: who is working on the repository right now. Backups hold shared
 * leases (any number run at once); forget and prune hold the one maintenance
 * lease; a writable mount holds a mount lease naming the snapshot it is based
 * on, which forget then keeps (prune is not held back by it). A lease is renewed every few seconds; one whose holder stopped
 * renewing (or whose process is gone, on this host) is stale and ignored, so
 * a crashed process blocks nobody for longer than LEASE_MS and no manual
 * unlock is needed.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as os from 'node:os';
import { locked } from '../errors.js';
import type { Catalog } from './catalog.js';
import { processAlive } from '../util/process.js';

export type LeaseKind = 'backup' | 'maintenance' | 'mount';

export const LEASE_MS = 30_000;
const RENEW_MS = 5_000;

export interface LeaseRow {
  id: string;
  kind: LeaseKind;
  host: string;
  pid: number;
  started: number;
  heartbeat: number;
  parent: number | null;
}

/** This host, as the catalog sees it (hashed: the catalog holds no plaintext names). */
export const HOST_ID = createHash('sha256').update(`strata host ${os.hostname()}`).digest('hex').slice(0, 16);


export function isStale(l: LeaseRow, now = Date.now()): boolean {
  return l.heartbeat < now - LEASE_MS || (l.host === HOST_ID && !processAlive(l.pid));
}

/** Leases whose holders are still working. Stale ones are removed on the way. */
export function liveLeases(catalog: Catalog): LeaseRow[] {
  const rows = catalog.db.prepare('SELECT * FROM leases').all() as LeaseRow[];
  const stale = rows.filter((l) => isStale(l));
  if (stale.length > 0) {
    const del = catalog.db.prepare('DELETE FROM leases WHERE id = ? AND heartbeat = ?');
    catalog.guard(() => stale.forEach((l) => del.run(l.id, l.heartbeat)));
  }
  return rows.filter((l) => !stale.includes(l));
}

/**
 * unlock: removes the leases of processes that are gone, or every lease
 * with `all`; returns those removed and those still held.
 */
export function removeLeases(catalog: Catalog, all: boolean): { removed: LeaseRow[]; held: LeaseRow[] } {
  const rows = catalog.db.prepare('SELECT * FROM leases').all() as LeaseRow[];
  const removed = rows.filter((l) => all || isStale(l));
  const del = catalog.db.prepare('DELETE FROM leases WHERE id = ?');
  catalog.transaction(() => removed.forEach((l) => del.run(l.id)));
  return { removed, held: rows.filter((l) => !removed.includes(l)) };
}

export class Lease {
  private timer?: NodeJS.Timeout;

  private constructor(
    private readonly catalog: Catalog,
    readonly id: string,
    readonly kind: LeaseKind,
    readonly started: number,
    autoRenew: boolean,
  ) {
    // A lease held for a remote client is renewed by its requests instead.
    if (!autoRenew) return;
    this.timer = setInterval(() => this.renew(), RENEW_MS);
    this.timer.unref();
  }

  /** Marks the lease alive now; false if it is gone (it went stale and was removed). */
  renew(): boolean {
    try {
      return this.catalog.db.prepare('UPDATE leases SET heartbeat = ? WHERE id = ?').run(Date.now(), this.id).changes > 0;
    } catch {
      // A busy catalog delays one renewal; the lease lasts several periods.
      return true;
    }
  }

  /**
   * Takes a lease. `within` runs in the same transaction (a backup picks its
   * parent there, so a concurrent forget sees the choice). A maintenance lease
   * waits up to `waitMs` for another one to end, saying what it waits for.
   */
  static async acquire<T>(
    catalog: Catalog,
    kind: LeaseKind,
    opts: { waitMs?: number; onWait?: (message: string) => void; within?: () => { parent?: number | null; value: T }; renew?: boolean } = {},
  ): Promise<{ lease: Lease; value: T | undefined }> {
    const deadline = Date.now() + (opts.waitMs ?? 0);
    let told = false;
    while (true) {
      const got = catalog.transaction(() => {
        const live = liveLeases(catalog);
        const blocker = kind === 'maintenance' ? live.find((l) => l.kind === 'maintenance') : undefined;
        if (blocker) return { blocker };
        const inner = opts.within?.();
        const now = Date.now();
        const id = randomBytes(16).toString('hex');
        catalog.db
          .prepare('INSERT INTO leases(id, kind, host, pid, started, heartbeat, parent) VALUES (?, ?, ?, ?, ?, ?, ?)')
          .run(id, kind, HOST_ID, process.pid, now, now, inner?.parent ?? null);
        return { lease: new Lease(catalog, id, kind, now, opts.renew ?? true), value: inner?.value };
      });
      if ('lease' in got) return { lease: got.lease!, value: got.value };
      const b = got.blocker!;
      if (Date.now() >= deadline) {
        throw locked(
          `repository is locked: a ${b.kind} (pid ${b.pid}${b.host === HOST_ID ? ' on this host' : ''}) started ${new Date(b.started).toISOString()} is running; use --lock-wait to wait for it`,
        );
      }
      if (!told) opts.onWait?.(`waiting for a ${b.kind} (pid ${b.pid}) started ${new Date(b.started).toISOString()} to finish`);
      told = true;
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  release(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    try {
      this.catalog.guard(() => this.catalog.db.prepare('DELETE FROM leases WHERE id = ?').run(this.id));
    } catch {
      // Left behind, it goes stale on its own.
    }
  }
}
