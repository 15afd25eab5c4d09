// @ts-check
/**
 * The test harness (TypeScript under test/helpers) bundled on the fly with esbuild, so plain .mjs
 * benchmarks can use the real sshd, temp dirs and the websocket test client.
 *
 * The bundle is written to bench/.cache/ (not /tmp): it keeps `esbuild` (imported by
 * scripts/build.mjs, which agent-process.ts pulls in) external, and that must resolve from the repo.
 */
import { build } from 'esbuild';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CACHE_DIR = path.join(REPO, 'bench', '.cache');

/**
 * Bundles `exports` (lines of `export … from '…'`, resolved from test/helpers) into bench/.cache
 * and imports the result; the file is removed once imported (the modules stay in memory).
 *
 * @param {string} name file name stem
 * @param {string[]} exports
 * @param {string[]} [external] packages left to resolve from the repo at run time
 */
export async function bundleHarness(name, exports, external = []) {
  mkdirSync(CACHE_DIR, { recursive: true });
  const outfile = path.join(CACHE_DIR, `${name}-${process.pid}.mjs`);
  await build({
    stdin: { contents: exports.join('\n'), resolveDir: path.join(REPO, 'test', 'helpers'), sourcefile: `bench-${name}.ts`, loader: 'ts' },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    // Workspace packages are consumed as TypeScript source, as in the tests.
    conditions: ['spotctl-source'],
    external,
    outfile,
    logLevel: 'warning',
    banner: {
      js: "import { createRequire as __benchCreateRequire } from 'node:module'; const require = __benchCreateRequire(import.meta.url);",
    },
  });
  try {
    return await import(pathToFileURL(outfile).href);
  } finally {
    rmSync(outfile, { force: true });
  }
}

let loading;

/**
 * @returns {Promise<{
 *   startSshd: (options?: object) => Promise<any>,
 *   tmpDir: (prefix?: string) => Promise<{ path: string, [Symbol.asyncDispose](): Promise<void> }>,
 *   connectClient: (agent: { url: string, token: string }, options?: object) => Promise<any>,
 *   readUntil: (stream: import('node:stream').Readable, re: RegExp, timeoutMs: number) => Promise<string>,
 * }>}
 */
export function loadHarness() {
  loading ??= bundleHarness(
    'harness',
    [
      "export { startSshd } from './sshd.ts';",
      "export { tmpDir } from './tmp.ts';",
      "export { connectClient } from './agent-process.ts';",
      "export { readUntil } from './read-until.ts';",
    ],
    ['esbuild'],
  );
  return loading;
}
