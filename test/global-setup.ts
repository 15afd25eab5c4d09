// Builds the agent and CLI bundles once for the whole test run: the tests run the real bundles.
// This is the only build of a test run (`pnpm test` is plain `vitest run`), also from a clean
// clone, and it covers `vitest run test/one.test.ts` after a source change as well.
import { buildAll } from '../scripts/build.mjs';

export default async function setup(): Promise<void> {
  await buildAll({ quiet: true });
}
