/**
 * The few header fields a list of messages shows (RFC 5322): unfolded, and
 * encoded words (RFC 2047, "=?utf-8?B?...?=") decoded for a person to read.
 */

export interface HeaderFields {
  date?: string;
  from?: string;
  subject?: string;
  messageId?: string;
}

const WANTED: Record<string, keyof HeaderFields> = { date: 'date', from: 'from', subject: 'subject', 'message-id': 'messageId' };

export function headerFields(header: Buffer): HeaderFields {
  const out: HeaderFields = {};
  // Header text is ASCII; anything else is taken as UTF-8, as most mail is now.
  const text = header.toString('utf8').replace(/\r\n/g, '\n').replace(/\n[ \t]+/g, ' ');
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const key = WANTED[line.slice(0, colon).trim().toLowerCase()];
    if (!key || out[key] !== undefined) continue;
    const value = line.slice(colon + 1).trim();
    out[key] = key === 'messageId' ? value.replace(/^<|>$/g, '') : decodeWords(value);
  }
  return out;
}

/** RFC 2047 encoded words; white space between two of them goes. */
export function decodeWords(value: string): string {
  return value.replace(/(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)\s+(?==\?)/g, '$1').replace(/=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g, (word, charset: string, enc: string, data: string) => {
    const bytes = enc.toUpperCase() === 'B' ? Buffer.from(data, 'base64') : Buffer.from(data.replace(/_/g, ' ').replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
    try {
      return new TextDecoder(charset.replace(/\*.*$/, '').toLowerCase()).decode(bytes);
    } catch {
      return word;
    }
  });
}
