// Builds the agent and CLI bundles once for the whole test run: the tests run the real bundles.
import { buildAll } from '../scripts/build.mjs';

export default async function setup(): Promise<void> {
  await buildAll({ quiet: true });
}
