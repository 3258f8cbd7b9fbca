import { defineConfig } from 'vitest/config';

// Two projects: fast unprivileged unit tests run in parallel; real-component tests (etcd, namespaces, kernel)
// run one file at a time because they share the machine's kernel and ports.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 10_000,
        },
      },
      {
        test: {
          name: 'real',
          include: ['test/real/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
