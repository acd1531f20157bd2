/**
 * Messages of an mbox mailbox. A message begins with a "From " line at the
 * start of a line; lines of its text that began with "From " were written
 * with a ">" in front (mboxrd: ">From " became ">>From " and so on), which
 * reading undoes. An mbox has no index: its messages are found by one pass
 * over the file, which stops as soon as what was asked for is known.
 */
import { notFound } from '../errors.js';
import { headerFields } from './headers.js';
import type { RangeReader } from './reader.js';

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
 * The messages, in order. `until`, asked of each message once its size is
 * known, ends the pass when it says so (after yielding that message).
 */
export async function* mboxMessages(reader: RangeReader, until?: (m: MboxMessage) => boolean): AsyncGenerator<MboxMessage> {
  let current: { offset: number; header: Buffer[]; headerBytes: number; done: boolean } | undefined;
  let number = 0;
  let tail = Buffer.alloc(0);
  let pos = 0;
  const finish = (end: number): MboxMessage => {
    const c = current!;
    number++;
    return { number, offset: c.offset, size: end - c.offset, ...headerFields(headerOf(Buffer.concat(c.header))) };
  };
  const take = (piece: Buffer) => {
    const c = current;
    if (!c || c.done) return;
    const part = Buffer.from(piece.subarray(0, HEADER_LIMIT - c.headerBytes));
    c.header.push(part);
    c.headerBytes += part.length;
    if (c.headerBytes >= HEADER_LIMIT || hasBlankLine(Buffer.concat(c.header))) c.done = true;
  };
  for await (const piece of reader.stream()) {
    // Starts of messages in this piece: "\nFrom " here, or across the joint with the last piece.
    const starts: number[] = [];
    if (pos === 0 && piece.length >= 5 && piece.toString('latin1', 0, 5) === 'From ') starts.push(0);
    const joint = Buffer.concat([tail, piece.subarray(0, 5)]);
    for (let i = joint.indexOf(FROM_LINE); i >= 0 && i < tail.length; i = joint.indexOf(FROM_LINE, i + 1)) starts.push(pos - tail.length + i + 1);
    for (let i = piece.indexOf(FROM_LINE); i >= 0; i = piece.indexOf(FROM_LINE, i + 1)) starts.push(pos + i + 1);
    let at = pos;
    for (const s of starts) {
      // A start across the joint: its first bytes went to the message before, and are given to it again.
      if (s > at) take(piece.subarray(at - pos, s - pos));
      if (current) {
        const m = finish(s);
        yield m;
        if (until?.(m)) return;
      }
      current = { offset: s, header: [], headerBytes: 0, done: false };
      if (s < pos) {
        current.header.push(Buffer.from(tail.subarray(tail.length - (pos - s))));
        current.headerBytes = pos - s;
      }
      at = Math.max(s, pos);
    }
    take(piece.subarray(at - pos));
    tail = Buffer.from(piece.length >= 5 ? piece.subarray(piece.length - 5) : Buffer.concat([tail, piece]).subarray(-5));
    pos += piece.length;
  }
  if (current) {
    const m = finish(pos);
    yield m;
  }
}

/** The message an ITEM names: a number (1 for the first), or a Message-ID (with or without its angle brackets). */
export async function findMessage(reader: RangeReader, item: string): Promise<MboxMessage> {
  if (/^[0-9]+$/.test(item)) {
    const n = Number(item);
    for await (const m of mboxMessages(reader, (m) => m.number >= n)) if (m.number === n) return m;
    throw notFound(`${reader.path} has no message ${item}`);
  }
  const id = item.replace(/^<|>$/g, '');
  for await (const m of mboxMessages(reader, (m) => m.messageId === id)) if (m.messageId === id) return m;
  throw notFound(`${reader.path} has no message with Message-ID <${id}>`);
}

/**
 * A message as RFC 822 text: without its "From " line and the blank line
 * that ends it in the mailbox, with one ">" taken from lines that were
 * escaped (">From ", ">>From "...). Streamed a piece at a time.
 */
export async function* messageBytes(reader: RangeReader, m: MboxMessage): AsyncGenerator<Buffer> {
  const end = m.offset + m.size;
  const head = await reader.read(m.offset, Math.min(m.size, 4096));
  const nl = head.indexOf(10);
  let start = nl < 0 ? end : m.offset + nl + 1;
  if (nl < 0 && m.size > head.length) {
    // A "From " line longer than 4 KiB: find its end.
    for (start = m.offset + head.length; start < end; start += 4096) {
      const b = await reader.read(start, Math.min(4096, end - start));
      const i = b.indexOf(10);
      if (i >= 0) {
        start += i + 1;
        break;
      }
    }
  }
  // The blank line a writer puts between messages is not the message's.
  let stop = end;
  if (end - start >= 2) {
    const last = await reader.read(end - 2, 2);
    if (last[0] === 10 && last[1] === 10) stop = end - 1;
    else if (end - start >= 4 && (await reader.read(end - 4, 4)).toString('latin1') === '\r\n\r\n') stop = end - 2;
  }
  // The start of a line not yet known to be escaped or not (">>Fr" at a piece's end).
  let pending: Buffer | undefined;
  let passing = false;
  for await (const piece of reader.stream(Math.min(start, stop), stop)) {
    let i = 0;
    while (i < piece.length) {
      const nl = piece.indexOf(10, i);
      const seg = nl < 0 ? piece.subarray(i) : piece.subarray(i, nl + 1);
      if (passing) yield Buffer.from(seg);
      else {
        const line = pending ? Buffer.concat([pending, seg]) : Buffer.from(seg);
        pending = undefined;
        if (nl < 0 && undecided(line)) pending = line;
        else {
          yield unescapeLine(line);
          passing = nl < 0;
        }
      }
      if (nl < 0) break;
      passing = false;
      i = nl + 1;
    }
  }
  if (pending) yield pending;
}

/** Whether the start of a line may yet turn out to be ">…>From ": only ">" so far, then a beginning of "From ". */
function undecided(start: Buffer): boolean {
  let i = 0;
  while (i < start.length && start[i] === 0x3e) i++;
  if (i === 0) return false;
  const rest = start.toString('latin1', i, i + 5);
  return rest.length < 5 && 'From '.startsWith(rest);
}

function unescapeLine(line: Buffer): Buffer {
  let i = 0;
  while (i < line.length && line[i] === 0x3e) i++;
  return i > 0 && line.toString('latin1', i, i + 5) === 'From ' ? line.subarray(1) : line;
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

function hasBlankLine(b: Buffer): boolean {
  const nl = b.indexOf(10);
  return nl >= 0 && blankLine(b.subarray(nl + 1)) >= 0;
}
