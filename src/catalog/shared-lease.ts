/**
 * Leases kept in the store, for a repository whose clients each keep a
 * catalog of their own (one in a bucket): a lease in one client's catalog
 * is invisible to the others, so backups, forget and prune coordinate
 * through objects in the store instead, written conditionally
 * (ConditionalObjects).
 *
 * - The maintenance lease is one object, "maintenance": created only if
 *   absent, so one client at a time holds it; an expired one is taken over
 *   by replacing exactly the version that expired.
 * - Each backup writes a lease of its own, "backup-ID".
 * - Each side writes its lease first and then looks for the other: a
 *   maintenance finding a live backup, or a backup finding a live
 *   maintenance, withdraws. With a store that reads its own writes (S3 and
 *   Ceph RGW do), the two can never both go on.
 * - A lease is renewed every few seconds with a new expiry, conditionally on
 *   the version last written; one not renewed for LEASE_MS is expired and
 *   ignored, so a client that died blocks nobody for long and needs no
 *   unlock. Clients' clocks are taken to agree within a few seconds.
 */
import { randomBytes } from 'node:crypto';
import { locked } from '../errors.js';
import type { ConditionalObjects, Storage } from '../storage/storage.js';
import type { Catalog } from './catalog.js';
import { HOST_ID, LEASE_MS, type LeaseKind } from './lease.js';

export interface SharedLeaseRecord {
  kind: LeaseKind;
  id: string;
  host: string;
  pid: number;
  started: number;
  expires: number;
}

const MAINTENANCE = 'maintenance';
const RENEW_MS = 5_000;
const POLL_MS = 1_000;

const encode = (r: SharedLeaseRecord) => Buffer.from(JSON.stringify(r));

function decode(body: Buffer): SharedLeaseRecord | undefined {
  try {
    const r = JSON.parse(body.toString('utf8')) as SharedLeaseRecord;
    return typeof r.expires === 'number' && (r.kind === 'backup' || r.kind === 'maintenance') ? r : undefined;
  } catch {
    return undefined;
  }
}

function describe(r: SharedLeaseRecord): string {
  return `a ${r.kind} (pid ${r.pid}${r.host === HOST_ID ? ' on this host' : ' on another host'}) started ${new Date(r.started).toISOString()}`;
}

/** One lease held in the store, renewed until released. */
export class SharedLease {
  /** Set when a renewal found the lease replaced or gone: someone took it as expired. */
  lost = false;
  private timer?: NodeJS.Timeout;
  private renewing?: Promise<void>;

  constructor(
    private readonly objects: ConditionalObjects,
    readonly name: string,
    private record: SharedLeaseRecord,
    private etag: string,
    renewMs = RENEW_MS,
  ) {
    this.timer = setInterval(() => void this.renew(), renewMs);
    this.timer.unref();
  }

  get kind(): LeaseKind {
    return this.record.kind;
  }

  /** Writes a new expiry; a failure that may pass is tried at the next period, the lease lasting several. */
  renew(): Promise<void> {
    if (this.lost || !this.timer) return Promise.resolve();
    this.renewing ??= (async () => {
      const next = { ...this.record, expires: Date.now() + LEASE_MS };
      try {
        const etag = await this.objects.replace(this.name, encode(next), this.etag);
        if (etag === undefined) this.lost = true;
        else [this.etag, this.record] = [etag, next];
      } catch {
        // The store is unreachable now; the lease outlives a few missed renewals.
      }
    })().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.renewing;
    if (this.lost) return;
    try {
      // Only our own: a lease taken over as expired belongs to its new holder.
      const now = await this.objects.read(this.name);
      if (now && decode(now.body)?.id === this.record.id) await this.objects.remove(this.name);
    } catch {
      // Left behind, it expires on its own.
    }
  }
}

export class SharedLeases {
  constructor(
    private readonly objects: ConditionalObjects,
    private readonly renewMs = RENEW_MS,
  ) {}

  private record(kind: LeaseKind): SharedLeaseRecord {
    const now = Date.now();
    return { kind, id: randomBytes(16).toString('hex'), host: HOST_ID, pid: process.pid, started: now, expires: now + LEASE_MS };
  }

  /** Every lease in the store with its etag, expired ones included. */
  async all(): Promise<{ name: string; etag: string; record: SharedLeaseRecord }[]> {
    const out: { name: string; etag: string; record: SharedLeaseRecord }[] = [];
    for await (const name of this.objects.names()) {
      const got = await this.objects.read(name);
      const record = got && decode(got.body);
      if (record) out.push({ name, etag: got.etag, record });
    }
    return out;
  }

  /** A backup's lease; refused (locked, exit 11) while another client's forget or prune holds the maintenance lease. */
  async acquireBackup(): Promise<SharedLease> {
    const record = this.record('backup');
    const name = `backup-${record.id}`;
    const etag = await this.objects.create(name, encode(record));
    if (etag === undefined) throw locked(`lease ${name} exists already`);
    const lease = new SharedLease(this.objects, name, record, etag, this.renewMs);
    try {
      const m = await this.objects.read(MAINTENANCE);
      const held = m && decode(m.body);
      if (held && held.expires > Date.now()) throw locked(`repository is locked: ${describe(held)} is running; run the backup when it has finished`);
    } catch (e) {
      await lease.release();
      throw e;
    }
    return lease;
  }

  /**
   * The maintenance lease, once no other client holds it and no backup is
   * running anywhere; waits up to `waitMs` for that, saying what it waits
   * for, then gives up (locked, exit 11). Expired leases of clients that
   * died are removed on the way.
   */
  async acquireMaintenance(waitMs = 0, onWait?: (message: string) => void): Promise<SharedLease> {
    const deadline = Date.now() + waitMs;
    let told = false;
    for (;;) {
      const record = this.record('maintenance');
      let etag = await this.objects.create(MAINTENANCE, encode(record));
      let blocker: SharedLeaseRecord | undefined;
      if (etag === undefined) {
        const there = await this.objects.read(MAINTENANCE);
        const held = there && decode(there.body);
        if (there && (!held || held.expires <= Date.now())) etag = await this.objects.replace(MAINTENANCE, encode(record), there.etag);
        else blocker = held;
      }
      if (etag !== undefined) {
        const lease = new SharedLease(this.objects, MAINTENANCE, record, etag, this.renewMs);
        const now = Date.now();
        const leases = await this.all().catch(async (e: unknown) => {
          await lease.release();
          throw e;
        });
        for (const l of leases) if (l.record.kind === 'backup' && l.record.expires <= now) await this.objects.remove(l.name).catch(() => {});
        blocker = leases.find((l) => l.record.kind === 'backup' && l.record.expires > now)?.record;
        if (!blocker) return lease;
        await lease.release();
      }
      if (Date.now() >= deadline) {
        throw locked(`repository is locked: ${blocker ? describe(blocker) : 'another client'} is running; use --lock-wait to wait for it`);
      }
      if (!told && blocker) onWait?.(`waiting for ${describe(blocker)} to finish`);
      told = true;
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(0, deadline - Date.now()))));
    }
  }
}

/**
 * The packs in the store that the catalog does not know, and those it knows
 * that the store no longer holds (one listing, or `listed` if it was made
 * already): how a catalog kept as a cache tells it is behind its store.
 */
export async function packDrift(catalog: Catalog, storage: Storage, listed?: Promise<string[]>): Promise<{ added: string[]; removed: string[] }> {
  // The catalog first, then the store: a pack another process here adds meanwhile is then new, never gone.
  let known = listed ? undefined : new Set(catalog.packNames());
  const names = await (listed ?? listPacks(storage));
  known ??= new Set(catalog.packNames());
  const added: string[] = [];
  for (const name of names) if (!known.delete(name)) added.push(name);
  if (!listed) return { added, removed: [...known] };
  // Listed before the catalog was read, the store may lack a pack added since: gone only if it is not there now.
  const there = await Promise.all([...known].map((name) => storage.exists({ kind: 'pack', name })));
  return { added, removed: [...known].filter((_, i) => !there[i]) };
}

/** The names of the packs a store holds (one listing). */
export async function listPacks(storage: Storage): Promise<string[]> {
  const names: string[] = [];
  for await (const name of storage.list('pack')) names.push(name);
  return names;
}

/**
 * Refuses to go on under a lease just taken when the catalog is behind the
 * store: another client's prune removed packs since this command read the
 * store (a backup would reuse blocks that are gone), or, for maintenance,
 * another client's backup added packs (a prune would take them for
 * leftovers). Locked (exit 11): the command, run again, starts from the
 * store as it is.
 */
export async function checkNotBehind(catalog: Catalog, storage: Storage, kind: LeaseKind): Promise<void> {
  const { added, removed } = await packDrift(catalog, storage);
  if (removed.length > 0) throw locked(`another client pruned the repository since this command read it (${removed.length} packs gone); run the command again`);
  if (kind === 'maintenance' && added.length > 0) throw locked(`another client backed up since this command read the repository (${added.length} new packs); run the command again`);
}
