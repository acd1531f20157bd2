/**
 * The catalog's protocol, as data: every method a client of \`strata serve\`
 * may call, with its HTTP method, path, the token role it needs and the
 * largest body it may send. The server's routes take these from here
 * (server/catalog-routes.ts), the remote client builds its requests from
 * them (catalog/remote.ts), and a test holds docs/openapi.yaml to them.
 */
import { BLOCKS_PER_READ } from './wire.js';

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
}

export const CATALOG_PROTOCOL = {
  snapshots: { method: 'GET', path: '/v1/snapshots', role: 'read', maxBody: 0 },
  snapshot: { method: 'GET', path: '/v1/snapshots/{seq}', role: 'read', maxBody: 0 },
  version: { method: 'GET', path: '/v1/snapshots/{seq}/versions/{path}', role: 'read', maxBody: 0 },
  versions: { method: 'GET', path: '/v1/snapshots/{seq}/versions', role: 'read', maxBody: 0 },
  planRead: { method: 'GET', path: '/v1/paths/{path}/plan', role: 'read', maxBody: 0 },
  versionById: { method: 'GET', path: '/v1/versions/{version}', role: 'read', maxBody: 0 },
  pieces: { method: 'GET', path: '/v1/versions/{version}/pieces', role: 'read', maxBody: 0 },
  blockList: { method: 'GET', path: '/v1/versions/{version}/blocks', role: 'read', maxBody: 0 },
  toc: { method: 'GET', path: '/v1/versions/{version}/toc', role: 'read', maxBody: 0 },
  block: { method: 'GET', path: '/v1/blocks/{id}', role: 'read', maxBody: 0 },
  readBlocks: { method: 'POST', path: '/v1/blocks/read', role: 'read', maxBody: BLOCKS_PER_READ * 32 },
  missing: { method: 'POST', path: '/v1/blocks/missing', role: 'append', maxBody: MAX_IDS_BYTES },
  where: { method: 'POST', path: '/v1/blocks/where', role: 'append', maxBody: MAX_IDS_BYTES },
  spares: { method: 'GET', path: '/v1/blocks/{id}/spares', role: 'read', maxBody: 0 },
  putPack: { method: 'POST', path: '/v1/packs/{name}', role: 'append', maxBody: MAX_JSON_BYTES },
  startBackup: { method: 'POST', path: '/v1/backups', role: 'append', maxBody: MAX_JSON_BYTES },
  renewLease: { method: 'POST', path: '/v1/leases/{lease}/renew', role: 'append', maxBody: 0 },
  endLease: { method: 'DELETE', path: '/v1/leases/{lease}', role: 'append', maxBody: 0 },
  startMaintenance: { method: 'POST', path: '/v1/maintenance', role: 'admin', maxBody: MAX_JSON_BYTES },
  forget: { method: 'POST', path: '/v1/maintenance/{lease}/forget', role: 'admin', maxBody: MAX_JSON_BYTES },
  staleTocs: { method: 'GET', path: '/v1/maintenance/{lease}/stale', role: 'admin', maxBody: 0 },
  setVersionTocs: { method: 'POST', path: '/v1/maintenance/{lease}/tocs', role: 'admin', maxBody: MAX_JSON_BYTES },
  pruneMark: { method: 'POST', path: '/v1/maintenance/{lease}/prune', role: 'admin', maxBody: MAX_JSON_BYTES },
  pruneSweep: { method: 'POST', path: '/v1/maintenance/{lease}/sweep', role: 'admin', maxBody: MAX_JSON_BYTES },
  checkPacks: { method: 'GET', path: '/v1/check/packs', role: 'read', maxBody: 0 },
  checkTocs: { method: 'GET', path: '/v1/check/tocs', role: 'read', maxBody: 0 },
  packBlobs: { method: 'GET', path: '/v1/packs/{name}/blobs', role: 'read', maxBody: 0 },
  markChecked: { method: 'POST', path: '/v1/packs/{name}/checked', role: 'admin', maxBody: MAX_JSON_BYTES },
  checkPass: { method: 'POST', path: '/v1/check/pass', role: 'admin', maxBody: MAX_JSON_BYTES },
  damage: { method: 'POST', path: '/v1/check/damage', role: 'read', maxBody: MAX_JSON_BYTES },
  repair: { method: 'POST', path: '/v1/check/repair', role: 'admin', maxBody: MAX_JSON_BYTES },
  retained: { method: 'GET', path: '/v1/retained', role: 'read', maxBody: 0 },
  versionRecord: { method: 'GET', path: '/v1/versions/{version}/record', role: 'read', maxBody: 0 },
  snapshotRecord: { method: 'GET', path: '/v1/snapshots/{seq}/record', role: 'read', maxBody: 0 },
  setSnapshotRecord: { method: 'POST', path: '/v1/maintenance/{lease}/record', role: 'admin', maxBody: MAX_JSON_BYTES },
  beginSnapshot: { method: 'POST', path: '/v1/snapshots', role: 'append', maxBody: MAX_JSON_BYTES },
  storeVersions: { method: 'POST', path: '/v1/snapshots/{seq}/versions', role: 'append', maxBody: MAX_VERSIONS_BYTES },
  commitSnapshot: { method: 'POST', path: '/v1/snapshots/{seq}/commit', role: 'append', maxBody: MAX_JSON_BYTES },
} as const satisfies Record<string, ProtocolMethod>;

export type ProtocolName = keyof typeof CATALOG_PROTOCOL;

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
