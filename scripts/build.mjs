#!/usr/bin/env node
// Bundles the agent and the CLI into one file each with esbuild.
// Every external is listed with its reason (none today: both bundles are self-contained so the
// agent can be copied to a host as a single file, and the CLI starts without resolving node_modules).
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** @type {Record<string, string>} external module → why it is not bundled */
const EXTERNALS = {};

function common(quiet) {
  return {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  conditions: ['spotctl-source'],
  external: Object.keys(EXTERNALS),
  legalComments: 'none',
  logLevel: quiet ? 'warning' : 'info',
  // ESM bundles of CommonJS dependencies need a real `require`.
  banner: { js: "import { createRequire as __spotctlCreateRequire } from 'node:module'; const require = __spotctlCreateRequire(import.meta.url);" },
  };
}

/** @param {{ quiet?: boolean }} [options] */
export async function buildAll(options = {}) {
  const quiet = options.quiet ?? false;
  await Promise.all([
    build({
      ...common(quiet),
      entryPoints: [path.join(root, 'packages/agent/src/main.ts')],
      outfile: path.join(root, 'packages/agent/dist/agent.mjs'),
      minify: true,
    }),
    build({
      ...common(quiet),
      entryPoints: [path.join(root, 'packages/controller/src/cli/main.ts')],
      outfile: path.join(root, 'packages/controller/dist/spotctl.mjs'),
      splitting: false,
      minify: false,
    }),
  ]);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  await buildAll({ quiet: process.argv.includes('--quiet') });
}
