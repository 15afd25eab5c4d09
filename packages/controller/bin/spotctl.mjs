#!/usr/bin/env node
// @ts-check
// The `spotctl` executable. In a checkout the CLI and agent bundles are rebuilt first when any
// source file is newer than them, so `pnpm spotctl` always runs what the tree says.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, '..', 'dist', 'spotctl.mjs');
const repo = path.resolve(here, '..', '..', '..');
const buildScript = path.join(repo, 'scripts', 'build.mjs');

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

function bundleMtime(file) {
  return existsSync(file) ? statSync(file).mtimeMs : 0;
}

if (existsSync(buildScript)) {
  const sources = ['shared', 'agent', 'controller'].map((p) => path.join(repo, 'packages', p, 'src'));
  const newestSource = Math.max(...sources.filter(existsSync).map(newestMtime));
  const oldestBundle = Math.min(bundleMtime(dist), bundleMtime(path.join(repo, 'packages', 'agent', 'dist', 'agent.mjs')));
  if (newestSource > oldestBundle) {
    const { buildAll } = await import(pathToFileURL(buildScript).href);
    await buildAll({ quiet: true });
  }
}

// `pnpm spotctl ...` runs this script from the workspace root; behave as an installed spotctl
// would and resolve paths (and the default --sync) from where the user typed the command.
if (process.env.npm_lifecycle_event === 'spotctl' && process.env.INIT_CWD) process.chdir(process.env.INIT_CWD);

const { main } = await import(pathToFileURL(dist).href);
const code = await main(process.argv.slice(2));
// Pending sockets or timers must not keep a finished command alive, but what was printed must
// get out first: a pipe that was full (a slow reader, `spotctl logs | less`) leaves writes queued
// in Node, and exiting would drop them. A write callback runs once everything before it is
// written (or the reader is gone: then there is nothing left to wait for).
await Promise.all(
  [process.stdout, process.stderr].map(
    (stream) =>
      new Promise((resolve) =>
        stream.writableLength === 0 || stream.destroyed ? resolve(undefined) : stream.write('', () => resolve(undefined)),
      ),
  ),
);
process.exit(code);
