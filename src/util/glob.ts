/**
 * Exclude patterns. A pattern without "/" matches a base name anywhere; one
 * with "/" matches the absolute path (a leading "/" anchors it, otherwise it
 * may match any trailing part). "*" stays within a name, "**" crosses "/",
 * "?" is one character, [abc] a class. A pattern that matches a directory
 * excludes everything below it.
 */
function toRegExp(glob: string): string {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        i++;
        if (glob[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const close = glob.indexOf(']', i + 1);
      if (close < 0) re += '\\[';
      else {
        let body = glob.slice(i + 1, close);
        if (body.startsWith('!')) body = '^' + body.slice(1);
        re += '[' + body.replace(/\\/g, '\\\\') + ']';
        i = close;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return re;
}

export class ExcludeMatcher {
  private readonly names: RegExp[] = [];
  private readonly paths: RegExp[] = [];

  /** `ignoringCase` patterns match without regard to case (--iexclude). */
  constructor(patterns: readonly string[], ignoringCase: readonly string[] = []) {
    for (const [list, flags] of [
      [patterns, ''],
      [ignoringCase, 'i'],
    ] as const) {
      for (const p of list) {
        const trimmed = p.length > 1 ? p.replace(/\/+$/, '') : p;
        if (!trimmed.includes('/')) this.names.push(new RegExp('^' + toRegExp(trimmed) + '$', flags));
        else if (trimmed.startsWith('/')) this.paths.push(new RegExp('^' + toRegExp(trimmed) + '$', flags));
        else this.paths.push(new RegExp('(?:^|/)' + toRegExp(trimmed) + '$', flags));
      }
    }
  }

  get empty(): boolean {
    return this.names.length === 0 && this.paths.length === 0;
  }

  /** True when the entry at absolute path `abs` (base name `name`) is excluded. */
  excludes(abs: string, name: string): boolean {
    return this.names.some((r) => r.test(name)) || this.paths.some((r) => r.test(abs));
  }
}
