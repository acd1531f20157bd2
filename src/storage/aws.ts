/**
 * What an S3 request needs besides the bytes: where the endpoint is, which
 * region and credentials to sign with (as the AWS tools find them), and the
 * signature itself (AWS Signature Version 4, written here with node:crypto:
 * a few dozen lines, where a library would bring its own idea of where
 * credentials come from and its own supported Node versions).
 *
 * Found in this order, each setting on its own:
 * - credentials: options, then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
 *   (and AWS_SESSION_TOKEN), then the profile AWS_PROFILE (else "default")
 *   in ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE), then in ~/.aws/config
 *   (AWS_CONFIG_FILE, "[profile NAME]" sections);
 * - region: options, AWS_REGION, AWS_DEFAULT_REGION, the profile's region,
 *   else us-east-1;
 * - endpoint: options, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's
 *   endpoint_url, else AWS's own for the region.
 */
import { createHash, createHmac } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StrataError, usageError } from '../errors.js';

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3Settings {
  endpoint: URL;
  region: string;
  credentials: Credentials;
}

export interface S3SettingsOptions {
  endpoint?: string;
  region?: string;
  credentials?: Credentials;
  profile?: string;
  /** The environment to read (process.env unless told). */
  env?: NodeJS.ProcessEnv;
}

/** A file of INI sections ("[name]" then "key = value" lines), as the AWS tools write them. */
export function parseIni(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let section: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (head) {
      section = out.get(head[1]!) ?? new Map();
      out.set(head[1]!, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (section && eq > 0) section.set(line.slice(0, eq).trim().toLowerCase(), line.slice(eq + 1).trim());
  }
  return out;
}

function readIni(file: string): Map<string, Map<string, string>> {
  try {
    return parseIni(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw usageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Where an S3 repository is and how to sign for it, from options, the environment and the AWS files. */
export function s3Settings(opts: S3SettingsOptions = {}): S3Settings {
  const env = opts.env ?? process.env;
  const home = env.HOME || os.homedir();
  const profile = opts.profile ?? env.AWS_PROFILE ?? 'default';
  const credFile = readIni(env.AWS_SHARED_CREDENTIALS_FILE || path.join(home, '.aws', 'credentials'));
  const configFile = readIni(env.AWS_CONFIG_FILE || path.join(home, '.aws', 'config'));
  const fromCreds = credFile.get(profile);
  const fromConfig = configFile.get(profile === 'default' ? 'default' : `profile ${profile}`) ?? configFile.get(profile);
  const setting = (key: string) => fromCreds?.get(key) || fromConfig?.get(key) || undefined;

  let credentials = opts.credentials;
  if (!credentials && env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    credentials = { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) };
  }
  if (!credentials) {
    const id = setting('aws_access_key_id');
    const secret = setting('aws_secret_access_key');
    const token = setting('aws_session_token');
    if (id && secret) credentials = { accessKeyId: id, secretAccessKey: secret, ...(token ? { sessionToken: token } : {}) };
  }
  if (!credentials) {
    throw new StrataError(
      'unauthorized',
      `no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put profile "${profile}" in ~/.aws/credentials (AWS_PROFILE chooses another)`,
    );
  }
  const region = opts.region || env.AWS_REGION || env.AWS_DEFAULT_REGION || setting('region') || 'us-east-1';
  const where = opts.endpoint || env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || setting('endpoint_url') || `https://s3.${region}.amazonaws.com`;
  let endpoint: URL;
  try {
    endpoint = new URL(where);
  } catch {
    throw usageError(`S3 endpoint ${where} is not a URL`);
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw usageError(`S3 endpoint ${where} is not an http(s) URL`);
  return { endpoint, region, credentials };
}

const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();

export const EMPTY_SHA256 = sha256('');

/** RFC 3986 encoding, as SigV4 wants it: everything but unreserved characters. */
export function uriEncode(s: string, keepSlash = false): string {
  const out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepSlash ? out.replace(/%2F/g, '/') : out;
}

export interface SignedRequest {
  /** The path, already encoded (each segment with uriEncode). */
  path: string;
  /** Query parameters, unencoded. */
  query: Record<string, string>;
  headers: Record<string, string>;
}

/**
 * Signs a request: adds x-amz-date, x-amz-content-sha256, the session token
 * and Authorization to `headers`, and returns the path with its query.
 * Signed headers are host and the x-amz-* ones; `payloadHash` is the body's
 * SHA-256 in hex (EMPTY_SHA256 for none).
 */
export function signRequest(settings: S3Settings, method: string, req: SignedRequest, payloadHash: string, now = new Date()): string {
  const { credentials, region, endpoint } = settings;
  const amzDate = now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  req.headers['x-amz-date'] = amzDate;
  req.headers['x-amz-content-sha256'] = payloadHash;
  if (credentials.sessionToken) req.headers['x-amz-security-token'] = credentials.sessionToken;
  const signed: [string, string][] = [['host', endpoint.host]];
  for (const [k, v] of Object.entries(req.headers)) if (k.toLowerCase().startsWith('x-amz-')) signed.push([k.toLowerCase(), v.trim()]);
  signed.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const query = Object.keys(req.query)
    .sort()
    .map((k) => `${uriEncode(k)}=${uriEncode(req.query[k]!)}`)
    .join('&');
  const canonical = [method, req.path, query, signed.map(([k, v]) => `${k}:${v}\n`).join(''), signed.map(([k]) => k).join(';'), payloadHash].join('\n');
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${credentials.secretAccessKey}`, day), region), 's3'), 'aws4_request');
  const signature = createHmac('sha256', key).update(toSign).digest('hex');
  req.headers.Authorization = `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signed.map(([k]) => k).join(';')}, Signature=${signature}`;
  return query ? `${req.path}?${query}` : req.path;
}
