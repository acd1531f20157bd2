/**
 * Items of the formats that carry no index of their own, found in one pass
 * over their bytes: the messages of an mbox mailbox and the entries of a tar
 * archive. The same code finds them at backup, to seal an item index
 * (item-index.ts), and at read time in a snapshot that has none, so both
 * agree to the byte.
 *
 * An mbox message begins with a "From " line at the start of a line; it
 * runs to the next one. A tar archive is 512-byte headers, each giving the
 * size of the data after it: ustar (the name's prefix field), GNU long names
 * and links ('L', 'K') and pax extended headers ('x'; 'g' for all that
 * follow) are read; a header whose checksum is wrong is an integrity error.
 */
import { integrity } from '../errors.js';
import { headerFields } from './mail-headers.js';

export interface MboxMessage {
  /** 1 for the first message. */
  number: number;
  /** Where its "From " line starts. */
  offset: number;
  /** Bytes from its "From " line to the next message. */
  size: number;
  date?: string;
  from?: string;
  subject?: string;
  messageId?: string;
}

/** Headers longer than this are cut when listing (the message itself is never cut). */
const HEADER_LIMIT = 64 * 1024;
const FROM_LINE = Buffer.from('\nFrom ');

/**
 * Messages of an mbox from bytes pushed in order, from `start` (0, or where
 * a message is known to begin), numbered on from `number`.
 */
export class MboxScanner {
  private current: { offset: number; header: Buffer[]; headerBytes: number; done: boolean; nl: number; tail: Buffer } | undefined;
  private tail = Buffer.alloc(0);
  private pos: number;

  constructor(
    private readonly start = 0,
    private number = 0,
  ) {
    this.pos = start;
  }

  /** Where the next byte pushed belongs. */
  get position(): number {
    return this.pos;
  }

  /** The messages this piece ended, in order. */
  push(piece: Buffer): MboxMessage[] {
    const out: MboxMessage[] = [];
    const pos = this.pos;
    const tail = this.tail;
    // Starts of messages in this piece: "\nFrom " here, or across the joint with the last piece.
    const starts: number[] = [];
    if (pos === this.start && piece.length >= 5 && piece.toString('latin1', 0, 5) === 'From ') starts.push(pos);
    const joint = Buffer.concat([tail, piece.subarray(0, 5)]);
    for (let i = joint.indexOf(FROM_LINE); i >= 0 && i < tail.length; i = joint.indexOf(FROM_LINE, i + 1)) starts.push(pos - tail.length + i + 1);
    for (let i = piece.indexOf(FROM_LINE); i >= 0; i = piece.indexOf(FROM_LINE, i + 1)) starts.push(pos + i + 1);
    let at = pos;
    for (const s of starts) {
      // A start across the joint: its first bytes went to the message before, and are given to it again.
      if (s > at) this.take(piece.subarray(at - pos, s - pos));
      if (this.current) out.push(this.finish(s));
      this.current = { offset: s, header: [], headerBytes: 0, done: false, nl: -1, tail: Buffer.alloc(0) };
      // A start across the joint: "From" seen at the end of the last piece; it holds no line feed.
      if (s < pos) {
        this.current.header.push(Buffer.from(tail.subarray(tail.length - (pos - s))));
        this.current.headerBytes = pos - s;
      }
      at = Math.max(s, pos);
    }
    this.take(piece.subarray(at - pos));
    this.tail = Buffer.from(piece.length >= 5 ? piece.subarray(piece.length - 5) : Buffer.concat([tail, piece]).subarray(-5));
    this.pos += piece.length;
    return out;
  }

  /** The last message, once every byte has been pushed. */
  end(): MboxMessage | undefined {
    if (!this.current) return undefined;
    const m = this.finish(this.pos);
    this.current = undefined;
    return m;
  }

  private finish(end: number): MboxMessage {
    const c = this.current!;
    this.number++;
    return { number: this.number, offset: c.offset, size: end - c.offset, ...headerFields(headerOf(Buffer.concat(c.header))) };
  }

  /**
   * Keeps the bytes of the current message's header: up to the end of its
   * first blank line after the "From " line (or HEADER_LIMIT), and no more,
   * so a body is never copied.
   */
  private take(piece: Buffer): void {
    const c = this.current;
    if (!c || c.done) return;
    const part = piece.subarray(0, HEADER_LIMIT - c.headerBytes);
    let from = 0;
    if (c.nl < 0) {
      const i = part.indexOf(10);
      from = i < 0 ? part.length : i + 1;
      if (i >= 0) c.nl = c.headerBytes + i;
    }
    let end = -1;
    if (c.nl >= 0 && from < part.length) {
      // A blank line across the joint with what was kept, then one in this part.
      const joint = Buffer.concat([c.tail, part.subarray(from, from + 3)]);
      const j = firstBlank(joint, 0);
      if (j >= 0 && j < c.tail.length) end = from + blankEnd(joint, j) - c.tail.length;
      else {
        const k = firstBlank(part, from);
        if (k >= 0) end = blankEnd(part, k);
      }
    }
    const kept = end >= 0 ? part.subarray(0, end) : part;
    c.header.push(Buffer.from(kept));
    c.headerBytes += kept.length;
    if (c.nl >= 0) c.tail = Buffer.from(Buffer.concat([c.tail, kept.subarray(Math.max(from, kept.length - 3))]).subarray(-3));
    if (end >= 0 || c.headerBytes >= HEADER_LIMIT) c.done = true;
  }
}

/** Where the first blank line ("\n\n" or "\r\n\r\n") in `b` from `from` begins, or -1. */
function firstBlank(b: Buffer, from: number): number {
  const a = b.indexOf('\n\n', from);
  const c = b.indexOf('\r\n\r\n', from);
  if (a < 0) return c;
  return c < 0 ? a : Math.min(a, c);
}

/** The end of the blank line that begins at `at`. */
function blankEnd(b: Buffer, at: number): number {
  return at + (b[at] === 13 ? 4 : 2);
}

/** A message's header: from after its "From " line to the first blank line. */
function headerOf(b: Buffer): Buffer {
  const nl = b.indexOf(10);
  const rest = nl < 0 ? Buffer.alloc(0) : b.subarray(nl + 1);
  const blank = blankLine(rest);
  return blank < 0 ? rest : rest.subarray(0, blank);
}

function blankLine(b: Buffer): number {
  const a = b.indexOf('\n\n');
  const c = b.indexOf('\r\n\r\n');
  if (a < 0) return c;
  return c < 0 ? a : Math.min(a, c);
}


export interface TarEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Where its header starts, and where its data does. */
  offset: number;
  dataOffset: number;
  linkname?: string;
}

export const TAR_BLOCK = 512;
/** The longest GNU long name or pax header read (a larger one is no tar this reads). */
const META_LIMIT = 1024 * 1024;

/** What one tar header says: the end of the archive, metadata to read for the next entry, or an entry. */
export type TarStep = { end: true } | { end: false; meta: number; next: number } | { end: false; entry: TarEntry; next: number };

/**
 * The walk along a tar archive's headers, each given in turn (`header`),
 * with the metadata a header announces given next (`meta`). It keeps what
 * long names and pax headers carry over to the entry they precede.
 */
export class TarWalk {
  private longName: string | undefined;
  private longLink: string | undefined;
  private pax: Record<string, string> = {};
  private global: Record<string, string> = {};
  private flag = '';
  private at = 0;
  /** Whether a pax global header ('g') was seen: it changes every entry after it. */
  sawGlobal = false;

  constructor(private readonly path: string) {}

  /** The 512 bytes of the header at `at`. */
  header(h: Buffer, at: number): TarStep {
    if (h.every((c) => c === 0)) return { end: true };
    checkTarHeader(h, at, this.path);
    const size = tarNumber(h, 124, 12);
    const flag = String.fromCharCode(h[156]!);
    const dataOffset = at + TAR_BLOCK;
    if (flag === 'L' || flag === 'K' || flag === 'x' || flag === 'g') {
      if (size > META_LIMIT) throw integrity(`${this.path}: a tar header at ${at} says ${size} bytes of metadata follow`);
      this.flag = flag;
      this.at = at;
      return { end: false, meta: size, next: dataOffset + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK };
    }
    const p = { ...this.global, ...this.pax };
    const prefix = h.toString('latin1', 257, 262) === 'ustar' ? cString(h.subarray(345, 500)) : '';
    const base = cString(h.subarray(0, 100));
    const name = p.path ?? this.longName ?? (prefix ? `${prefix}/${base}` : base);
    const realSize = p.size !== undefined ? Number(p.size) : size;
    const linkname = p.linkpath ?? this.longLink ?? cString(h.subarray(157, 257));
    const entry: TarEntry = {
      name,
      type: flag === '5' ? 'dir' : flag === '2' ? 'symlink' : flag === '1' ? 'hardlink' : flag === '0' || flag === '\0' || flag === '7' ? 'file' : 'other',
      size: realSize,
      mtime: p.mtime !== undefined ? Number(p.mtime) : tarNumber(h, 136, 12),
      offset: at,
      dataOffset,
      ...(linkname && (flag === '1' || flag === '2') ? { linkname } : {}),
    };
    if (!Number.isSafeInteger(entry.size) || entry.size < 0) throw integrity(`${this.path}: the tar entry at ${at} has no size a file can have`);
    this.longName = this.longLink = undefined;
    this.pax = {};
    return { end: false, entry, next: dataOffset + Math.ceil(realSize / TAR_BLOCK) * TAR_BLOCK };
  }

  /** The metadata the last header announced. */
  meta(b: Buffer): void {
    if (this.flag === 'L') this.longName = cString(b);
    else if (this.flag === 'K') this.longLink = cString(b);
    else if (this.flag === 'x') this.pax = paxRecords(b, this.at, this.path);
    else {
      this.global = { ...this.global, ...paxRecords(b, this.at, this.path) };
      this.sawGlobal = true;
    }
  }
}

/**
 * Entries of a tar archive from bytes pushed in order, from `start` (0, or
 * where a header is known to begin). Data is skipped, headers and metadata
 * kept until whole.
 */
export class TarScanner {
  readonly walk: TarWalk;
  private pos: number;
  /** Where the next header begins, and what is being gathered there. */
  private next: number;
  private need: { kind: 'header' | 'meta'; length: number; parts: Buffer[]; got: number } | undefined;
  /** The end of the archive (two zero blocks), once seen. */
  ended = false;

  constructor(path: string, start = 0) {
    this.walk = new TarWalk(path);
    this.pos = start;
    this.next = start;
  }

  /** The entries whose headers this piece completed. */
  push(piece: Buffer): TarEntry[] {
    const out: TarEntry[] = [];
    let i = 0;
    while (i < piece.length && !this.ended) {
      const at = this.pos + i;
      if (!this.need) {
        if (at < this.next) {
          i += Math.min(piece.length - i, this.next - at);
          continue;
        }
        this.need = { kind: 'header', length: TAR_BLOCK, parts: [], got: 0 };
      }
      const n = this.need;
      const take = Math.min(piece.length - i, n.length - n.got);
      n.parts.push(Buffer.from(piece.subarray(i, i + take)));
      n.got += take;
      i += take;
      if (n.got < n.length) continue;
      const bytes = Buffer.concat(n.parts);
      this.need = undefined;
      if (n.kind === 'meta') {
        this.walk.meta(bytes);
        continue;
      }
      const step = this.walk.header(bytes, this.next);
      if (step.end) {
        this.ended = true;
        break;
      }
      this.next = step.next;
      if ('meta' in step) {
        if (step.meta > 0) this.need = { kind: 'meta', length: step.meta, parts: [], got: 0 };
        else this.walk.meta(Buffer.alloc(0));
      } else out.push(step.entry);
    }
    this.pos += piece.length;
    return out;
  }

  /** Where the header after the last entry begins. */
  get nextHeader(): number {
    return this.next;
  }
}

function checkTarHeader(h: Buffer, at: number, path: string): void {
  const stored = tarNumber(h, 148, 8);
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  if (sum !== stored) throw integrity(`${path}: the tar header at ${at} is damaged (checksum ${stored}, its bytes sum to ${sum})`);
}

/** An octal field, or a GNU base-256 one (high bit set). */
function tarNumber(h: Buffer, at: number, len: number): number {
  if (h[at]! & 0x80) {
    let n = 0;
    for (let i = 1; i < len; i++) n = n * 256 + h[at + i]!;
    return n;
  }
  const s = h.toString('latin1', at, at + len).replace(/\0.*$/s, '').trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function cString(b: Buffer): string {
  const z = b.indexOf(0);
  // Names in archives are UTF-8 nearly always now.
  return b.subarray(0, z < 0 ? b.length : z).toString('utf8');
}

/** Records "LEN key=value\n" (POSIX pax). */
function paxRecords(b: Buffer, at: number, path: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < b.length) {
    const sp = b.indexOf(0x20, i);
    const len = sp < 0 ? NaN : Number(b.toString('latin1', i, sp));
    if (!Number.isSafeInteger(len) || len <= 0 || i + len > b.length) throw integrity(`${path}: the pax header at ${at} is damaged`);
    const rec = b.toString('utf8', sp + 1, i + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}

/** A tar entry's name as looked up: a leading "./" or "/" and a trailing "/" aside. */
export const plainTarName = (n: string) => n.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');
