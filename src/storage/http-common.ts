/** What the HTTP clients of stores (a strata server, S3) share: writing a body, reading a HEAD answer, where a host is. */
import type * as http from 'node:http';
import { BlockList, isIP } from 'node:net';
import { StorageError, type Handle } from './storage.js';

export { drained } from '../util/drained.js';

/** An object's size and time from a HEAD answer's headers; `where` names the store in the error. */
export function headStat(headers: http.IncomingHttpHeaders, where: string, h: Handle): { size: number; mtimeMs: number } {
  const size = Number(headers['content-length']);
  const mtimeMs = Date.parse(String(headers['last-modified']));
  if (!Number.isSafeInteger(size) || Number.isNaN(mtimeMs)) throw new StorageError('io', `${where}: no size or time for ${h.kind} ${h.name}`);
  return { size, mtimeMs };
}

/** This machine and private networks (RFC 1918, RFC 4193, link-local). */
const NEARBY = new BlockList();
for (const [net, prefix] of [['127.0.0.0', 8], ['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['169.254.0.0', 16]] as const) NEARBY.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [['::1', 128], ['fc00::', 7], ['fe80::', 10]] as const) NEARBY.addSubnet(net, prefix, 'ipv6');

/** Whether an address (v4 or v6) is on this machine or a private network, where a new connection costs a fraction of a millisecond. */
export function nearbyAddress(address: string): boolean {
  const v = isIP(address);
  if (v === 0) return false;
  // An IPv4 address written as IPv6 (::ffff:10.0.0.1) is the IPv4 one.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? NEARBY.check(mapped[1]!, 'ipv4') : NEARBY.check(address, v === 4 ? 'ipv4' : 'ipv6');
}

/** Whether a URL's host (a name is looked up, as a connection would) is nearby (nearbyAddress); false if it cannot be told. */
export async function nearbyHost(hostname: string): Promise<boolean> {
  const host = hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0) return nearbyAddress(host);
  try {
    const { lookup } = await import('node:dns/promises');
    const found = await lookup(host, { all: true });
    return found.length > 0 && found.every((a) => nearbyAddress(a.address));
  } catch {
    return false;
  }
}
