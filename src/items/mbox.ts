/**
 * Messages of an mbox mailbox. A message begins with a "From " line at the
 * start of a line; lines of its text that began with "From " were written
 * with a ">" in front (mboxrd: ">From " became ">>From " and so on), which
 * reading undoes. Without a sealed item index (dataset.ts reads one when
 * the backup made it), messages are found by one pass over the file, which
 * stops as soon as what was asked for is known.
 */
import { notFound } from '../errors.js';
import { MboxScanner, type MboxMessage } from '../engine/snapshot-tree.js';
import type { RangeReader } from './reader.js';

export type { MboxMessage };

/**
 * The messages, in order, in one pass (engine/item-scan.ts finds them).
 * `until`, asked of each message once its size is known, ends the pass
 * when it says so (after yielding that message).
 */
export async function* mboxMessages(reader: RangeReader, until?: (m: MboxMessage) => boolean): AsyncGenerator<MboxMessage> {
  const scan = new MboxScanner();
  for await (const piece of reader.stream()) {
    for (const m of scan.push(piece)) {
      yield m;
      if (until?.(m)) return;
    }
  }
  const last = scan.end();
  if (last) yield last;
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
