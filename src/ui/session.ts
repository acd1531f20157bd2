/**
 * Who may use `strata ui`: the person who started it. It prints a URL with a
 * one-time token; the first request that brings it gets a session cookie
 * (HttpOnly, SameSite=Strict) and the token is spent. Every later request
 * must bring the cookie, a Host header naming this server (a page of another
 * site whose name was pointed at 127.0.0.1, DNS rebinding, sends its own
 * name), and no Origin of another site. Secrets are compared in constant
 * time and kept only as digests.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const COOKIE = 'strata_ui';

const digest = (s: string) => createHash('sha256').update(s).digest();
const secret = () => randomBytes(32).toString('base64url');

/** Whether `given` is the secret whose digest is `want`, in time independent of where they differ. */
function matches(given: string | undefined, want: Buffer | undefined): boolean {
  if (given === undefined || want === undefined) return false;
  return timingSafeEqual(digest(given), want);
}

export type Refusal = { status: 403 | 421; reason: string };

export class Sessions {
  /** The one-time token, printed once; undefined once spent. */
  private token: Buffer | undefined;
  private readonly sessions: Buffer[] = [];
  /** host:port forms a browser may send in Host (and, with the scheme, in Origin); none until the server listens. */
  private hosts: ReadonlySet<string> = new Set();

  /** The names this server answers to, with their port. */
  answerTo(hosts: readonly string[]): void {
    this.hosts = new Set(hosts.map((h) => h.toLowerCase()));
  }

  /** A new one-time token (the previous one, if unspent, no longer works). */
  issueToken(): string {
    const t = secret();
    this.token = digest(t);
    return t;
  }

  /** Spends the one-time token: a new session's cookie value, or undefined if `given` is not the token (or it was spent). */
  redeem(given: string): string | undefined {
    if (!matches(given, this.token)) return undefined;
    this.token = undefined;
    const s = secret();
    this.sessions.push(digest(s));
    return s;
  }

  /** Whether the request brings a session cookie this server gave. */
  hasSession(req: IncomingMessage): boolean {
    return this.session(req) !== undefined;
  }

  /** Which session the request's cookie names (a name for what the server keeps per session, not the secret), or undefined. */
  session(req: IncomingMessage): string | undefined {
    const c = cookieOf(req, COOKIE);
    // Every session is compared, so the time taken does not say which one nearly matched.
    let found: number | undefined;
    this.sessions.forEach((s, i) => {
      if (matches(c, s)) found = i;
    });
    return found === undefined ? undefined : `session ${found + 1}`;
  }

  /** Why a request may not be served whatever it brings (wrong Host, another site's Origin), or undefined. */
  foreign(req: IncomingMessage): Refusal | undefined {
    const host = req.headers.host?.toLowerCase();
    if (!host || !this.hosts.has(host)) return { status: 421, reason: 'this server does not answer to that host name' };
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${host}`) return { status: 403, reason: 'requests from other sites are refused' };
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return { status: 403, reason: 'requests from other sites are refused' };
    return undefined;
  }

  static cookieHeader(value: string): string {
    return `${COOKIE}=${value}; HttpOnly; SameSite=Strict; Path=/`;
  }
}

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
