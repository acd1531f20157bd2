/**
 * Access tokens of a strata server. A token is 32 random bytes shown once as
 * `strata_` + base64url; the server keeps only its SHA-256 (a token has full
 * entropy, so a fast hash is enough: there is nothing to guess). The list
 * lives in DIR/server/tokens.json, rewritten atomically with mode 0600.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StrataError, usageError } from '../errors.js';

/** What a token may do; each role includes the ones before it. */
export const ROLES = ['read', 'append', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

export function roleAllows(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

export interface TokenEntry {
  name: string;
  role: Role;
  created: string;
  /** Hex SHA-256 of the token string. */
  sha256: string;
}

interface TokenFile {
  strata: 'tokens';
  version: 1;
  tokens: TokenEntry[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;
const PREFIX = 'strata_';
/** The longest string worth hashing: a real token is 50 characters. */
const MAX_TOKEN_LENGTH = 256;

export function serverDir(repoDir: string): string {
  return path.join(path.resolve(repoDir), 'server');
}

export function checkTokenName(name: string): void {
  if (!NAME.test(name)) {
    throw usageError(`invalid token name ${JSON.stringify(name)}: use 1 to 64 letters, digits, ".", "_", "-" or "@", starting with a letter or digit`);
  }
}

const hash = (token: string) => createHash('sha256').update(token, 'utf8').digest();

export class TokenStore {
  readonly file: string;
  private cached?: { mtimeMs: number; size: number; ino: number; entries: TokenEntry[] };

  constructor(repoDir: string) {
    this.file = path.join(serverDir(repoDir), 'tokens.json');
  }

  /** The stored tokens (hashes, never the tokens themselves). */
  list(): TokenEntry[] {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StrataError('tokens', `cannot read ${this.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let parsed: TokenFile;
    try {
      parsed = JSON.parse(text) as TokenFile;
    } catch {
      throw new StrataError('tokens', `${this.file} is not valid JSON`);
    }
    if (parsed?.strata !== 'tokens' || !Array.isArray(parsed.tokens)) throw new StrataError('tokens', `${this.file} is not a strata token list`);
    return parsed.tokens.filter(
      (t) => typeof t?.name === 'string' && typeof t.sha256 === 'string' && /^[0-9a-f]{64}$/.test(t.sha256) && isRole(String(t.role)),
    );
  }

  /** Creates a token and returns it: the only time it is ever seen. */
  add(name: string, role: Role): { entry: TokenEntry; token: string } {
    checkTokenName(name);
    const tokens = this.list();
    if (tokens.some((t) => t.name === name)) throw new StrataError('exists', `a token named ${name} already exists (revoke it first to replace it)`);
    const token = PREFIX + randomBytes(32).toString('base64url');
    const entry: TokenEntry = { name, role, created: new Date().toISOString(), sha256: hash(token).toString('hex') };
    this.write([...tokens, entry]);
    return { entry, token };
  }

  revoke(name: string): TokenEntry {
    const tokens = this.list();
    const entry = tokens.find((t) => t.name === name);
    if (!entry) throw new StrataError('not_found', `no token named ${JSON.stringify(name)}`);
    this.write(tokens.filter((t) => t !== entry));
    return entry;
  }

  /**
   * The token entry a presented token belongs to. The file is read again when
   * it changed, so `token add` and `token revoke` apply to a running server at
   * once. Every stored hash is compared in constant time.
   */
  verify(token: string): TokenEntry | undefined {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return undefined;
    const presented = hash(token);
    let found: TokenEntry | undefined;
    for (const t of this.current()) {
      if (timingSafeEqual(presented, Buffer.from(t.sha256, 'hex')) && !found) found = t;
    }
    return found;
  }

  private current(): TokenEntry[] {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.file);
    } catch {
      this.cached = undefined;
      return [];
    }
    const c = this.cached;
    if (c && c.mtimeMs === st.mtimeMs && c.size === st.size && c.ino === st.ino) return c.entries;
    let entries: TokenEntry[];
    try {
      entries = this.list();
    } catch {
      // A damaged list admits nobody rather than stopping the server.
      entries = [];
    }
    this.cached = { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, entries };
    return entries;
  }

  private write(tokens: TokenEntry[]): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const body: TokenFile = { strata: 'tokens', version: 1, tokens };
    const tmp = `${this.file}.tmp-${randomBytes(8).toString('hex')}`;
    const fd = fs.openSync(tmp, 'wx', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(body, null, 2) + '\n');
      fs.fsyncSync(fd);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    fs.closeSync(fd);
    fs.renameSync(tmp, this.file);
  }
}
