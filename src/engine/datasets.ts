/**
 * Datasets told by their content, not their names: what the manifest lists
 * and what the item readers open (mailboxes, archives, databases, disk
 * images). Only the first bytes of a file are looked at (HEAD_BYTES), so a
 * backup can ask once per stored file at no cost.
 */

/** What detection reads of a file: enough for a tar header and a GPT header after the MBR. */
export const HEAD_BYTES = 4096;

export const DATASET_TYPES = ['mbox', 'zip', 'tar', 'sqlite', 'disk', 'qcow2'] as const;
export type DatasetType = (typeof DATASET_TYPES)[number];

export interface Detected {
  type: DatasetType;
  /** What it is, for a person: "zip archive (OpenDocument)", "disk image (GPT)". */
  what: string;
}

/** What type of dataset a file is, from its first bytes (up to HEAD_BYTES of them), or undefined. */
export function detectDataset(head: Uint8Array): Detected | undefined {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length >= 16 && b.toString('latin1', 0, 16) === 'SQLite format 3\0') return { type: 'sqlite', what: 'SQLite database' };
  if (b.length >= 4 && b.readUInt32BE(0) === 0x514649fb) return { type: 'qcow2', what: 'qcow2 disk image' };
  if (b.length >= 4 && (b.readUInt32BE(0) === 0x504b0304 || b.readUInt32BE(0) === 0x504b0506)) return { type: 'zip', what: zipWhat(b) };
  if (isMbox(b)) return { type: 'mbox', what: 'mbox mailbox' };
  if (isTar(b)) return { type: 'tar', what: 'tar archive' };
  // A file system image without a partition table: an ext2/3/4 superblock at 1024, or a FAT boot sector.
  if (b.length >= 1082 && b.readUInt16LE(1080) === 0xef53) return { type: 'disk', what: 'disk image (ext2/3/4 file system)' };
  if (b.length >= 512 && b[510] === 0x55 && b[511] === 0xaa && (/^FAT1[26]/.test(b.toString('latin1', 54, 59)) || b.toString('latin1', 82, 87) === 'FAT32')) {
    return { type: 'disk', what: 'disk image (FAT file system)' };
  }
  if (b.length >= 520 && b[510] === 0x55 && b[511] === 0xaa) {
    if (b.toString('latin1', 512, 520) === 'EFI PART') return { type: 'disk', what: 'disk image (GPT)' };
    if (hasMbrPartitions(b)) return { type: 'disk', what: 'disk image (MBR)' };
  }
  return undefined;
}

/** What a file is when it is not a dataset, for an error that says so: "gzip data", "empty", "text". */
export function describeContent(head: Uint8Array, size: number): string {
  const d = detectDataset(head);
  if (d) return `a ${d.what}`;
  if (size === 0) return 'empty';
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  for (const [magic, what] of OTHER) if (b.length >= magic.length && b.subarray(0, magic.length).equals(magic)) return what;
  const sample = b.subarray(0, 1024);
  if (sample.every((c) => c === 9 || c === 10 || c === 13 || (c >= 32 && c !== 127))) return 'text';
  return 'data of no known format';
}

const OTHER: [Buffer, string][] = [
  [Buffer.from([0x1f, 0x8b]), 'gzip data'],
  [Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), 'zstd data'],
  [Buffer.from('BZh'), 'bzip2 data'],
  [Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), 'xz data'],
  [Buffer.from([0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]), 'a 7-Zip archive'],
  [Buffer.from('%PDF-'), 'a PDF document'],
  [Buffer.from([0x89, 0x50, 0x4e, 0x47]), 'a PNG image'],
  [Buffer.from([0xff, 0xd8, 0xff]), 'a JPEG image'],
  [Buffer.from([0x7f, 0x45, 0x4c, 0x46]), 'an ELF executable'],
];

/** An mbox starts with a "From " line (sender, then a date with digits), and a header field follows. */
function isMbox(b: Buffer): boolean {
  const nl = b.indexOf(10);
  if (nl < 0 || nl > 1000) return false;
  if (!/^From \S+ +\S.*\d/.test(b.toString('latin1', 0, nl))) return false;
  return /^[!-9;-~]+:/.test(b.toString('latin1', nl + 1, Math.min(b.length, nl + 200)));
}

/** A tar header: a ustar magic, or a v7 header whose checksum is right. */
function isTar(b: Buffer): boolean {
  if (b.length < 512) return false;
  // ustar and GNU headers say so at 257; a v7 header has only its checksum.
  return checksumOk(b);
}

function checksumOk(b: Buffer): boolean {
  const field = b.toString('latin1', 148, 156).replace(/[\0 ]+$/g, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : b[i]!;
  return sum === parseInt(field, 8) && b[0] !== 0;
}

/** An MBR with a partition table: each entry's status 0 or 0x80, and at least one of a known size. */
function hasMbrPartitions(b: Buffer): boolean {
  let any = false;
  for (let i = 0; i < 4; i++) {
    const e = 446 + i * 16;
    const status = b[e]!;
    if (status !== 0 && status !== 0x80) return false;
    if (b[e + 4] !== 0 && b.readUInt32LE(e + 12) > 0) any = true;
  }
  return any;
}

/** Formats that are zips, told by the first entry's name (and an OpenDocument's or EPUB's mimetype). */
function zipWhat(b: Buffer): string {
  if (b.length < 30 || b.readUInt32BE(0) !== 0x504b0304) return 'zip archive';
  const nameLen = b.readUInt16LE(26);
  const extraLen = b.readUInt16LE(28);
  const name = b.toString('latin1', 30, Math.min(b.length, 30 + nameLen));
  if (name === 'mimetype') {
    const at = 30 + nameLen + extraLen;
    const mime = b.toString('latin1', at, Math.min(b.length, at + 80));
    if (mime.startsWith('application/epub+zip')) return 'zip archive (EPUB)';
    if (mime.startsWith('application/vnd.oasis.opendocument')) return 'zip archive (OpenDocument)';
  }
  if (name === '[Content_Types].xml' || name.startsWith('_rels/')) return 'zip archive (Office Open XML)';
  if (name.startsWith('META-INF/')) return 'zip archive (Java archive)';
  return 'zip archive';
}
