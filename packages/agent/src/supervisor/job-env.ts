/** The job's environment: the agent's own, the config's, and what spotctl promises the job. */
import fs from 'node:fs';
import path from 'node:path';

export interface JobEnvOptions {
  argv: readonly string[];
  workdir: string;
  runId: string;
  heartbeatPath: string;
  /** @default process.env */
  baseEnv?: NodeJS.ProcessEnv;
  extraEnv?: Record<string, string>;
}

export interface JobLaunch {
  argv: string[];
  env: NodeJS.ProcessEnv;
}

/**
 * Variables of the agent that must not leak into the job: the bearer token grants control over
 * the agent and the job has no use for it.
 */
const AGENT_ONLY_ENV = ['SPOTCTL_AGENT_TOKEN'];

export function buildJobLaunch(options: JobEnvOptions): JobLaunch {
  const env: NodeJS.ProcessEnv = { ...(options.baseEnv ?? process.env), ...options.extraEnv };
  for (const name of AGENT_ONLY_ENV) delete env[name];
  // Python buffers stdout when it is a pipe; without this, logs arrive minutes late.
  env['PYTHONUNBUFFERED'] = '1';
  env['SPOTCTL_RUN_ID'] = options.runId;
  env['SPOTCTL_HEARTBEAT'] = options.heartbeatPath;
  const argv = [...options.argv];
  const venv = path.join(options.workdir, '.venv');
  if (isDirectory(path.join(venv, 'bin'))) {
    env['VIRTUAL_ENV'] = venv;
    env['PATH'] = [path.join(venv, 'bin'), env['PATH']].filter(Boolean).join(path.delimiter);
    // Resolve `python3` against the venv-first PATH ourselves: which PATH spawn searches has
    // changed between libuv versions (older ones used the agent's), and an explicit path in the
    // agent's log says which interpreter really ran.
    const first = argv[0];
    if (first !== undefined && !first.includes('/')) {
      const resolved = which(first, env['PATH'] ?? '');
      if (resolved) argv[0] = resolved;
    }
  }
  return { argv, env };
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function which(name: string, searchPath: string): string | undefined {
  for (const dir of searchPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}
