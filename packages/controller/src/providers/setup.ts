/**
 * The project's setup command (`--setup CMD`, `setup = "…"` in spotctl.toml): run in the workdir
 * after the sync and before the dependencies and the job, once per host. A marker named by a hash
 * of the command and the dependency files' contents records that it succeeded there, so it runs
 * again only on a new host (every EC2 attempt is one) or when the command or those files changed.
 * One script for every provider, so behaviour cannot drift.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '@spotctl/shared';
import { lastLine, shellQuote } from '../transport/shell.ts';
import type { RemoteLayout } from '../runs/run-store.ts';

export const SETUP_MARKER_DONE = 'spotctl-setup: already done on this host';

/** Files whose change makes the setup run again (they usually decide what it installs). */
const DEPENDENCY_FILES = ['requirements.txt', 'pyproject.toml', 'uv.lock', 'environment.yml'];

/** The hash naming a setup's marker: the command plus the dependency files among the synced paths. */
export function setupKey(command: string, syncPaths: readonly string[]): string {
  const hash = createHash('sha256').update(command).update('\0');
  for (const p of syncPaths) {
    let files: string[];
    try {
      files = statSync(p).isDirectory()
        ? DEPENDENCY_FILES.map((n) => path.join(p, n))
        : DEPENDENCY_FILES.includes(path.basename(p))
          ? [p]
          : [];
    } catch {
      continue;
    }
    for (const file of files) {
      if (!existsSync(file)) continue;
      hash.update(path.basename(file)).update('\0').update(readFileSync(file)).update('\0');
    }
  }
  return hash.digest('hex').slice(0, 32);
}

/** `<base>/setup-done/<key>`, beside `runs/` (the host's `~/.spotctl`, or `$SPOTCTL_HOME` locally). */
export function setupMarkerPath(layout: RemoteLayout, key: string): string {
  return path.posix.join(path.posix.dirname(path.posix.dirname(layout.runDir)), 'setup-done', key);
}

/**
 * The script: skip when the marker exists, else run the command with `sh -c` in the workdir with
 * the job's environment, and write the marker only when it exits 0. Exits with the command's code.
 */
export function setupScript(options: { workdir: string; command: string; markerPath: string; env: Record<string, string> }): string {
  const marker = shellQuote(options.markerPath);
  return [
    `if [ -f ${marker} ]; then echo ${shellQuote(SETUP_MARKER_DONE)}; exit 0; fi`,
    `cd ${shellQuote(options.workdir)} || exit 1`,
    ...Object.entries(options.env).map(([name, value]) => `export ${name}=${shellQuote(value)}`),
    `sh -c ${shellQuote(options.command)} </dev/null`,
    'code=$?',
    `if [ "$code" -eq 0 ]; then mkdir -p ${shellQuote(path.posix.dirname(options.markerPath))} && : > ${marker}; fi`,
    'exit "$code"',
  ].join('\n');
}

/** A setup that exited non-zero: its own error code, so scripts and `ps --json` can tell it from a job failure. */
export function setupFailed(code: number, output: string, where: string): UserError {
  const last = lastLine(output);
  return new UserError('SPOTCTL_SETUP_FAILED', `the setup command failed ${where}(exit ${code})${last ? `: ${last}` : ''}`, {
    remediation: 'fix the setup command (--setup, or setup in spotctl.toml) using its output above, then run again; the job did not start',
  });
}
