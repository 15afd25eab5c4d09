#!/usr/bin/env node
// @ts-check
// Bundles the agent and the CLI into one file each with esbuild.
// Every external is listed with its reason (none today: both bundles are self-contained so the
// agent can be copied to a host as a single file, and the CLI starts without resolving node_modules).
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** @type {Record<string, string>} external module → why it is not bundled */
const EXTERNALS = {};

const BUILTIN = new RegExp(`^(node:)?(${builtinModules.map((m) => m.replace(/[/]/g, '\\/')).join('|')})$`);

/**
 * `import … from 'node:crypto'` (any built-in) becomes a `require()` behind esbuild's CommonJS
 * interop. An ESM import of a built-in makes Node build its ESM facade when the bundle links,
 * which reads every export of the module: for node:crypto that loads WebCrypto, 13 ms of each
 * agent process's start in a CPU profile, for an API the agent never uses. Through require, a
 * built-in also loads only when the module importing it is first evaluated (lazy parts stay lazy).
 * Only static imports are rewritten; `require()` and `import()` are left as they are.
 */
const builtinsViaRequire = {
  name: 'builtins-via-require',
  setup(b) {
    b.onResolve({ filter: BUILTIN }, (args) =>
      args.kind === 'import-statement' ? { path: args.path, namespace: 'builtin-via-require' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'builtin-via-require' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path)});`,
      loader: 'js',
    }));
  },
};

/**
 * Modules left out of the agent bundle although a dependency names them, each with its reason.
 * They become a module that throws if it is ever loaded.
 */
const AGENT_LEFT_OUT = {
  // fastify's default JSON-schema compilers (ajv, fast-json-stringify, fast-uri: about 260 kB, a
  // sixth of the bundle, compiled by both agent processes at every start). The agent's routes
  // have no schemas and its server passes its own compilersFactory (server.ts), so fastify never
  // loads them.
  '@fastify/ajv-compiler': 'the agent server has no JSON schemas',
  '@fastify/fast-json-stringify-compiler': 'the agent server has no JSON schemas',
};

const leaveOut = (modules) => ({
  name: 'leave-out',
  setup(b) {
    const filter = new RegExp(
      `^(${Object.keys(modules)
        .map((m) => m.replace(/[/]/g, '\\/'))
        .join('|')})$`,
    );
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'left-out' }));
    b.onLoad({ filter: /.*/, namespace: 'left-out' }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not in the agent bundle: ${modules[args.path]}`)});`,
      loader: 'js',
    }));
  },
});

/**
 * @param {boolean} quiet
 * @returns {import('esbuild').BuildOptions}
 */
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
    banner: {
      js: "import { createRequire as __spotctlCreateRequire } from 'node:module'; const require = __spotctlCreateRequire(import.meta.url);",
    },
  };
}

/**
 * The CLI bundle's options (test/cli-startup.test.ts builds with them to see what `--help` loads).
 * @param {boolean} quiet
 * @returns {import('esbuild').BuildOptions & { metafile: true }}
 */
export function cliBuildOptions(quiet) {
  return {
    ...common(quiet),
    // Split so that lazily imported heavy modules (the AWS SDK, and every command's implementation:
    // cli/main.ts) become chunks loaded only when needed: `spotctl --help` loads the entry chunk only.
    entryPoints: { spotctl: path.join(root, 'packages/controller/src/cli/main.ts') },
    outdir: path.join(root, 'packages/controller/dist'),
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunks/[name]-[hash]',
    splitting: true,
    minify: false,
    metafile: true,
  };
}

/** @param {{ quiet?: boolean }} [options] */
export async function buildAll(options = {}) {
  const quiet = options.quiet ?? false;
  const chunksDir = path.join(root, 'packages/controller/dist/chunks');
  const builtAt = Date.now();
  const [, cli] = await Promise.all([
    build({
      ...common(quiet),
      entryPoints: [path.join(root, 'packages/agent/src/main.ts')],
      outfile: path.join(root, 'packages/agent/dist/agent.mjs'),
      minify: true,
      plugins: [builtinsViaRequire, leaveOut(AGENT_LEFT_OUT)],
    }),
    build(cliBuildOptions(quiet)),
  ]);
  // Chunk names carry content hashes, so earlier builds' chunks pile up. They are not removed at
  // once: a spotctl started before this build (a long aws run) may still import one lazily (its
  // teardown), and must find it. What this build did not write and is a day old goes.
  const written = new Set(Object.keys(cli.metafile?.outputs ?? {}).map((out) => path.resolve(root, out)));
  for (const name of safeReaddir(chunksDir)) {
    const file = path.join(chunksDir, name);
    if (written.has(file)) continue;
    if (statSync(file).mtimeMs < builtAt - STALE_CHUNK_MS) rmSync(file, { force: true });
  }
}

/** Chunks of earlier builds are kept this long (see buildAll). */
const STALE_CHUNK_MS = 24 * 3_600_000;

function safeReaddir(dir) {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  await buildAll({ quiet: process.argv.includes('--quiet') });
}
