/** Finds the agent bundle this controller ships and identifies its build. */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SpotctlError } from '@spotctl/shared';

export interface AgentBundle {
  path: string;
  contents: Buffer;
  /** First 16 hex of the bundle's sha256: the agent reports the same id in its hello. */
  buildId: string;
}

let cached: AgentBundle | undefined;

export function agentBundle(): AgentBundle {
  if (cached) return cached;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    process.env.SPOTCTL_AGENT_BUNDLE,
    // Installed layout: agent.mjs beside the CLI bundle.
    path.join(here, 'agent.mjs'),
    // Checkout layout: packages/controller/dist → packages/agent/dist.
    path.join(here, '..', '..', 'agent', 'dist', 'agent.mjs'),
    // Running from source (tests): packages/controller/src/providers → packages/agent/dist.
    path.join(here, '..', '..', '..', 'agent', 'dist', 'agent.mjs'),
  ].filter((p): p is string => Boolean(p));
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new SpotctlError('SPOTCTL_INTERNAL', `the agent bundle is missing (looked in ${candidates.join(', ')})`, {
      remediation: 'build it with: corepack pnpm build',
    });
  }
  const contents = readFileSync(found);
  cached = { path: found, contents, buildId: createHash('sha256').update(contents).digest('hex').slice(0, 16) };
  return cached;
}
