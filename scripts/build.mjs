#!/usr/bin/env node
// Bundles the agent and the CLI into one file each with esbuild.
// Every external is listed with its reason (none today: both bundles are self-contained so the
// agent can be copied to a host as a single file, and the CLI starts without resolving node_modules).
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { rmSync } from 'node:fs';
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
  // Prefer ESM builds (the AWS SDK ships both): lazy \`import()\` of a CommonJS chunk loses its
  // named exports under code splitting, and ESM tree-shakes better.
  mainFields: ['module', 'main'],
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
  // Chunk names carry content hashes: drop the previous build's so they do not pile up.
  rmSync(path.join(root, 'packages/controller/dist/chunks'), { recursive: true, force: true });
  await Promise.all([
    build({
      ...common(quiet),
      entryPoints: [path.join(root, 'packages/agent/src/main.ts')],
      outfile: path.join(root, 'packages/agent/dist/agent.mjs'),
      minify: true,
    }),
    build({
      ...common(quiet),
      // Split so that lazily imported heavy modules (the AWS SDK) become chunks loaded only by the
      // commands that need them: `spotctl --help` must not parse megabytes of SDK.
      entryPoints: { spotctl: path.join(root, 'packages/controller/src/cli/main.ts') },
      outdir: path.join(root, 'packages/controller/dist'),
      outExtension: { '.js': '.mjs' },
      chunkNames: 'chunks/[name]-[hash]',
      splitting: true,
      minify: false,
    }),
  ]);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  await buildAll({ quiet: process.argv.includes('--quiet') });
}
