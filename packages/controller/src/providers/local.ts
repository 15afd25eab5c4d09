/**
 * The local provider: the same agent bundle as on a remote host, started as a detached process on
 * this machine in `$SPOTCTL_HOME/runs/<run-id>/`. No cloud account needed; the embedded default.
 */
import { spawn } from 'node:child_process';
import { cpSync, createReadStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { AGENT_FILES, UserError, parseAgentState, parseJobStatus, type AgentState, type JobStatus } from '@spotctl/shared';
import { AgentConnection } from '../transport/agent-client.ts';
import { rsyncTo } from '../transport/rsync.ts';
import { lastLine } from '../transport/shell.ts';
import { pullFromWorkdir, runOnTerminal, workdirShellScript, type PullOptions, type PullResult } from '../transport/workdir-files.ts';
import type { RemoteLayout, RunRecord } from '../runs/run-store.ts';
import { agentBundle } from './agent-bundle.ts';
import { DepsReporter, depsInstallScript } from './deps.ts';
import { SETUP_MARKER_DONE, setupFailed, setupKey, setupMarkerPath, setupScript } from './setup.ts';
import { previousWorkdir, syncProgress } from './reuse.ts';
import { notStarted, parseStartOutput, prepareAgentConfig } from './agent-config.ts';
import { step, type Attempt, type LaunchContext, type Provider, type ProviderSession } from './provider.ts';

/** Directories never copied, whatever the project's .gitignore says. */
const ALWAYS_SKIPPED = new Set(['.git', '.venv', 'venv', '__pycache__', 'node_modules', '.spotctl']);

export function localLayout(runDir: string): RemoteLayout {
  return {
    home: path.dirname(runDir),
    runDir,
    workdir: path.join(runDir, 'work'),
    stateDir: path.join(runDir, 'agent'),
    agentPath: agentBundle().path,
  };
}

/** Runs a child to completion, streaming its output to `onOutput`. */
function runProcess(
  argv: string[],
  options: { input?: string; onOutput?: (chunk: string) => void; signal?: AbortSignal; cwd?: string },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv as [string, ...string[]];
    const child = spawn(cmd, args, {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      signal: options.signal,
      cwd: options.cwd,
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      options.onOutput?.(d.toString());
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
      options.onOutput?.(d.toString());
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    if (child.stdin) {
      // A child that exits without reading its input must not crash us with EPIPE.
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.input);
    }
  });
}

function copyWithoutRsync(paths: string[], dest: string): void {
  mkdirSync(dest, { recursive: true });
  for (const p of paths) {
    // Same semantics as rsync with a trailing slash: a directory's contents, a file by name.
    const target = statSync(p).isDirectory() ? dest : path.join(dest, path.basename(p));
    cpSync(p, target, { recursive: true, filter: (src) => !ALWAYS_SKIPPED.has(path.basename(src)) });
  }
}

export async function launchLocal(ctx: LaunchContext): Promise<Attempt> {
  const { out, spec, store, signal } = ctx;
  let record = ctx.record;
  const layout = record.layout;
  mkdirSync(layout.workdir, { recursive: true });
  mkdirSync(layout.stateDir, { recursive: true, mode: 0o700 });

  const candidate = previousWorkdir(store, record, () => path.dirname(layout.runDir));
  const linkDest = candidate && existsSync(candidate) ? candidate : undefined;
  const copied = `copied ${spec.syncPaths.length === 1 ? spec.syncPaths[0] : `${spec.syncPaths.length} paths`} to ${layout.workdir}`;
  await step(
    out,
    'sync',
    linkDest ? `${copied} (unchanged files linked from run ${path.basename(path.dirname(linkDest))})` : copied,
    async (progress) => {
      try {
        await rsyncTo(null, spec.syncPaths, layout.workdir, {
          signal,
          onProgress: syncProgress(progress, 'copying the project'),
          ...(linkDest ? { linkDest } : {}),
        });
      } catch (error) {
        if (!(error instanceof UserError && error.code === 'SPOTCTL_HOST_REQUIREMENT')) throw error;
        out.warn('rsync is not installed: copying without .gitignore rules (apt-get install rsync)');
        copyWithoutRsync(spec.syncPaths, layout.workdir);
      }
    },
  );

  if (spec.setup !== undefined) await runLocalSetup(ctx, spec.setup);
  if (spec.install) await installLocalDeps(ctx, layout.workdir);

  const state = await step(out, 'agent', 'started the agent', () => startLocalAgent(ctx));
  record = store.update(record.runId, { agent: state });
  return { record, session: new LocalSession(record) };
}

async function runLocalSetup(ctx: LaunchContext, command: string): Promise<void> {
  const { layout } = ctx.record;
  const started = performance.now();
  const markerPath = setupMarkerPath(layout, setupKey(command, ctx.spec.syncPaths));
  let skipped = false;
  const result = await runProcess(['sh', '-c', setupScript({ workdir: layout.workdir, command, markerPath, env: ctx.spec.env })], {
    signal: ctx.signal,
    onOutput: (chunk) => {
      if (chunk.includes(SETUP_MARKER_DONE)) skipped = true;
      else ctx.out.setupOutput(chunk);
    },
  });
  if (result.code !== 0) throw setupFailed(result.code, result.stderr || result.stdout, '');
  ctx.out.step(
    'setup',
    skipped ? 'setup already done on this machine (same command and dependency files)' : 'ran the setup command',
    performance.now() - started,
  );
}

async function installLocalDeps(ctx: LaunchContext, workdir: string): Promise<void> {
  using deps = new DepsReporter(ctx.out);
  // Venvs shared by this machine's runs sit beside its runs folder.
  const venvCache = path.join(path.dirname(path.dirname(ctx.record.layout.runDir)), 'venvs');
  const result = await runProcess(['sh', '-c', depsInstallScript(workdir, { venvCache })], {
    signal: ctx.signal,
    onOutput: (chunk) => deps.chunk(chunk),
  });
  if (result.code !== 0) {
    throw new UserError('SPOTCTL_DEPS_FAILED', `installing Python dependencies failed: ${lastLine(result.stderr || result.stdout)}`, {
      remediation: 'fix requirements.txt / pyproject.toml, or skip the step with --no-install',
    });
  }
  deps.finish();
}

async function startLocalAgent(ctx: LaunchContext): Promise<AgentState> {
  const { record } = ctx;
  const configPath = path.join(record.layout.stateDir, 'config.json');
  writeFileSync(configPath, JSON.stringify(prepareAgentConfig(ctx, record)), { mode: 0o600 });
  const result = await runProcess([process.execPath, agentBundle().path, 'start', '--config', configPath], { signal: ctx.signal });
  return parseStartOutput(result);
}

export class LocalSession implements ProviderSession {
  constructor(private readonly record: RunRecord) {}

  async connect(signal?: AbortSignal): Promise<AgentConnection> {
    const agent = this.currentAgent();
    if (!agent) throw notStarted(this.record.runId);
    return await AgentConnection.connect({ kind: 'tcp', host: '127.0.0.1', port: agent.port, token: this.record.token }, { signal });
  }

  private currentAgent(): AgentState | undefined {
    try {
      const parsed = parseAgentState(readFileSync(path.join(this.record.layout.stateDir, AGENT_FILES.state), 'utf8'));
      return parsed.ok ? parsed.value : this.record.agent;
    } catch {
      return this.record.agent;
    }
  }

  async readStatus(): Promise<JobStatus | undefined> {
    try {
      const parsed = parseJobStatus(readFileSync(path.join(this.record.layout.stateDir, AGENT_FILES.status), 'utf8'));
      return parsed.ok ? parsed.value : undefined;
    } catch {
      return undefined;
    }
  }

  async streamLog(onChunk: (chunk: Buffer) => void, signal?: AbortSignal): Promise<void> {
    try {
      for await (const chunk of createReadStream(path.join(this.record.layout.stateDir, AGENT_FILES.log), { signal }))
        onChunk(chunk as Buffer);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }

  pull(patterns: string[], localDir: string, options?: PullOptions): Promise<PullResult> {
    return pullFromWorkdir(null, this.record.layout.workdir, patterns, localDir, options);
  }

  /** A local shell: no ssh, no tty of its own needed. */
  shell(commandLine: string | undefined): Promise<number> {
    return runOnTerminal(['sh', '-c', workdirShellScript(this.record.layout.workdir, commandLine)]);
  }

  async close(): Promise<void> {}

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** This machine: the agent runs as a detached process beside the controller. */
export class LocalProvider implements Provider {
  readonly kind = 'local';

  where(): string {
    return 'local';
  }

  launch(ctx: LaunchContext): Promise<Attempt> {
    return launchLocal(ctx);
  }

  locate(record: RunRecord): Attempt {
    return { record, session: new LocalSession(record) };
  }

  /** Nothing to end: the agent exits by itself once it was let go (or idles out). */
  async release(): Promise<boolean> {
    return true;
  }

  /** Nothing is kept across attempts here. */
  async releaseRun(): Promise<void> {}
}
