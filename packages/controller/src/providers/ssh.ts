/**
 * The SSH-host provider: any machine you can `ssh` into with Node.js 20+ and python3. One
 * multiplexed OpenSSH master carries every command, the rsync and the tunnel to the agent.
 */
import { existsSync, lstatSync, mkdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AGENT_FILES, SpotctlError, UserError, parseJobStatus, type JobStatus } from '@spotctl/shared';
import createDebug from 'debug';
import { AgentConnection } from '../transport/agent-client.ts';
import { rsyncTo } from '../transport/rsync.ts';
import { SshConnection, type SshTarget } from '../transport/ssh.ts';
import type { RemoteLayout, RunRecord, RunStore } from '../runs/run-store.ts';
import { agentBundle } from './agent-bundle.ts';
import { lastLine, shellQuote } from '../transport/shell.ts';
import { pullFromWorkdir, runOnTerminal, workdirShellScript, type PullOptions, type PullResult } from '../transport/workdir-files.ts';
import { DepsReporter, depsInstallScript } from './deps.ts';
import { SETUP_MARKER_DONE, setupFailed, setupKey, setupMarkerPath, setupScript } from './setup.ts';
import { previousWorkdir, syncProgress } from './reuse.ts';
import { notStarted, parseStartOutput, prepareAgentConfig, type AgentConfigOptions } from './agent-config.ts';
import { step, type Attempt, type LaunchContext, type Provider, type ProviderSession } from './provider.ts';

const debug = createDebug('spotctl:ssh-provider');
const MIN_NODE_MAJOR = 20;

/** Unix socket paths are limited to ~108 bytes, so the tunnel's socket lives under /tmp. */
function tunnelSocketPath(runId: string): string {
  const uid = process.getuid?.();
  const dir = path.join(os.tmpdir(), `spotctl-${uid ?? 'u'}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // /tmp is shared: a directory another user made first could swap the socket and read the token.
  const st = lstatSync(dir);
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
    throw new UserError('SPOTCTL_CONFIG', `${dir} is not a private directory of this user`, {
      remediation: `remove it (or fix its owner and mode 0700), then retry`,
    });
  }
  return path.join(dir, `${runId}.sock`);
}

interface HostFacts {
  home: string;
  nodeVersion: string | undefined;
  rsync: boolean;
  python3: boolean;
}

/**
 * One round trip for everything known before the sync: the host's facts, whether this agent
 * build is installed, and the run's directories (each multiplexed ssh command costs ~0.1 s).
 */
async function probeHost(
  conn: SshConnection,
  where: { remoteDir: string; runId: string; buildId: string; linkDest?: string | undefined },
  signal?: AbortSignal,
): Promise<HostFacts & { agentInstalled: boolean; linkDest: boolean }> {
  const base = where.remoteDir.startsWith('/')
    ? shellQuote(where.remoteDir)
    : `"$HOME"/${shellQuote(where.remoteDir.replace(/^~\/?/, '') || '.')}`;
  const script = [
    'umask 077',
    `base=${base}`,
    'echo "home=$HOME"',
    // `node --version` answers without booting the JS runtime: far cheaper than `node -p`.
    'if command -v node >/dev/null 2>&1; then echo "node=$(node --version)"; else echo "node="; fi',
    'command -v rsync >/dev/null 2>&1 && echo rsync=yes || echo rsync=no',
    'command -v python3 >/dev/null 2>&1 && echo python3=yes || echo python3=no',
    `test -f "$base/agent/${where.buildId}/agent.mjs" && echo agent=yes || echo agent=no`,
    `mkdir -p "$base/runs/${where.runId}/work" "$base/runs/${where.runId}/agent" && echo dirs=yes || echo dirs=no`,
    // The previous run's workdir, if `spotctl prune` has not removed it: rsync links from it.
    ...(where.linkDest ? [`test -d ${shellQuote(where.linkDest)} && echo linkdest=yes || echo linkdest=no`] : []),
  ].join('\n');
  const result = await conn.exec(script, { signal, timeoutMs: 30_000 });
  const facts = Object.fromEntries(
    result.stdout
      .split('\n')
      .map((l) => l.split('=', 2) as [string, string])
      .filter((kv) => kv.length === 2),
  );
  if (!facts.home) throw new SpotctlError('SPOTCTL_SSH_FAILED', `could not read the host's home directory: ${lastLine(result.stderr)}`);
  if (facts.dirs !== 'yes')
    throw new SpotctlError(
      'SPOTCTL_SSH_FAILED',
      `could not create the run's directories under ${where.remoteDir} on the host: ${lastLine(result.stderr)}`,
    );
  return {
    home: facts.home,
    nodeVersion: facts.node ? facts.node.replace(/^v/, '') : undefined,
    rsync: facts.rsync === 'yes',
    python3: facts.python3 === 'yes',
    agentInstalled: facts.agent === 'yes',
    linkDest: facts.linkdest === 'yes',
  };
}

/** True when a synced path brings a dependency file to the workdir's top level. */
export function hasDependencyFiles(syncPaths: string[]): boolean {
  const names = ['requirements.txt', 'pyproject.toml', 'uv.lock'];
  return syncPaths.some((p) => {
    try {
      return statSync(p).isDirectory() ? names.some((n) => existsSync(path.join(p, n))) : names.includes(path.basename(p));
    } catch {
      return false;
    }
  });
}

/** `~/x`, `x` (home-relative) or `/abs/x` on the host → an absolute path. */
export function remoteBase(home: string, remoteDir: string): string {
  if (remoteDir.startsWith('/')) return remoteDir;
  return path.posix.join(home, remoteDir.replace(/^~\/?/, ''));
}

export function sshLayout(home: string, runId: string, buildId: string, remoteDir = '~/.spotctl'): RemoteLayout {
  const base = remoteBase(home, remoteDir);
  const runDir = path.posix.join(base, 'runs', runId);
  return {
    home,
    runDir,
    workdir: path.posix.join(runDir, 'work'),
    stateDir: path.posix.join(runDir, 'agent'),
    agentPath: path.posix.join(base, 'agent', buildId, 'agent.mjs'),
  };
}

function requireHost(facts: HostFacts, target: SshTarget): void {
  const where = target.host;
  const major = Number.parseInt(facts.nodeVersion ?? '', 10);
  if (!facts.nodeVersion || Number.isNaN(major)) {
    throw new UserError('SPOTCTL_HOST_REQUIREMENT', `Node.js is not installed on ${where} (or not on the PATH of non-interactive ssh)`, {
      remediation: `install Node.js ${MIN_NODE_MAJOR}+ on the host, e.g. ssh ${where} 'sudo apt-get install -y nodejs'`,
    });
  }
  if (major < MIN_NODE_MAJOR) {
    throw new UserError(
      'SPOTCTL_HOST_REQUIREMENT',
      `Node.js ${facts.nodeVersion} on ${where} is too old; the agent needs ${MIN_NODE_MAJOR}+`,
      {
        remediation: `upgrade Node.js on the host to ${MIN_NODE_MAJOR} or newer`,
      },
    );
  }
  if (!facts.rsync) {
    throw new UserError('SPOTCTL_HOST_REQUIREMENT', `rsync is not installed on ${where}`, {
      remediation: `install it on the host: ssh ${where} 'sudo apt-get install -y rsync'`,
    });
  }
}

export async function launchSsh(ctx: LaunchContext, options: AgentConfigOptions = {}): Promise<Attempt> {
  const { out, spec, store, signal } = ctx;
  let record = ctx.record;
  const target = record.target as SshTarget;
  const bundle = agentBundle();
  const session = new SshSession(record, store.runDir(record.runId));
  try {
    const conn = await step(out, 'connect', `connected to ${target.host}`, () => session.connection(signal));
    const remoteDir = spec.remoteDir ?? '~/.spotctl';
    // The host's home (so the base) is known only after the probe: an earlier run's own home places it.
    const linkDestCandidate = previousWorkdir(store, record, (r) => path.posix.join(remoteBase(r.layout.home, remoteDir), 'runs'));
    const facts = await probeHost(conn, { remoteDir, runId: record.runId, buildId: bundle.buildId, linkDest: linkDestCandidate }, signal);
    requireHost(facts, target);
    const layout = sshLayout(facts.home, record.runId, bundle.buildId, remoteDir);
    const linkDest =
      facts.linkDest && linkDestCandidate && path.posix.dirname(path.posix.dirname(linkDestCandidate)) === path.posix.dirname(layout.runDir)
        ? linkDestCandidate
        : undefined;
    record = store.update(record.runId, { layout });
    session.record = record;

    if (!facts.agentInstalled) {
      await step(out, 'install-agent', `installed agent build ${bundle.buildId} on the host`, async () => {
        const dir = path.posix.dirname(layout.agentPath);
        // Write beside and rename, so a concurrent run never executes a half-written bundle.
        const tmp = shellQuote(`${layout.agentPath}.tmp-${record.runId}`);
        const r = await conn.exec(`mkdir -p ${shellQuote(dir)} && cat > ${tmp} && mv ${tmp} ${shellQuote(layout.agentPath)}`, {
          input: bundle.contents,
          signal,
          timeoutMs: 120_000,
        });
        if (r.code !== 0) throw new SpotctlError('SPOTCTL_SSH_FAILED', `could not install the agent on the host: ${lastLine(r.stderr)}`);
      });
    }

    const synced = `synced ${spec.syncPaths.length === 1 ? spec.syncPaths[0] : `${spec.syncPaths.length} paths`} to ${target.host}:${layout.workdir}`;
    await step(
      out,
      'sync',
      linkDest ? `${synced} (unchanged files linked from run ${path.posix.basename(path.posix.dirname(linkDest))})` : synced,
      (progress) =>
        rsyncTo(conn, spec.syncPaths, layout.workdir, { signal, onProgress: syncProgress(progress), ...(linkDest ? { linkDest } : {}) }),
    );

    if (spec.setup !== undefined) {
      const started = performance.now();
      const markerPath = setupMarkerPath(layout, setupKey(spec.setup, spec.syncPaths));
      let skipped = false;
      const r = await conn.exec(setupScript({ workdir: layout.workdir, command: spec.setup, markerPath, env: spec.env }), {
        signal,
        timeoutMs: 3_600_000,
        onStdout: (chunk) => {
          const text = chunk.toString();
          if (text.includes(SETUP_MARKER_DONE)) skipped = true;
          else out.setupOutput(text);
        },
        onStderr: (chunk) => out.setupOutput(chunk.toString()),
      });
      if (r.code !== 0) throw setupFailed(r.code, r.stderr || r.stdout, `on ${target.host} `);
      out.step(
        'setup',
        skipped ? `setup already done on ${target.host} (same command and dependency files)` : `ran the setup command on ${target.host}`,
        performance.now() - started,
      );
    }

    // Nothing to install: spare the round trip.
    if (spec.install && hasDependencyFiles(spec.syncPaths)) {
      using deps = new DepsReporter(out);
      const r = await conn.exec(
        depsInstallScript(layout.workdir, { venvCache: path.posix.join(path.posix.dirname(path.posix.dirname(layout.runDir)), 'venvs') }),
        {
          signal,
          timeoutMs: 3_600_000,
          onStdout: (chunk) => deps.chunk(chunk.toString()),
          onStderr: (chunk) => deps.chunk(chunk.toString()),
        },
      );
      if (r.code !== 0) {
        throw new UserError('SPOTCTL_DEPS_FAILED', `installing Python dependencies on the host failed: ${lastLine(r.stderr || r.stdout)}`, {
          remediation: 'fix requirements.txt / pyproject.toml, or skip the step with --no-install',
        });
      }
      deps.finish();
    }

    const state = await step(out, 'agent', 'started the agent', async () => {
      const configPath = path.posix.join(layout.stateDir, 'config.json');
      const config = JSON.stringify(prepareAgentConfig(ctx, record, options));
      // The config (it holds the token) arrives on stdin, owner-only, in the same round trip as the start.
      const cmd = `umask 077 && cat > ${shellQuote(configPath)} && exec node ${shellQuote(layout.agentPath)} start --config ${shellQuote(configPath)}`;
      return parseStartOutput(await conn.exec(cmd, { input: config, signal, timeoutMs: 60_000 }));
    });
    record = store.update(record.runId, { agent: state });
    session.record = record;
    return { record, session };
  } catch (error) {
    await session.close();
    throw error;
  }
}

export class SshSession implements ProviderSession {
  private conn: SshConnection | undefined;
  private forwarded = false;
  private readonly socketPath: string;

  constructor(
    public record: RunRecord,
    private readonly controlDir: string,
  ) {
    this.socketPath = tunnelSocketPath(record.runId);
  }

  /** The master connection, (re)opened when it is not alive. */
  async connection(signal?: AbortSignal): Promise<SshConnection> {
    if (!this.conn) {
      this.conn = await SshConnection.open(this.record.target as SshTarget, { controlDir: this.controlDir, signal });
      this.forwarded = false;
      return this.conn;
    }
    if (!(await this.conn.check())) {
      debug('ssh master is gone: reopening');
      await this.conn.reopen(signal);
    }
    return this.conn;
  }

  async connect(signal?: AbortSignal): Promise<AgentConnection> {
    const agent = this.record.agent;
    if (!agent) throw notStarted(this.record.runId);
    const conn = await this.connection(signal);
    if (!this.forwarded) {
      await conn.forwardUnixSocket(this.socketPath, '127.0.0.1', agent.port);
      this.forwarded = true;
    }
    return await AgentConnection.connect({ kind: 'unix', socketPath: this.socketPath, token: this.record.token }, { signal });
  }

  async readStatus(signal?: AbortSignal): Promise<JobStatus | undefined> {
    const conn = await this.connection(signal);
    const r = await conn.exec(`cat ${shellQuote(path.posix.join(this.record.layout.stateDir, AGENT_FILES.status))}`, {
      signal,
      timeoutMs: 15_000,
    });
    if (r.code !== 0) return undefined;
    const parsed = parseJobStatus(r.stdout);
    return parsed.ok ? parsed.value : undefined;
  }

  async streamLog(onChunk: (chunk: Buffer) => void, signal?: AbortSignal): Promise<void> {
    const conn = await this.connection(signal);
    await conn.exec(`cat ${shellQuote(path.posix.join(this.record.layout.stateDir, AGENT_FILES.log))}`, {
      signal,
      timeoutMs: 3_600_000,
      onStdout: onChunk,
    });
  }

  async pull(patterns: string[], localDir: string, options: PullOptions = {}): Promise<PullResult> {
    const conn = await this.connection(options.signal);
    return await pullFromWorkdir(conn, this.record.layout.workdir, patterns, localDir, options);
  }

  /** ssh through the run's master: its key, its pinned host key; a pty when this terminal is one. */
  async shell(commandLine: string | undefined, options: { tty: boolean; signal?: AbortSignal }): Promise<number> {
    const conn = await this.connection(options.signal);
    const script = workdirShellScript(this.record.layout.workdir, commandLine);
    return await runOnTerminal([...conn.sshCommandArgs(), options.tty ? '-t' : '-T', '--', conn.target.host, script]);
  }

  async close(): Promise<void> {
    const conn = this.conn;
    this.conn = undefined;
    this.forwarded = false;
    await conn?.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** A host the user gave (`--host`): the agent runs there under their account. */
export class SshProvider implements Provider {
  readonly kind = 'ssh';

  constructor(private readonly store: RunStore) {}

  where(record: RunRecord): string {
    return `on ${record.target?.host}`;
  }

  launch(ctx: LaunchContext): Promise<Attempt> {
    return launchSsh(ctx);
  }

  locate(record: RunRecord): Attempt {
    return { record, session: new SshSession(record, this.store.runDir(record.runId)) };
  }

  /** Nothing to end: the host is the user's, and the agent exits by itself once it was let go. */
  async release(): Promise<boolean> {
    return true;
  }

  /** Nothing is kept across attempts here. */
  async releaseRun(): Promise<void> {}
}
