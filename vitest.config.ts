import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two files at a time even on two cores: most tests wait on child processes and servers.
    poolOptions: { forks: { maxForks: 2, minForks: 2 } },
  },
});
