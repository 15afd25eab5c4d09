/** Version and build identity of the agent, as reported by `agent.mjs version` and the hello event. */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PROTOCOL_VERSION } from '@spotctl/shared';

/** Keep in sync with packages/agent/package.json (a unit test checks it). */
export const AGENT_VERSION = '0.1.0';

let cachedBuildId: string | undefined;

/**
 * sha256 of the running bundle (first 16 hex), so the controller can tell whether the agent on a
 * host is byte-identical to the one it ships. From source there is no single file to hash: 'dev'.
 */
export function buildId(): string {
  if (cachedBuildId !== undefined) return cachedBuildId;
  // import.meta.url is the bundle file itself once esbuild has inlined this module; it equals
  // process.argv[1] for `node agent.mjs`, and stays right when the bundle is imported instead.
  const file = fileURLToPath(import.meta.url);
  cachedBuildId = file.endsWith('.ts') ? 'dev' : createHash('sha256').update(readFileSync(file)).digest('hex').slice(0, 16);
  return cachedBuildId;
}

export interface VersionInfo {
  agentVersion: string;
  buildId: string;
  protocolVersion: number;
}

export function versionInfo(): VersionInfo {
  return { agentVersion: AGENT_VERSION, buildId: buildId(), protocolVersion: PROTOCOL_VERSION };
}
