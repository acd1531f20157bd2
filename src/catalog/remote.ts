/**
 * The catalog service of a repository behind `strata serve`: every question
 * is a request (src/server/catalog-routes.ts answers it with the same engine
 * a local repository runs). Round trips are what cost here, so answers that
 * come in numbers are fetched together: a snapshot's versions at once when a
 * backup or restore asks for many, ids by the batch, pieces by the page.
 * Sealed blocks go through the local block cache when there is one.
 */
import { createHash } from 'node:crypto';
import { BlockList } from './blocklist.js';
import type { Piece } from './resolve.js';
import { integrity, StrataError } from '../errors.js';
import type { BlockCache } from '../storage/cache.js';
import { serverAnswer, type HttpStorage, type Reply } from '../storage/http.js';
import type { SnapshotRow, TocRow, VersionRow } from './catalog.js';
import type { PackEntry } from './packs.js';
import type { PackInfo, VersionProblem } from './check.js';
import type { PrunePlan } from './prune.js';
import type { RangeSpec } from '../util/range.js';
import { requestOf } from './protocol.js';
import { fetchDictionary, type BackupStart, type CatalogService, type ReadPlan, type ResealedToc, type SnapshotChoice, type StoredVersionRow, type VersionRecord, type VersionUpload } from './service.js';
import {
  BLOCKS_PER_READ,
  CLAIM_BYTES,
  MAX_LOCK_WAIT_MS,
  decodeBlockList,
  decodeIds,
  encodeIds,
  encodeVersions,
  packEntriesFromJson,
  packEntriesToJson,
  pieceFromJson,
  rowFromJson,
  snapshotFromJson,
} from './wire.js';

/** Ids per "which of these do you have?" request. */
const MISSING_BATCH = 32_768;
/** After this many single lookups in one snapshot, its whole version table is fetched instead. */
const TABLE_AFTER = 8;
/** Ids remembered as stored; past this the memory is let go (the server is asked again). */
const KNOWN_LIMIT = 2_000_000;
const RENEW_MS = 5_000;
const VERSION_ROW = 64;

/** Where the server says a block is. */
export interface Claim {
  pack: string;
  packSize: number;
  offset: number;
  length: number;
}

/** Checks claims against the packs' sealed indexes, which takes the key (repo/claims.ts). */
export interface ClaimVerifier {
  /** For each claim, whether its pack's sealed index vouches for it (undefined: no claim). */
  holds(ids: readonly Buffer[], claims: readonly (Claim | undefined)[]): Promise<boolean[]>;
}

export class RemoteService implements CatalogService {
  readonly remote = true;
  private known = new Set<string>();
  private readonly tables = new Map<number, Map<string, StoredVersionRow>>();
  private readonly asks = new Map<number, number>();
  private readonly renewals = new Map<string, NodeJS.Timeout>();

  /** Checks the server's claims that blocks are stored, when this client has the key (see missing). */
  private readonly claims?: ClaimVerifier;
  /** Blocks whose stored copy the server claimed but its pack does not vouch for: stored again as spares. */
  private readonly forged = new Set<string>();

  constructor(
    readonly http: HttpStorage,
    private readonly cache?: BlockCache,
    claims?: ClaimVerifier,
  ) {
    this.claims = claims;
  }

  private async json<T>(method: string, route: string, what: string, body?: unknown): Promise<T> {
    const r = await this.http.call(method, route, body === undefined ? {} : { json: body });
    if (r.status >= 200 && r.status < 300) return parse<T>(r, this.http.location);
    throw this.refusal(r, method, what);
  }

  private async binary(method: string, route: string, what: string, body?: Buffer): Promise<Buffer> {
    const r = await this.http.call(method, route, body ? { body: [body] } : {});
    if (r.status === 200) return r.body;
    if (r.status === 204) return Buffer.alloc(0);
    throw this.refusal(r, method, what);
  }

  private refusal(r: Reply, method: string, what: string): Error {
    // Token trouble and the server's own failures read the same as on the object routes.
    if (r.status === 401 || r.status === 403 || r.status >= 500) return this.http.refusal(r, method, what);
    const { code, message } = serverAnswer(r);
    // The same error as a local repository gives, exit code included.
    if (code) return new StrataError(code, `${this.http.location}: ${message}`);
    return new StrataError('remote', `${this.http.location}: ${method} ${what}: ${r.status} ${message}`);
  }

  async snapshots(): Promise<SnapshotRow[]> {
    const j = await this.json<{ snapshots: unknown[] }>(...requestOf('snapshots'), 'snapshots');
    return j.snapshots.map(snapshotFromJson);
  }

  async snapshotsByPrefix(prefix: string): Promise<SnapshotRow[]> {
    if (!/^[0-9a-f]{1,64}$/.test(prefix)) return [];
    const j = await this.json<{ snapshots: unknown[] }>(...requestOf('snapshots', {}, `prefix=${prefix}`), 'snapshots');
    return j.snapshots.map(snapshotFromJson);
  }

  async snapshotBySeq(seq: number): Promise<SnapshotRow | undefined> {
    try {
      return snapshotFromJson(await this.json(...requestOf('snapshot', { seq }), `snapshot ${seq}`));
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  /** One by one: after a few, the snapshot's whole version table comes in one request (see version). */
  async parentVersions(snapshot: number, paths: readonly Buffer[]): Promise<(VersionRow | undefined)[]> {
    const rows: (VersionRow | undefined)[] = [];
    for (const p of paths) rows.push(await this.version(snapshot, p));
    return rows;
  }

  async version(snapshot: number, path: Buffer): Promise<StoredVersionRow | undefined> {
    const table = this.tables.get(snapshot);
    if (table) return table.get(path.toString('hex'));
    const asked = (this.asks.get(snapshot) ?? 0) + 1;
    this.asks.set(snapshot, asked);
    if (asked > TABLE_AFTER) return (await this.versionTable(snapshot)).get(path.toString('hex'));
    try {
      return versionRow(await this.json(...requestOf('version', { seq: snapshot, path: path.toString('hex') }), 'version'), snapshot);
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  /** A snapshot's versions, fetched once: 64 bytes each (path, id, size, depth, end). */
  private async versionTable(snapshot: number): Promise<Map<string, StoredVersionRow>> {
    const buf = await this.binary(...requestOf('versions', { seq: snapshot }), 'versions');
    if (buf.length % VERSION_ROW !== 0) throw integrity(`${this.http.location} sent a malformed version table`);
    const table = new Map<string, StoredVersionRow>();
    for (let at = 0; at < buf.length; at += VERSION_ROW) {
      const num = (o: number) => buf.readDoubleLE(at + o);
      table.set(buf.toString('hex', at, at + 32), versionRow({ id: num(32), snapshot, size: num(40), depth: num(48), end: num(56) }, snapshot));
    }
    this.tables.set(snapshot, table);
    return table;
  }

  async versionById(id: number): Promise<VersionRow | undefined> {
    try {
      return versionRow(await this.json(...requestOf('versionById', { version: id }), `version ${id}`));
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  async *pieces(version: number, start: number, end: number): AsyncGenerator<Piece> {
    let from = start;
    while (from <= end) {
      const j = await this.json<{ pieces: unknown[]; next: unknown }>(...requestOf('pieces', { version }, `start=${from}&end=${end}`), `version ${version}`);
      let at = from;
      for (const raw of j.pieces) {
        const p = pieceFromJson(raw);
        if (p.at !== at) throw integrity(`${this.http.location} sent pieces out of order`);
        at += p.length;
        yield p;
      }
      if (j.next === null) {
        if (at !== end + 1) throw integrity(`${this.http.location} sent pieces that do not cover the range`);
        return;
      }
      if (j.next !== at || j.pieces.length === 0) throw integrity(`${this.http.location} sent a malformed page of pieces`);
      from = at;
    }
  }

  async blockList(version: number, size: number): Promise<BlockList> {
    const list = decodeBlockList(await this.binary(...requestOf('blockList', { version }), `blocks of version ${version}`));
    if (list.size !== size) throw integrity(`the blocks of version ${version} add up to ${list.size} bytes, not ${size}`);
    for (let i = 0; i < list.length; i++) {
      const id = list.id(i);
      if (id) this.remember(id);
    }
    return list;
  }

  blockLists(versions: readonly { id: number; size: number }[]): Promise<BlockList[]> {
    return Promise.all(versions.map((v) => (v.size > 0 ? this.blockList(v.id, v.size) : new BlockList(1))));
  }

  async planRead(path: Buffer, choice: SnapshotChoice, spec: RangeSpec | undefined): Promise<ReadPlan | undefined> {
    const q = new URLSearchParams('prefix' in choice ? { prefix: choice.prefix } : choice.until < Number.MAX_SAFE_INTEGER ? { until: String(choice.until) } : {});
    for (const k of ['start', 'end', 'suffix'] as const) if (spec?.[k] !== undefined) q.set(k, String(spec[k]));
    const r = await this.http.call(...requestOf('planRead', { path: path.toString('hex') }, q));
    // No plan (or a range the client words its own error for): the client looks itself.
    if (r.status === 404 || r.status === 416) return undefined;
    if (r.status !== 200) throw this.refusal(r, 'GET', 'read plan');
    const j = parse<{ snapshot: unknown; newer: unknown; version: unknown; start: unknown; end: unknown; pieces: unknown; next: unknown; toc?: unknown }>(r, this.http.location);
    const snapshot = snapshotFromJson(j.snapshot);
    const version = versionRow(j.version, snapshot.seq);
    const start = Number(j.start);
    const end = Number(j.end);
    if (!Array.isArray(j.newer) || !Array.isArray(j.pieces) || !Number.isSafeInteger(start) || !Number.isSafeInteger(end) || (j.next !== null && !Number.isSafeInteger(j.next))) {
      throw integrity(`${this.http.location} sent a malformed read plan`);
    }
    const pieces = j.pieces.map(pieceFromJson);
    let at = start;
    for (const p of pieces) {
      if (p.at !== at) throw integrity(`${this.http.location} sent pieces out of order`);
      at += p.length;
    }
    if ((j.next === null && end >= start && at !== end + 1) || (j.next !== null && j.next !== at)) throw integrity(`${this.http.location} sent pieces that do not cover the range`);
    // The version's record, from the plan: a reader checks the version against its sealed TOC without asking again.
    const toc = typeof j.toc === 'string' && /^[0-9a-f]{64}$/.test(j.toc) ? Buffer.from(j.toc, 'hex') : null;
    this.records.set(version.id, { snapshot: version.snapshot, path, size: version.size, toc });
    return { snapshot, newer: j.newer.map(snapshotFromJson), version, start, end, pieces, next: j.next as number | null, toc };
  }

  async toc(version: number): Promise<TocRow[]> {
    const j = await this.json<{ rows: unknown[] }>(...requestOf('toc', { version }), `TOC of version ${version}`);
    return j.rows.map(rowFromJson);
  }

  /** Whether fetched blocks go into the cache (see Repository.fillCache). */
  fillCache = true;

  /** Blocks asked for in this turn of the event loop: they go out together. */
  private waiting: { id: Buffer; resolve: (b: Buffer) => void; reject: (e: unknown) => void }[] = [];
  private sendScheduled = false;

  /**
   * A dictionary, kept in the block cache under an id made from its name
   * (objects are write-once): a process that reads a block needing it then
   * makes no extra round trip.
   */
  async sealedDictionary(name: string, fresh = false): Promise<Buffer> {
    const id = createHash('sha256').update(`strata dictionary ${name}`).digest();
    const hit = fresh ? undefined : this.cache?.get(id);
    if (hit) return hit;
    const sealed = await fetchDictionary(this.http, name);
    this.cache?.put(id, sealed);
    return sealed;
  }

  /** A fact kept in the block cache under an id made from its key (see CatalogService.fact). */
  fact(key: string): Buffer | undefined {
    return this.cache?.get(factId(key));
  }

  putFact(key: string, value: Buffer): void {
    this.cache?.put(factId(key), value);
  }

  async readSealed(id: Buffer): Promise<Buffer> {
    const hit = this.cache?.get(id);
    if (hit) return hit;
    const sealed = await new Promise<Buffer>((resolve, reject) => {
      this.waiting.push({ id, resolve, reject });
      if (this.waiting.length >= BLOCKS_PER_READ) this.sendWaiting();
      else if (!this.sendScheduled) {
        this.sendScheduled = true;
        setImmediate(() => {
          this.sendScheduled = false;
          this.sendWaiting();
        });
      }
    });
    if (this.fillCache) this.cache?.put(id, sealed);
    return sealed;
  }

  private sendWaiting(): void {
    while (this.waiting.length > 0) void this.fetchBlocks(this.waiting.splice(0, BLOCKS_PER_READ));
  }

  /** One block with GET /v1/blocks/{id}; several with one POST /v1/blocks/read. */
  private async fetchBlocks(batch: { id: Buffer; resolve: (b: Buffer) => void; reject: (e: unknown) => void }[]): Promise<void> {
    try {
      if (batch.length === 1) return batch[0]!.resolve(await this.fetchBlock(batch[0]!.id));
      const r = await this.binary(...requestOf('readBlocks'), 'blocks', encodeIds(batch.map((w) => w.id)));
      const malformed = () => integrity(`${this.http.location} sent a malformed answer to a block read`);
      let at = 0;
      let i = 0;
      for (; i < batch.length && at < r.length; i++) {
        if (at + 4 > r.length) throw malformed();
        const n = r.readUInt32LE(at);
        if (at + 4 + n > r.length) throw malformed();
        const w = batch[i]!;
        // An empty frame: missing or unreadable there; the single GET says which.
        if (n === 0) this.fetchBlock(w.id).then(w.resolve, w.reject);
        else w.resolve(r.subarray(at + 4, at + 4 + n));
        at += 4 + n;
      }
      if (i === 0 || at !== r.length) throw malformed();
      // The answer stopped at its size bound: ask again for the rest.
      if (i < batch.length) await this.fetchBlocks(batch.slice(i));
    } catch (e) {
      // Those already answered keep their bytes; rejecting them again does nothing.
      for (const w of batch) w.reject(e);
    }
  }

  private async fetchBlock(id: Buffer): Promise<Buffer> {
    const r = await this.http.call(...requestOf('block', { id: id.toString('hex') }));
    if (r.status === 404) throw integrity(`block ${id.toString('hex').slice(0, 16)} is not in the repository`, { block: id.toString('hex') });
    if (r.status !== 200) throw this.refusal(r, 'GET', `block ${id.toString('hex').slice(0, 16)}`);
    return r.body;
  }

  /** Drops a cached block that failed to open (the next read fetches it again). */
  evict(id: Buffer): void {
    this.cache?.delete(id);
  }

  private remember(id: Uint8Array): void {
    if (this.known.size >= KNOWN_LIMIT) this.known = new Set();
    this.known.add(Buffer.from(id).toString('hex'));
  }

  hasBlock(id: Buffer): boolean {
    return this.known.has(id.toString('hex'));
  }

  hasBlocks(ids: readonly Buffer[]): boolean[] {
    return ids.map((id) => this.hasBlock(id));
  }

  /**
   * Of `ids`, those to store: the ones the server lacks, and, with the key,
   * the ones it claims whose pack's sealed index does not vouch for them (a
   * pack index anyone with an append token can register; see repo/claims.ts).
   */
  async missing(ids: readonly Buffer[]): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (let i = 0; i < ids.length; i += MISSING_BATCH) {
      const batch = ids.slice(i, i + MISSING_BATCH);
      if (!this.claims) {
        const lacking = decodeIds(await this.binary(...requestOf('missing'), 'block list', encodeIds(batch)));
        const set = new Set(lacking.map((b) => b.toString('hex')));
        for (const id of batch) if (!set.has(id.toString('hex'))) this.remember(id);
        out.push(...lacking);
        continue;
      }
      const claims = decodeClaims(await this.binary(...requestOf('where'), 'block list', encodeIds(batch)), batch.length, this.http.location);
      const holds = await this.claims.holds(batch, claims);
      batch.forEach((id, k) => {
        if (holds[k]) return this.remember(id);
        if (claims[k]) this.forged.add(id.toString('hex'));
        out.push(id);
      });
    }
    return out;
  }

  async putPack(name: string, bytes: Buffer, entries: readonly PackEntry[], relocate = false): Promise<void> {
    await this.http.put({ kind: 'pack', name }, bytes);
    // Blocks whose stored copy is forged: the server keeps these copies as spares, which readers fall back to.
    const replaces = relocate ? [] : entries.map((e) => e.id.toString('hex')).filter((h) => this.forged.has(h));
    await this.json(...requestOf('putPack', { name }), `pack ${name.slice(0, 16)}`, { entries: packEntriesToJson(entries), ...(relocate ? { relocate } : {}), ...(replaces.length > 0 ? { replaces } : {}) });
    for (const e of entries) this.remember(e.id);
    for (const h of replaces) this.forged.delete(h);
  }

  /** A block's spare copies (sealed), for a reader whose first copy failed to authenticate. */
  async spares(id: Buffer): Promise<Buffer[]> {
    const r = await this.binary(...requestOf('spares', { id: id.toString('hex') }), `spares of block ${id.toString('hex').slice(0, 16)}`);
    const out: Buffer[] = [];
    for (let at = 0; at < r.length; ) {
      if (at + 4 > r.length || at + 4 + r.readUInt32LE(at) > r.length) throw integrity(`${this.http.location} sent a malformed list of spare copies`);
      const n = r.readUInt32LE(at);
      out.push(r.subarray(at + 4, at + 4 + n));
      at += 4 + n;
    }
    return out;
  }

  async startBackup(lineage: Buffer, time: number, parent: number | 'auto'): Promise<BackupStart> {
    const j = await this.json<{ lease: unknown; parent: unknown }>(...requestOf('startBackup'), 'backup', { lineage: lineage.toString('base64'), time, parent });
    if (typeof j.lease !== 'string' || !/^[0-9a-f]{32}$/.test(j.lease)) throw integrity(`${this.http.location} sent a malformed lease`);
    const lease = j.lease;
    // The server drops a backup it has not heard from for a while (a client that died).
    this.keepAlive(lease);
    return { lease, ...(j.parent ? { parent: snapshotFromJson(j.parent) } : {}) };
  }

  /** The server drops a lease it has not heard about for a while (a client that died). */
  private keepAlive(lease: string): void {
    const timer = setInterval(() => void this.http.call(...requestOf('renewLease', { lease })).catch(() => {}), RENEW_MS);
    timer.unref();
    this.renewals.set(lease, timer);
  }

  async beginSnapshot(id: string, time: number, lineage: Buffer, meta: Buffer, parent: number | null, lease: string, inherits = false): Promise<number> {
    const j = await this.json<{ seq: unknown }>(...requestOf('beginSnapshot'), 'snapshot', {
      id,
      time,
      lineage: lineage.toString('base64'),
      meta: meta.toString('base64'),
      parent,
      lease,
      ...(inherits ? { inherits } : {}),
    });
    if (!Number.isSafeInteger(j.seq)) throw integrity(`${this.http.location} sent a malformed snapshot number`);
    return j.seq as number;
  }

  async storeVersions(snapshot: number, list: readonly VersionUpload[]): Promise<void> {
    if (list.length > 0) await this.binary(...requestOf('storeVersions', { seq: snapshot }), 'versions', encodeVersions(list));
  }

  async commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer, blobs: readonly Buffer[]): Promise<void> {
    await this.json(...requestOf('commitSnapshot', { seq }), 'snapshot commit', {
      root: root.toString('hex'),
      record: record.toString('hex'),
      meta: meta.toString('base64'),
      blobs: blobs.map((b) => b.toString('hex')),
    });
  }

  async endLease(lease: string): Promise<void> {
    clearInterval(this.renewals.get(lease));
    this.renewals.delete(lease);
    if (this.maintenance === lease) this.maintenance = undefined;
    await this.http.call(...requestOf('endLease', { lease })).catch(() => {});
  }

  private maintenance?: string;

  private get lease(): string {
    if (!this.maintenance) throw new StrataError('no_lease', 'maintenance needs its lease first');
    return this.maintenance;
  }

  async startMaintenance(waitMs = 0, onWait?: (message: string) => void): Promise<string> {
    const deadline = Date.now() + waitMs;
    let told = false;
    for (;;) {
      // The server waits a little itself; longer waits are a loop of requests.
      const left = Math.max(0, deadline - Date.now());
      try {
        const j = await this.json<{ lease: unknown }>(...requestOf('startMaintenance'), 'maintenance', { waitMs: Math.min(left, MAX_LOCK_WAIT_MS) });
        if (typeof j.lease !== 'string') throw integrity(`${this.http.location} sent a malformed lease`);
        this.maintenance = j.lease;
        this.keepAlive(j.lease);
        return j.lease;
      } catch (e) {
        if (!(e instanceof StrataError && e.code === 'locked') || Date.now() >= deadline) throw e;
        if (!told) onWait?.(e.message);
        told = true;
      }
    }
  }

  async forgetSnapshots(candidates: readonly number[]): Promise<{ removed: number[]; inUse: number[]; touched: number[] }> {
    const j = await this.json<{ removed: unknown; inUse: unknown; touched: unknown }>(...requestOf('forget', { lease: this.lease }), 'forget', { snapshots: candidates });
    const list = (v: unknown) => {
      if (!Array.isArray(v) || !v.every((n) => Number.isSafeInteger(n))) throw integrity(`${this.http.location} sent a malformed answer to forget`);
      return v as number[];
    };
    return { removed: list(j.removed), inUse: list(j.inUse), touched: list(j.touched) };
  }

  /** Version records a read plan brought along (see planRead). */
  private readonly records = new Map<number, VersionRecord>();

  async versionRecord(version: number): Promise<VersionRecord | undefined> {
    const known = this.records.get(version);
    if (known) return known;
    try {
      const j = await this.json<{ snapshot: unknown; path: unknown; size: unknown; toc: unknown }>(...requestOf('versionRecord', { version }), `version ${version}`);
      const hex = (v: unknown) => (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v) ? Buffer.from(v, 'hex') : undefined);
      const path = hex(j.path);
      if (!path || !Number.isSafeInteger(j.snapshot) || !Number.isSafeInteger(j.size)) throw integrity('malformed version record');
      return { snapshot: j.snapshot as number, path, size: j.size as number, toc: j.toc === null ? null : (hex(j.toc) ?? null) };
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  async retainedBlobs(): Promise<{ tocs: Buffer[]; records: Buffer[] }> {
    const j = await this.json<{ tocs: unknown; records: unknown }>(...requestOf('retained'), 'retained blobs');
    const ids = (v: unknown) => {
      if (!Array.isArray(v) || !v.every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h))) throw integrity(`${this.http.location} sent a malformed list of retained blobs`);
      return (v as string[]).map((h) => Buffer.from(h, 'hex'));
    };
    return { tocs: ids(j.tocs), records: ids(j.records) };
  }

  async staleTocs(): Promise<number[]> {
    const j = await this.json<{ versions: unknown }>(...requestOf('staleTocs', { lease: this.lease }), 'stale TOCs');
    if (!Array.isArray(j.versions) || !j.versions.every((n) => Number.isSafeInteger(n))) throw integrity(`${this.http.location} sent a malformed list of stale TOCs`);
    return j.versions as number[];
  }

  async snapshotRecord(seq: number): Promise<Buffer | null> {
    const j = await this.json<{ record: unknown }>(...requestOf('snapshotRecord', { seq }), `snapshot ${seq}`);
    if (j.record === null) return null;
    if (typeof j.record !== 'string' || !/^[0-9a-f]{64}$/.test(j.record)) throw integrity(`${this.http.location} sent a malformed record id`);
    return Buffer.from(j.record, 'hex');
  }

  async setSnapshotRecord(seq: number, record: Buffer, meta: Buffer): Promise<void> {
    await this.json(...requestOf('setSnapshotRecord', { lease: this.lease }), 'snapshot record', { seq, record: record.toString('hex'), meta: meta.toString('base64') });
  }

  async setVersionTocs(list: readonly ResealedToc[]): Promise<void> {
    const hex = (ids: readonly Buffer[]) => ids.map((b) => b.toString('hex'));
    await this.json(...requestOf('setVersionTocs', { lease: this.lease }), 'TOCs', {
      tocs: list.map((t) => ({ version: t.version, toc: t.toc.toString('hex'), segments: hex(t.segments), old: hex(t.old) })),
    });
  }

  async pruneMark(dryRun: boolean, wholePacks = false): Promise<PrunePlan> {
    const j = await this.json<{ started: unknown; abandonedSnapshots: unknown; unusedBlocks: unknown; deletedBlocks: unknown; packsNeedingKey: unknown; packs: unknown }>(
      ...requestOf('pruneMark', { lease: this.lease }),
      'prune',
      { dryRun, wholePacks },
    );
    const whole = (n: unknown) => {
      if (!Number.isSafeInteger(n) || (n as number) < 0) throw integrity(`${this.http.location} sent a malformed prune plan`);
      return n as number;
    };
    if (!Array.isArray(j.packs)) throw integrity(`${this.http.location} sent a malformed prune plan`);
    const packs = j.packs.map((p: { name?: unknown; blobs?: unknown }) => {
      if (typeof p.name !== 'string' || !/^[0-9a-f]{64}$/.test(p.name)) throw integrity(`${this.http.location} sent a malformed prune plan`);
      return { name: p.name, blobs: Array.isArray(p.blobs) && p.blobs.length === 0 ? [] : packEntriesFromJson(p.blobs, Number.MAX_SAFE_INTEGER, 0) };
    });
    return {
      started: whole(j.started),
      abandonedSnapshots: whole(j.abandonedSnapshots),
      unusedBlocks: whole(j.unusedBlocks),
      deletedBlocks: whole(j.deletedBlocks),
      packsNeedingKey: whole(j.packsNeedingKey),
      packs,
    };
  }

  async pruneSweep(packs: readonly string[], started: number): Promise<{ deletedPacks: number; orphanPacks: number; bytesFreed: number }> {
    return this.json(...requestOf('pruneSweep', { lease: this.lease }), 'prune', { packs, started });
  }

  checkPacks(): Promise<{ packs: PackInfo[]; errors: string[]; warnings: string[]; bad: string[] }> {
    return this.json(...requestOf('checkPacks'), 'pack check');
  }

  async packBlobs(pack: string): Promise<PackEntry[]> {
    const j = await this.json<{ blobs: unknown }>(...requestOf('packBlobs', { name: pack }), `pack ${pack.slice(0, 16)}`);
    return packEntriesFromJson(j.blobs, Number.MAX_SAFE_INTEGER, 0);
  }

  async checkPass(which: 'current' | 'new'): Promise<number> {
    const j = await this.json<{ pass: unknown }>(...requestOf('checkPass'), 'check pass', { which });
    if (!Number.isSafeInteger(j.pass)) throw integrity(`${this.http.location} sent a malformed check pass`);
    return j.pass as number;
  }

  async markChecked(pack: string): Promise<void> {
    await this.json(...requestOf('markChecked', { name: pack }), `pack ${pack.slice(0, 16)}`, {});
  }

  checkTocs(): Promise<{ versions: number; problems: VersionProblem[]; bad: string[] }> {
    return this.json(...requestOf('checkTocs'), 'TOC check');
  }

  async damage(bad: readonly string[]): Promise<{ version: number; ranges: [number, number][] }[]> {
    return (await this.json<{ damage: { version: number; ranges: [number, number][] }[] }>(...requestOf('damage'), 'damage', { blocks: bad })).damage;
  }

  async repair(bad: readonly string[]): Promise<number> {
    return (await this.json<{ repaired: number }>(...requestOf('repair'), 'repair', { blocks: bad })).repaired;
  }

  async close(): Promise<void> {
    for (const t of this.renewals.values()) clearInterval(t);
    this.cache?.close();
    await this.http.close();
  }
}

function factId(key: string): Buffer {
  return createHash('sha256').update(`strata fact ${key}`).digest();
}

/** An answer to POST /v1/blocks/where: per id, 32 bytes of pack name, then offset, length and pack size (f64le); length 0 for none. */
function decodeClaims(buf: Buffer, n: number, where: string): (Claim | undefined)[] {
  if (buf.length !== n * CLAIM_BYTES) throw integrity(`${where} sent a malformed list of block locations`);
  const out: (Claim | undefined)[] = [];
  for (let at = 0; at < buf.length; at += CLAIM_BYTES) {
    const [offset, length, packSize] = [buf.readDoubleLE(at + 32), buf.readDoubleLE(at + 40), buf.readDoubleLE(at + 48)];
    const whole = (v: number) => Number.isSafeInteger(v) && v >= 0;
    if (!whole(offset) || !whole(length) || !whole(packSize)) throw integrity(`${where} sent a malformed list of block locations`);
    out.push(length === 0 ? undefined : { pack: buf.toString('hex', at, at + 32), offset, length, packSize });
  }
  return out;
}

function parse<T>(r: Reply, where: string): T {
  if (r.status === 204 || r.body.length === 0) return {} as T;
  try {
    return JSON.parse(r.body.toString('utf8')) as T;
  } catch {
    throw integrity(`${where} sent a malformed answer`);
  }
}

function versionRow(j: unknown, snapshot?: number): StoredVersionRow {
  const o = j as Partial<StoredVersionRow>;
  const whole = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (typeof o !== 'object' || o === null || !whole(o.id) || !whole(o.size) || !whole(o.depth) || !whole(o.snapshot ?? snapshot)) throw integrity('malformed version');
  const end = Number.isSafeInteger(o.end) ? o.end! : -1;
  return { id: o.id!, snapshot: (o.snapshot ?? snapshot)!, size: o.size!, depth: o.depth!, end };
}
