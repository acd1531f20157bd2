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
import type { Claim } from './messages.js';
import type { Forgotten } from './forget.js';
import { CATALOG_PROTOCOL, requestOf, type AnswerOf, type ProtocolMethod, type ProtocolName, type RequestSent } from './protocol.js';
import { cachedDictionary, fetchDictionary, type BackupStart, type CatalogService, type ReadPlan, type ResealedToc, type SnapshotChoice, type StoredVersionRow, type VersionRecord, type VersionUpload } from './service.js';
import { BLOCKS_PER_READ, MAX_LOCK_WAIT_MS } from './wire.js';

export type { Claim } from './messages.js';

/** Ids per "which of these do you have?" request. */
const MISSING_BATCH = 32_768;
/** After this many single lookups in one snapshot, its whole version table is fetched instead. */
const TABLE_AFTER = 8;
/** Ids remembered as stored; past this the memory is let go (the server is asked again). */
const KNOWN_LIMIT = 2_000_000;
const RENEW_MS = 5_000;

/** A request of a method: its path's parameters, a query, a body (as the method's request codec takes it). */
interface Ask<N extends ProtocolName> {
  params?: Record<string, string | number>;
  query?: URLSearchParams | string;
  body?: RequestSent<N>;
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

  /**
   * Calls a method of CATALOG_PROTOCOL: its request line from the row, the
   * body encoded and the answer decoded by the row's codecs. `what` names
   * what was asked for in a refusal.
   */
  private async ask<N extends ProtocolName>(name: N, what: string, a: Ask<N> = {}): Promise<AnswerOf<N>> {
    const r = await this.send(name, a);
    if (r.status >= 200 && r.status < 300) return this.answer(name, r);
    throw this.refusal(r, CATALOG_PROTOCOL[name].method, what);
  }

  private send<N extends ProtocolName>(name: N, a: Ask<N>): Promise<Reply> {
    const codec = (CATALOG_PROTOCOL[name] as ProtocolMethod).request;
    const [method, route] = requestOf(name, a.params, a.query);
    if (codec.type === 'none') return this.http.call(method, route);
    const body = codec.encode(a.body);
    return this.http.call(method, route, codec.type === 'json' ? { json: body } : { body: [body as Buffer] });
  }

  /** A method's answer, decoded by its codec (a check of everything the server sent). */
  private answer<N extends ProtocolName>(name: N, r: Reply): AnswerOf<N> {
    const codec = (CATALOG_PROTOCOL[name] as ProtocolMethod).answer;
    if (codec.type === 'none') return undefined as AnswerOf<N>;
    const body = codec.type === 'json' ? parse(r, this.http.location) : r.status === 204 ? Buffer.alloc(0) : r.body;
    return codec.decode(body, this.http.location) as AnswerOf<N>;
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
    return this.ask('snapshots', 'snapshots');
  }

  // The protocol has no page of snapshots: the rows come in one request and are cut here (the sealed metadata of the rows left out is never opened).
  async snapshotPage(offset: number, limit: number): Promise<{ total: number; rows: SnapshotRow[] }> {
    const all = await this.snapshots();
    const rows: SnapshotRow[] = [];
    for (let i = offset; i < Math.min(all.length, offset + limit); i++) rows.push(all[all.length - 1 - i]!);
    return { total: all.length, rows };
  }

  async snapshotPositions(ids: readonly string[]): Promise<{ row: SnapshotRow; position: number }[]> {
    const all = await this.snapshots();
    const at = new Map(all.map((row, position) => [row.id, { row, position }]));
    return ids.map((id) => at.get(id)).filter((p) => p !== undefined);
  }

  async snapshotsByPrefix(prefix: string): Promise<SnapshotRow[]> {
    if (!/^[0-9a-f]{1,64}$/.test(prefix)) return [];
    return this.ask('snapshots', 'snapshots', { query: `prefix=${prefix}` });
  }

  async snapshotBySeq(seq: number): Promise<SnapshotRow | undefined> {
    try {
      return await this.ask('snapshot', `snapshot ${seq}`, { params: { seq } });
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
      return await this.ask('version', 'version', { params: { seq: snapshot, path: path.toString('hex') } });
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  /** A snapshot's versions, fetched once: 64 bytes each (path, id, size, depth, end). */
  private async versionTable(snapshot: number): Promise<Map<string, StoredVersionRow>> {
    const table = new Map<string, StoredVersionRow>();
    for (const { path, ...row } of await this.ask('versions', 'versions', { params: { seq: snapshot } })) table.set(path, { ...row, snapshot });
    this.tables.set(snapshot, table);
    return table;
  }

  async versionById(id: number): Promise<VersionRow | undefined> {
    try {
      return await this.ask('versionById', `version ${id}`, { params: { version: id } });
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  async *pieces(version: number, start: number, end: number): AsyncGenerator<Piece> {
    let from = start;
    while (from <= end) {
      const j = await this.ask('pieces', `version ${version}`, { params: { version }, query: `start=${from}&end=${end}` });
      let at = from;
      for (const p of j.pieces) {
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
    const list = await this.ask('blockList', `blocks of version ${version}`, { params: { version } });
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
    const r = await this.send('planRead', { params: { path: path.toString('hex') }, query: q });
    // No plan (or a range the client words its own error for): the client looks itself.
    if (r.status === 404 || r.status === 416) return undefined;
    if (r.status !== 200) throw this.refusal(r, 'GET', 'read plan');
    const plan = this.answer('planRead', r);
    // The version's record, from the plan: a reader checks the version against its sealed TOC without asking again.
    this.records.set(plan.version.id, { snapshot: plan.version.snapshot, path, size: plan.version.size, toc: plan.toc ?? null });
    return plan;
  }

  async toc(version: number): Promise<TocRow[]> {
    return this.ask('toc', `TOC of version ${version}`, { params: { version } });
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
    return cachedDictionary(this.cache, name, fresh, () => fetchDictionary(this.http, name));
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
      const frames = await this.ask('readBlocks', 'blocks', { body: batch.map((w) => w.id) });
      if (frames.length === 0 || frames.length > batch.length) throw integrity(`${this.http.location} sent a malformed answer to a block read`);
      frames.forEach((sealed, i) => {
        const w = batch[i]!;
        // An empty frame: missing or unreadable there; the single GET says which.
        if (sealed.length === 0) this.fetchBlock(w.id).then(w.resolve, w.reject);
        else w.resolve(sealed);
      });
      // The answer stopped at its size bound: ask again for the rest.
      if (frames.length < batch.length) await this.fetchBlocks(batch.slice(frames.length));
    } catch (e) {
      // Those already answered keep their bytes; rejecting them again does nothing.
      for (const w of batch) w.reject(e);
    }
  }

  private async fetchBlock(id: Buffer): Promise<Buffer> {
    const r = await this.send('block', { params: { id: id.toString('hex') } });
    if (r.status === 404) throw integrity(`block ${id.toString('hex').slice(0, 16)} is not in the repository`, { block: id.toString('hex'), missing: true });
    if (r.status !== 200) throw this.refusal(r, 'GET', `block ${id.toString('hex').slice(0, 16)}`);
    return this.answer('block', r);
  }

  /** Drops a cached block that failed to open (the next read fetches it again). */
  evict(id: Buffer): boolean {
    return this.cache?.delete(id) ?? false;
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
        const lacking = await this.ask('missing', 'block list', { body: batch });
        const set = new Set(lacking.map((b) => b.toString('hex')));
        for (const id of batch) if (!set.has(id.toString('hex'))) this.remember(id);
        out.push(...lacking);
        continue;
      }
      const claims = await this.ask('where', 'block list', { body: batch });
      if (claims.length !== batch.length) throw integrity(`${this.http.location} sent a malformed list of block locations`);
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
    await this.ask('putPack', `pack ${name.slice(0, 16)}`, { params: { name }, body: { entries, relocate, replaces } });
    for (const e of entries) this.remember(e.id);
    for (const h of replaces) this.forged.delete(h);
  }

  /** A block's spare copies (sealed), for a reader whose first copy failed to authenticate. */
  async spares(id: Buffer): Promise<Buffer[]> {
    return this.ask('spares', `spares of block ${id.toString('hex').slice(0, 16)}`, { params: { id: id.toString('hex') } });
  }

  async startBackup(lineage: Buffer, time: number, parent: number | 'auto'): Promise<BackupStart> {
    const started = await this.ask('startBackup', 'backup', { body: { lineage, time, parent } });
    // The server drops a backup it has not heard from for a while (a client that died).
    this.keepAlive(started.lease);
    return started;
  }

  async pinSnapshot(snapshot: number): Promise<string> {
    const lease = await this.ask('pinSnapshot', 'pin', { body: snapshot });
    this.keepAlive(lease);
    return lease;
  }

  /** The server drops a lease it has not heard about for a while (a client that died). */
  private keepAlive(lease: string): void {
    const timer = setInterval(() => void this.http.call(...requestOf('renewLease', { lease })).catch(() => {}), RENEW_MS);
    timer.unref();
    this.renewals.set(lease, timer);
  }

  async beginSnapshot(id: string, time: number, lineage: Buffer, meta: Buffer, parent: number | null, lease: string, inherits = false): Promise<number> {
    return this.ask('beginSnapshot', 'snapshot', { body: { id, time, lineage, meta, parent, lease, inherits } });
  }

  async storeVersions(snapshot: number, list: readonly VersionUpload[]): Promise<void> {
    if (list.length > 0) await this.ask('storeVersions', 'versions', { params: { seq: snapshot }, body: list });
  }

  async commitSnapshot(seq: number, root: Buffer, record: Buffer, meta: Buffer, blobs: readonly Buffer[]): Promise<void> {
    await this.ask('commitSnapshot', 'snapshot commit', { params: { seq }, body: { root, record, meta, blobs } });
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
        const lease = await this.ask('startMaintenance', 'maintenance', { body: Math.min(left, MAX_LOCK_WAIT_MS) });
        this.maintenance = lease;
        this.keepAlive(lease);
        return lease;
      } catch (e) {
        if (!(e instanceof StrataError && e.code === 'locked') || Date.now() >= deadline) throw e;
        if (!told) onWait?.(e.message);
        told = true;
      }
    }
  }

  async forgetSnapshots(candidates: readonly number[]): Promise<Forgotten> {
    return this.ask('forget', 'forget', { params: { lease: this.lease }, body: candidates });
  }

  /** Version records a read plan brought along (see planRead). */
  private readonly records = new Map<number, VersionRecord>();

  async versionRecord(version: number): Promise<VersionRecord | undefined> {
    const known = this.records.get(version);
    if (known) return known;
    try {
      return await this.ask('versionRecord', `version ${version}`, { params: { version } });
    } catch (e) {
      if (e instanceof StrataError && e.code === 'not_found') return undefined;
      throw e;
    }
  }

  async retainedBlobs(): Promise<{ tocs: Buffer[]; records: Buffer[] }> {
    return this.ask('retained', 'retained blobs');
  }

  async staleTocs(): Promise<number[]> {
    return this.ask('staleTocs', 'stale TOCs', { params: { lease: this.lease } });
  }

  async snapshotRecord(seq: number): Promise<Buffer | null> {
    return this.ask('snapshotRecord', `snapshot ${seq}`, { params: { seq } });
  }

  async setSnapshotRecord(seq: number, record: Buffer, meta: Buffer): Promise<void> {
    await this.ask('setSnapshotRecord', 'snapshot record', { params: { lease: this.lease }, body: { seq, record, meta } });
  }

  async setVersionTocs(list: readonly ResealedToc[]): Promise<void> {
    await this.ask('setVersionTocs', 'TOCs', { params: { lease: this.lease }, body: list });
  }

  async pruneMark(dryRun: boolean, wholePacks = false): Promise<PrunePlan> {
    return this.ask('pruneMark', 'prune', { params: { lease: this.lease }, body: { dryRun, wholePacks } });
  }

  async pruneSweep(packs: readonly string[], started: number): Promise<{ deletedPacks: number; orphanPacks: number; bytesFreed: number }> {
    return this.ask('pruneSweep', 'prune', { params: { lease: this.lease }, body: { packs, started } });
  }

  checkPacks(): Promise<{ packs: PackInfo[]; errors: string[]; warnings: string[]; bad: string[] }> {
    return this.ask('checkPacks', 'pack check');
  }

  async packBlobs(pack: string): Promise<PackEntry[]> {
    return this.ask('packBlobs', `pack ${pack.slice(0, 16)}`, { params: { name: pack } });
  }

  async checkPass(which: 'current' | 'new'): Promise<number> {
    return this.ask('checkPass', 'check pass', { body: which });
  }

  async markChecked(pack: string): Promise<void> {
    await this.ask('markChecked', `pack ${pack.slice(0, 16)}`, { params: { name: pack } });
  }

  checkTocs(): Promise<{ versions: number; problems: VersionProblem[]; bad: string[] }> {
    return this.ask('checkTocs', 'TOC check');
  }

  async damage(bad: readonly string[]): Promise<{ version: number; ranges: [number, number][] }[]> {
    return this.ask('damage', 'damage', { body: bad });
  }

  async repair(bad: readonly string[]): Promise<number> {
    return this.ask('repair', 'repair', { body: bad });
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

/** A JSON answer, parsed (an empty one is an empty object). */
function parse(r: Reply, where: string): unknown {
  if (r.status === 204 || r.body.length === 0) return {};
  try {
    return JSON.parse(r.body.toString('utf8')) as unknown;
  } catch {
    throw integrity(`${where} sent a malformed answer`);
  }
}
