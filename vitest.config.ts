import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['spotctl-source'] },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The machine has 2 cores; end-to-end tests start sshd, agents and controllers.
    maxWorkers: 2,
    env: {
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      NO_COLOR: '1',
      // Runs without --provider stay on this machine: the default (aws) must never reach for AWS here.
      SPOTCTL_PROVIDER: 'local',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    },
  },
});
