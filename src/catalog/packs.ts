/**
 * Pack files as the catalog knows them: the magic at each end, and where a
 * blob lies in one (the pack's index, sealed, is repo/pack.ts's).
 */
import type { BlobKind } from './catalog.js';

export const PACK_MAGIC = Buffer.from('STRATAPK');

export const PACK_END = Buffer.from('STRATAPE');

export interface PackEntry {
  id: Buffer;
  kind: BlobKind;
  offset: number;
  length: number;
  size: number;
}
