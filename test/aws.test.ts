/**
 * What an S3 request is signed with (src/storage/aws.ts): the settings as
 * the AWS tools find them, and Signature Version 4 against AWS's own
 * published examples. Needs no gateway; s3.test.ts checks a real one
 * accepts the signatures.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseIni, s3Settings, signRequest, uriEncode, type S3Settings } from '../src/storage/aws.js';
import { nearbyAddress, nearbyHost } from '../src/storage/http-common.js';
import { backoff } from '../src/storage/retry.js';
import { locate } from '../src/storage/location.js';
import { parseS3Url } from '../src/storage/s3.js';
import { cliEnv, strata, tempDir } from './helpers.js';

describe('S3 settings: credentials, region and endpoint as the AWS tools find them', () => {
  const home = tempDir();
  fs.mkdirSync(path.join(home, '.aws'));
  fs.writeFileSync(
    path.join(home, '.aws', 'credentials'),
    '[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = defaultsecret\n\n# a comment\n[work]\naws_access_key_id=WORKKEY\naws_secret_access_key=worksecret\naws_session_token = worktoken\n',
  );
  fs.writeFileSync(path.join(home, '.aws', 'config'), '[default]\nregion = eu-west-3\n[profile work]\nregion = eu-central-1\nendpoint_url = http://ceph.internal:7480\n[profile cfgonly]\naws_access_key_id = CFGKEY\naws_secret_access_key = cfgsecret\n');

  it('the environment first, then the profile (AWS_PROFILE, else default) in ~/.aws/credentials and ~/.aws/config', () => {
    const env = { HOME: home, AWS_ACCESS_KEY_ID: 'ENVKEY', AWS_SECRET_ACCESS_KEY: 'envsecret', AWS_SESSION_TOKEN: 'envtoken', AWS_ENDPOINT_URL: 'http://127.0.0.1:1' };
    expect(s3Settings({ env })).toMatchObject({ credentials: { accessKeyId: 'ENVKEY', secretAccessKey: 'envsecret', sessionToken: 'envtoken' }, region: 'eu-west-3' });
    expect(s3Settings({ env: { HOME: home } })).toMatchObject({ credentials: { accessKeyId: 'DEFAULTKEY', secretAccessKey: 'defaultsecret' }, region: 'eu-west-3' });
    expect(s3Settings({ env: { HOME: home } }).endpoint.href).toBe('https://s3.eu-west-3.amazonaws.com/');
    const work = s3Settings({ env: { HOME: home, AWS_PROFILE: 'work' } });
    expect(work).toMatchObject({ credentials: { accessKeyId: 'WORKKEY', sessionToken: 'worktoken' }, region: 'eu-central-1' });
    expect(work.endpoint.href).toBe('http://ceph.internal:7480/');
    expect(s3Settings({ env: { HOME: home, AWS_PROFILE: 'cfgonly' } }).credentials.accessKeyId).toBe('CFGKEY');
    // AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL; AWS_REGION before AWS_DEFAULT_REGION; options before all.
    const both = { HOME: home, AWS_ENDPOINT_URL_S3: 'http://s3.only:1', AWS_ENDPOINT_URL: 'http://any:2', AWS_REGION: 'r1', AWS_DEFAULT_REGION: 'r2' };
    expect(s3Settings({ env: both })).toMatchObject({ region: 'r1' });
    expect(s3Settings({ env: both }).endpoint.host).toBe('s3.only:1');
    expect(s3Settings({ env: { ...both, AWS_ENDPOINT_URL_S3: undefined } }).endpoint.host).toBe('any:2');
    expect(s3Settings({ env: both, endpoint: 'http://opt:3', region: 'r0' })).toMatchObject({ region: 'r0' });
    // Other files, by name.
    const other = path.join(home, 'creds');
    fs.writeFileSync(other, '[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = s\n');
    expect(s3Settings({ env: { HOME: home, AWS_SHARED_CREDENTIALS_FILE: other } }).credentials.accessKeyId).toBe('FILEKEY');
  });

  it('no credentials anywhere is a wrong credential (exit 12) that says where they are looked for; a bad endpoint is a usage error', () => {
    const empty = tempDir();
    expect(() => s3Settings({ env: { HOME: empty } })).toThrow(expect.objectContaining({ code: 'unauthorized', exitCode: 12, message: expect.stringMatching(/AWS_ACCESS_KEY_ID.*~\/\.aws\/credentials/) }));
    expect(() => s3Settings({ env: { HOME: home, AWS_PROFILE: 'nosuch' } })).toThrow(/profile "nosuch"/);
    expect(() => s3Settings({ env: { HOME: home, AWS_ENDPOINT_URL: 'ftp://x' } })).toThrow(expect.objectContaining({ exitCode: 2 }));
  });

  it('parseIni reads sections and key = value lines', () => {
    const ini = parseIni('; c\n[a]\nK = v=1\n[ b ]\nx=y\n');
    expect(ini.get('a')?.get('k')).toBe('v=1');
    expect(ini.get('b')?.get('x')).toBe('y');
  });
});

describe('Signature Version 4', () => {
  // AWS's examples (Authenticating Requests: AWS Signature Version 4, "Examples"), bucket examplebucket.
  const settings: S3Settings = {
    endpoint: new URL('https://examplebucket.s3.amazonaws.com'),
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
  };
  const when = new Date('2013-05-24T00:00:00Z');
  const EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

  it("matches AWS's GET bucket lifecycle and list objects examples", () => {
    const lifecycle = { path: '/', query: { lifecycle: '' }, headers: {} as Record<string, string> };
    expect(signRequest(settings, 'GET', lifecycle, EMPTY, when)).toBe('/?lifecycle=');
    expect(lifecycle.headers.Authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543',
    );
    const list = { path: '/', query: { prefix: 'J', 'max-keys': '2' }, headers: {} as Record<string, string> };
    expect(signRequest(settings, 'GET', list, EMPTY, when)).toBe('/?max-keys=2&prefix=J');
    expect(list.headers.Authorization).toMatch(/Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7$/);
    expect(list.headers['x-amz-date']).toBe('20130524T000000Z');
  });

  it('a session token is sent and signed', () => {
    const req = { path: '/', query: {}, headers: {} as Record<string, string> };
    signRequest({ ...settings, credentials: { ...settings.credentials, sessionToken: 'TOKEN' } }, 'GET', req, EMPTY, when);
    expect(req.headers['x-amz-security-token']).toBe('TOKEN');
    expect(req.headers.Authorization).toMatch(/SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,/);
  });

  it('uriEncode leaves only unreserved characters', () => {
    expect(uriEncode("a b/c!'()*~._-")).toBe('a%20b%2Fc%21%27%28%29%2A~._-');
    expect(uriEncode('a b/c', true)).toBe('a%20b/c');
  });
});

describe('s3:// locations', () => {
  it('bucket and prefix; a malformed one is a usage error', () => {
    expect(parseS3Url('s3://my-bucket')).toEqual({ bucket: 'my-bucket', prefix: '' });
    expect(parseS3Url('s3://my-bucket/')).toEqual({ bucket: 'my-bucket', prefix: '' });
    expect(parseS3Url('s3://my-bucket/a/b/')).toEqual({ bucket: 'my-bucket', prefix: 'a/b/' });
    for (const bad of ['s3://', 's3://B', 's3://ab', 's3://bucket/../x', 's3://bucket/a//b', 's3://bucket?x']) expect(parseS3Url(bad), bad).toBeUndefined();
    expect(locate('s3://my-bucket/a')).toEqual({ kind: 's3', url: 's3://my-bucket/a', bucket: 'my-bucket', prefix: 'a/' });
    expect(() => locate('s3://B_/x')).toThrow(expect.objectContaining({ exitCode: 2, message: expect.stringMatching(/not an S3 location/) }));
  });

  it('a bucket\'s server keeps its tokens under the cache directory; a server\'s URL is no place for one; --no-key is a server admin\'s', () => {
    const cache = path.join(tempDir(), 'cache');
    const listed = strata(['token', 'list', '--json', '--repo', 's3://some-bucket/x'], cliEnv('unused', { STRATA_CACHE_DIR: cache }));
    expect(listed.status, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([]);
    const added = strata(['token', 'add', 'ci', '--role', 'read', '--repo', 's3://some-bucket/x'], cliEnv('unused', { STRATA_CACHE_DIR: cache }));
    expect(added.status, added.stderr).toBe(0);
    expect(fs.readdirSync(path.join(cache, 'servers'))).toHaveLength(1);
    for (const args of [['serve'], ['token', 'list']]) {
      const r = strata([...args, '--repo', 'http://127.0.0.1:9/'], cliEnv('unused'));
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/strata serve keeps a repository directory or a bucket, not http/);
    }
    // Maintenance without the key is a server admin's; a bucket's clients hold the key.
    const r = strata(['prune', '--no-key', '--repo', 's3://some-bucket/x'], cliEnv('unused'));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--no-key is for a server's admin: a repository in a bucket .* is kept by its clients, which open it with the key/);
  });
});

describe('backoff', () => {
  it('doubles per try and is spread over ±50%, so clients that failed together come back apart', () => {
    const policy = { attempts: 5, delayMs: 100 };
    expect(backoff(policy, 1, 0)).toBe(50);
    expect(backoff(policy, 1, 1)).toBe(150);
    expect(backoff(policy, 3, 0.5)).toBe(400);
    const waits = new Set(Array.from({ length: 20 }, () => backoff(policy, 2)));
    expect(waits.size).toBeGreaterThan(10);
    for (const w of waits) expect(w >= 100 && w <= 300).toBe(true);
  });
});

describe('nearby endpoints (a new connection per small answer over plain http, s3.ts)', () => {
  it('this machine and private networks are nearby; other addresses, and names that do not resolve, are not', async () => {
    for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.1.1', '::1', 'fd00::1', 'fe80::1', '::ffff:10.0.0.1']) expect(nearbyAddress(a), a).toBe(true);
    for (const a of ['8.8.8.8', '172.32.0.1', '100.64.0.1', '2001:db8::1', '::ffff:8.8.8.8', 'ceph.internal']) expect(nearbyAddress(a), a).toBe(false);
    expect(await nearbyHost('127.0.0.1')).toBe(true);
    expect(await nearbyHost('[::1]')).toBe(true);
    expect(await nearbyHost('localhost')).toBe(true);
    expect(await nearbyHost('s3.example.invalid')).toBe(false);
  });
});
