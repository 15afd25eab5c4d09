/** Keeps the README's error-code table and the code table in shared in step. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ERROR_CODES } from '@spotctl/shared';
import { expect, it } from 'vitest';
import { REPO } from './helpers/cli.ts';

it('documents every error code in the README, and no code that does not exist', () => {
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const documented = new Set([...readme.matchAll(/^\| `(SPOTCTL_[A-Z_]+)` \|/gm)].map((m) => m[1]));
  expect([...documented].sort()).toEqual(Object.keys(ERROR_CODES).sort());
});
