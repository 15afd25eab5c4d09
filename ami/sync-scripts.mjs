#!/usr/bin/env node
// @ts-check
// Copies the scripts in ami/ into packages/controller/src/aws/ami-scripts.ts, the form the CLI
// bundle carries (it is one file and reads nothing from the checkout at run time). Run it after
// editing a script here: `node ami/sync-scripts.mjs`. A unit test fails while the two differ.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const target = path.join(here, '..', 'packages', 'controller', 'src', 'aws', 'ami-scripts.ts');

export function render() {
  const read = (name) => JSON.stringify(readFileSync(path.join(here, name), 'utf8'));
  return [
    '// Generated from ami/ by `node ami/sync-scripts.mjs`: edit the files there, not this one.',
    '',
    '/** ami/install.sh: Node.js 20+, python3 + venv, rsync, build-essential on stock Ubuntu 24.04. */',
    `export const INSTALL_SH: string = ${read('install.sh')};`,
    '',
    '/** ami/spotctl-agent@.service: the agent as a systemd unit, for baked images. */',
    `export const AGENT_UNIT: string = ${read('spotctl-agent@.service')};`,
    '',
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(target, render());
  process.stdout.write(`wrote ${path.relative(process.cwd(), target)}\n`);
}
