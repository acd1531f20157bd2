/**
 * The catalog's protocol, as data: every method a client of \`strata serve\`
 * may call, with its HTTP method, path, the token role it needs, the largest
 * body it may send, and the codecs of its request and answer bodies
 * (messages.ts). The server's routes take all of it from here
 * (server/catalog-routes.ts: each reads its request and sends its answer
 * through the row's codecs), the remote client builds its requests and reads
 * the answers from the same rows (catalog/remote.ts), and a test holds
 * docs/openapi.yaml to them.
 */
import * as body from './messages.js';
import { BLOCKS_PER_READ, NO_BODY, type Codec } from './wire.js';

/** Request bodies at most: a version list of a large backup, a list of block ids, a JSON body. */
export const MAX_VERSIONS_BYTES = 256 * 1024 * 1024;
export const MAX_IDS_BYTES = 32 * 65536;
export const MAX_JSON_BYTES = 16 * 1024 * 1024;

export interface ProtocolMethod {
  method: 'GET' | 'POST' | 'DELETE';
  /** With {name} parameters. */
  path: string;
  role: 'read' | 'append' | 'admin';
  maxBody: number;
  /** The request's body (NO_BODY: all is in the path and query). */
  request: Codec<unknown, unknown>;
  /** The answer's body (NO_BODY: 204). */
  answer: Codec<unknown, unknown>;
  /** Answers 201 (made), or 200 when it was made already (a retried request). */
  created?: true;
  /** The answer is bytes a Range header may cut (206). */
  ranged?: true;
}

export const CATALOG_PROTOCOL = {
  snapshots: { method: 'GET', path: '/v1/snapshots', role: 'read', maxBody: 0, request: NO_BODY, answer: body.snapshotList },
  snapshot: { method: 'GET', path: '/v1/snapshots/{seq}', role: 'read', maxBody: 0, request: NO_BODY, answer: body.snapshot },
  version: { method: 'GET', path: '/v1/snapshots/{seq}/versions/{path}', role: 'read', maxBody: 0, request: NO_BODY, answer: body.version },
  versions: { method: 'GET', path: '/v1/snapshots/{seq}/versions', role: 'read', maxBody: 0, request: NO_BODY, answer: body.versionTable },
  planRead: { method: 'GET', path: '/v1/paths/{path}/plan', role: 'read', maxBody: 0, request: NO_BODY, answer: body.readPlan },
  versionById: { method: 'GET', path: '/v1/versions/{version}', role: 'read', maxBody: 0, request: NO_BODY, answer: body.version },
  pieces: { method: 'GET', path: '/v1/versions/{version}/pieces', role: 'read', maxBody: 0, request: NO_BODY, answer: body.piecePage },
  blockList: { method: 'GET', path: '/v1/versions/{version}/blocks', role: 'read', maxBody: 0, request: NO_BODY, answer: body.blockList },
  toc: { method: 'GET', path: '/v1/versions/{version}/toc', role: 'read', maxBody: 0, request: NO_BODY, answer: body.tocRows },
  block: { method: 'GET', path: '/v1/blocks/{id}', role: 'read', maxBody: 0, request: NO_BODY, answer: body.sealed, ranged: true },
  readBlocks: { method: 'POST', path: '/v1/blocks/read', role: 'read', maxBody: BLOCKS_PER_READ * 32, request: body.ids, answer: body.blockFrames },
  missing: { method: 'POST', path: '/v1/blocks/missing', role: 'append', maxBody: MAX_IDS_BYTES, request: body.ids, answer: body.ids },
  where: { method: 'POST', path: '/v1/blocks/where', role: 'append', maxBody: MAX_IDS_BYTES, request: body.ids, answer: body.claims },
  spares: { method: 'GET', path: '/v1/blocks/{id}/spares', role: 'read', maxBody: 0, request: NO_BODY, answer: body.spareFrames },
  putPack: { method: 'POST', path: '/v1/packs/{name}', role: 'append', maxBody: MAX_JSON_BYTES, request: body.packIndex, answer: body.packIndexed, created: true },
  startBackup: { method: 'POST', path: '/v1/backups', role: 'append', maxBody: MAX_JSON_BYTES, request: body.backupStart, answer: body.backupStarted, created: true },
  pinSnapshot: { method: 'POST', path: '/v1/pins', role: 'append', maxBody: MAX_JSON_BYTES, request: body.pinRequest, answer: body.lease, created: true },
  renewLease: { method: 'POST', path: '/v1/leases/{lease}/renew', role: 'append', maxBody: 0, request: NO_BODY, answer: NO_BODY },
  endLease: { method: 'DELETE', path: '/v1/leases/{lease}', role: 'append', maxBody: 0, request: NO_BODY, answer: NO_BODY },
  startMaintenance: { method: 'POST', path: '/v1/maintenance', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.maintenanceWait, answer: body.lease, created: true },
  forget: { method: 'POST', path: '/v1/maintenance/{lease}/forget', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.forgetRequest, answer: body.forgotten },
  staleTocs: { method: 'GET', path: '/v1/maintenance/{lease}/stale', role: 'admin', maxBody: 0, request: NO_BODY, answer: body.staleTocs },
  setVersionTocs: { method: 'POST', path: '/v1/maintenance/{lease}/tocs', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.resealedTocs, answer: NO_BODY },
  pruneMark: { method: 'POST', path: '/v1/maintenance/{lease}/prune', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.pruneOptions, answer: body.prunePlan },
  pruneSweep: { method: 'POST', path: '/v1/maintenance/{lease}/sweep', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.pruneSweep, answer: body.swept },
  checkPacks: { method: 'GET', path: '/v1/check/packs', role: 'read', maxBody: 0, request: NO_BODY, answer: body.packCheck },
  checkTocs: { method: 'GET', path: '/v1/check/tocs', role: 'read', maxBody: 0, request: NO_BODY, answer: body.tocCheck },
  packBlobs: { method: 'GET', path: '/v1/packs/{name}/blobs', role: 'read', maxBody: 0, request: NO_BODY, answer: body.packBlobs },
  markChecked: { method: 'POST', path: '/v1/packs/{name}/checked', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.emptyObject, answer: NO_BODY },
  checkPass: { method: 'POST', path: '/v1/check/pass', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.checkPassRequest, answer: body.checkPass },
  damage: { method: 'POST', path: '/v1/check/damage', role: 'read', maxBody: MAX_JSON_BYTES, request: body.badBlocks, answer: body.damage },
  repair: { method: 'POST', path: '/v1/check/repair', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.badBlocks, answer: body.repaired },
  retained: { method: 'GET', path: '/v1/retained', role: 'read', maxBody: 0, request: NO_BODY, answer: body.retained },
  versionRecord: { method: 'GET', path: '/v1/versions/{version}/record', role: 'read', maxBody: 0, request: NO_BODY, answer: body.versionRecord },
  snapshotRecord: { method: 'GET', path: '/v1/snapshots/{seq}/record', role: 'read', maxBody: 0, request: NO_BODY, answer: body.snapshotRecord },
  setSnapshotRecord: { method: 'POST', path: '/v1/maintenance/{lease}/record', role: 'admin', maxBody: MAX_JSON_BYTES, request: body.newSnapshotRecord, answer: NO_BODY },
  beginSnapshot: { method: 'POST', path: '/v1/snapshots', role: 'append', maxBody: MAX_JSON_BYTES, request: body.newSnapshot, answer: body.snapshotSeq, created: true },
  storeVersions: { method: 'POST', path: '/v1/snapshots/{seq}/versions', role: 'append', maxBody: MAX_VERSIONS_BYTES, request: body.versionUploads, answer: NO_BODY },
  commitSnapshot: { method: 'POST', path: '/v1/snapshots/{seq}/commit', role: 'append', maxBody: MAX_JSON_BYTES, request: body.snapshotCommit, answer: body.snapshotSeq, created: true },
} as const satisfies Record<string, ProtocolMethod>;

export type ProtocolName = keyof typeof CATALOG_PROTOCOL;

type Row<N extends ProtocolName> = (typeof CATALOG_PROTOCOL)[N];
/** What the receiving end of a codec reads. */
type Decoded<C> = C extends Codec<infer T, infer _S> ? T : never;
/** What the sending end of a codec holds. */
type Encoded<C> = C extends Codec<infer _T, infer S> ? S : never;

/** A method's request as the client sends it, and as the server reads it. */
export type RequestSent<N extends ProtocolName> = Encoded<Row<N>['request']>;
export type RequestOf<N extends ProtocolName> = Decoded<Row<N>['request']>;
/** A method's answer as the server sends it, and as the client reads it. */
export type AnswerSent<N extends ProtocolName> = Encoded<Row<N>['answer']>;
export type AnswerOf<N extends ProtocolName> = Decoded<Row<N>['answer']>;

/** A method's request line: its HTTP method, and its path with the parameters filled in (and a query, if any). */
export function requestOf(name: ProtocolName, params: Record<string, string | number> = {}, query?: URLSearchParams | string): [string, string] {
  const m = CATALOG_PROTOCOL[name];
  const path = m.path.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = params[k];
    if (v === undefined) throw new Error(`${name}: no value for {${k}}`);
    return encodeURIComponent(String(v));
  });
  const q = query === undefined ? '' : String(query);
  return [m.method, q === '' ? path : `${path}?${q}`];
}
