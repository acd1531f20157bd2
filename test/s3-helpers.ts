/**
 * The S3 gateway the S3 suite runs against: a real Ceph RGW, started by
 * scripts/ceph-rgw-up.sh (.ci/run does), at STRATA_TEST_S3_ENDPOINT or
 * 127.0.0.1:7480, with the credentials that script makes.
 */
import * as http from 'node:http';
import { randomBytes } from 'node:crypto';
import { S3Storage, type S3StorageOptions } from '../src/storage/s3.js';

export const ENDPOINT = process.env.STRATA_TEST_S3_ENDPOINT ?? 'http://127.0.0.1:7480';
export const KEY = process.env.STRATA_TEST_S3_KEY ?? 'STRATAKEY';
export const SECRET = process.env.STRATA_TEST_S3_SECRET ?? 'STRATASECRET';

/** Why the gateway cannot be used (printed when the suite skips), or undefined when it answers. */
export async function gatewayProblem(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get(ENDPOINT, { timeout: 3000 }, (res) => {
      res.resume();
      resolve(undefined);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 3 s')));
    req.on('error', (e) => resolve(`no S3 gateway answers at ${ENDPOINT} (${(e as NodeJS.ErrnoException).code ?? e.message}); start one with scripts/ceph-rgw-up.sh`));
  });
}

/** A bucket name of its own for each use, so runs and files never meet. */
export function bucketName(label: string): string {
  return `strata-${label}-${randomBytes(4).toString('hex')}`;
}

export const OPTIONS: S3StorageOptions = { endpoint: ENDPOINT, region: 'us-east-1', credentials: { accessKeyId: KEY, secretAccessKey: SECRET } };

/** The environment a strata process needs to reach the gateway (nothing of the machine's own AWS setup). */
export function s3Env(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    AWS_ENDPOINT_URL_S3: ENDPOINT,
    AWS_ENDPOINT_URL: undefined,
    AWS_ACCESS_KEY_ID: KEY,
    AWS_SECRET_ACCESS_KEY: SECRET,
    AWS_SESSION_TOKEN: undefined,
    AWS_REGION: 'us-east-1',
    AWS_PROFILE: undefined,
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    AWS_CONFIG_FILE: '/nonexistent',
    ...extra,
  };
}

/** A store on a new bucket (created here). */
export async function freshStore(label: string, opts: S3StorageOptions = {}): Promise<S3Storage> {
  const st = new S3Storage({ bucket: bucketName(label), prefix: 'repo/' }, { ...OPTIONS, ...opts });
  await st.createBucket();
  return st;
}

/** Where scripts/ceph-rgw-up.sh keeps the running cluster (.ci/run says), for tests that stop and start its gateway. */
export const CEPH_DIR = process.env.STRATA_TEST_CEPH_DIR ?? '/tmp/strata-ceph';
