import { defineConfig } from 'vitest/config';

/** The S3 suite needs a gateway (scripts/ceph-rgw-up.sh): `npm run test:s3` runs it alone, `npm test` leaves it out. */
const s3 = process.env.STRATA_TEST_S3 === '1';
/** The browser suite needs chromium: `npm run test:ui` runs it alone, `npm test` leaves it out. */
const ui = process.env.STRATA_TEST_UI === '1';

export default defineConfig({
  test: {
    include: s3 ? ['test/s3*.test.ts'] : ui ? ['test/ui-browser*.test.ts'] : ['test/**/*.test.ts'],
    exclude: s3 || ui ? [] : ['test/s3*.test.ts', 'test/ui-browser*.test.ts', '**/node_modules/**'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two files at a time even on two cores: most tests wait on child processes and servers.
    poolOptions: { forks: { maxForks: 2, minForks: 2 } },
  },
});
