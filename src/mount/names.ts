/**
 * Names that are not UTF-8. Inside strata such a name keeps each odd byte as
 * a lone surrogate (util/names.ts), but FUSE hands names over as UTF-8 text,
 * where a lone surrogate cannot go. The mount shows each such byte as the
 * four characters \xNN (as `strata ls` does), and takes that spelling back.
 */
const ESCAPED_ALL = /[\uDC80-\uDCFF]/gu;
const SHOWN_ALL = /\\x([89a-f][0-9a-f])/gi;

/** A stored name as the mount lists it. */
export function shownName(name: string): string {
  return name.replace(ESCAPED_ALL, (c) => `\\x${(c.charCodeAt(0) - 0xdc00).toString(16).padStart(2, '0')}`);
}

/** The stored path a path of the mount may stand for, besides itself (undefined when none). */
export function storedPath(p: string): string | undefined {
  if (!SHOWN_ALL.test(p)) return undefined;
  SHOWN_ALL.lastIndex = 0;
  return p.replace(SHOWN_ALL, (_, hex: string) => String.fromCharCode(0xdc00 + parseInt(hex, 16)));
}
