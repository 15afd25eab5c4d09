// @ts-check
/**
 * What a benchmark's `run(ctx)` gets: a time budget, a private temp dir, the shared loopback sshd,
 * and helpers to run spotctl and plain ssh the same way every benchmark does.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadHarness, REPO } from './harness.mjs';
import { runCommand, stopPid } from './proc.mjs';

export { REPO };
/** The real executable in the checkout (checks bundle freshness, rebuilds when a source is newer). */
export const REPO_BIN = path.join(REPO, 'packages', 'controller', 'bin', 'spotctl.mjs');
export const REPO_AGENT = path.join(REPO, 'packages', 'agent', 'dist', 'agent.mjs');
export const REPO_CLI_BUNDLE = path.join(REPO, 'packages', 'controller', 'dist', 'spotctl.mjs');

/**
 * Copies the freshly built bundles (and the bin) into a temp dir in the checkout layout. The copy
 * has no scripts/build.mjs beside it, so its bin never rebuilds: engineers editing sources while
 * the benchmarks run can neither change the code under test half-way nor break it mid-run.
 */
export function snapshotBundles() {
  // Outside the repo, so linters and watchers never see it; both bundles are self-contained.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-bench-bundles-'));
  // Whole dist directories: the CLI bundle is split into lazily loaded chunks.
  for (const rel of ['packages/controller/bin/spotctl.mjs', 'packages/controller/dist', 'packages/agent/dist']) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    cpSync(path.join(REPO, rel), path.join(dir, rel), { recursive: true });
  }
  return {
    dir,
    bin: path.join(dir, 'packages/controller/bin/spotctl.mjs'),
    agent: path.join(dir, 'packages/agent/dist/agent.mjs'),
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** One sshd for the whole run, started when a benchmark first asks for it. */
export class SharedSshd {
  #sshd;
  get() {
    this.#sshd ??= loadHarness().then((h) => h.startSshd());
    return this.#sshd;
  }
  async close() {
    if (!this.#sshd) return;
    const s = await this.#sshd.catch(() => undefined);
    await s?.close();
  }
}

/** The options every ssh in the benchmarks uses: the ones spotctl passes, minus its ControlMaster. */
export function plainSshArgs(sshd) {
  return [
    '-F',
    sshd.configFile,
    '-o',
    'BatchMode=yes',
    '-o',
    `UserKnownHostsFile=${sshd.knownHostsFile}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    'UpdateHostKeys=no',
    '-i',
    sshd.identityFile,
    '-o',
    'IdentitiesOnly=yes',
    '-p',
    String(sshd.port),
    '-l',
    sshd.user,
  ];
}

/**
 * @param {{ name: string, deadline: number, signal: AbortSignal, snapshot: ReturnType<typeof snapshotBundles>, sshd: SharedSshd, log: (s: string) => void }} init
 */
export function createContext(init) {
  const tmp = mkdtempSync(path.join(os.tmpdir(), `spb-${init.name.slice(0, 12)}-`));
  const home = path.join(tmp, 'home');
  const cleanups = [];
  const remoteDirs = [];

  const ctx = {
    name: init.name,
    repo: REPO,
    signal: init.signal,
    /** ms since epoch after which a benchmark should stop adding samples. */
    deadline: init.deadline,
    log: init.log,
    /** Private temp dir, removed afterwards. Short, so unix socket paths inside fit. */
    tmp,
    /** The spotctl executable to measure (snapshot of this run's build; never rebuilds). */
    bin: init.snapshot.bin,
    /** The agent bundle of this run's build. */
    agentBundle: init.snapshot.agent,
    repoBin: REPO_BIN,
    sshd: () => init.sshd.get(),
    harness: loadHarness,
    plainSshArgs,
    /** Runs `fn` when the benchmark ends, whatever happened (last registered runs first). */
    onCleanup(fn) {
      cleanups.push(fn);
    },
    /** A fresh remote dir for runs on the sshd; agents left in it are stopped at cleanup. */
    remoteDir(label = 'remote') {
      const dir = path.join(tmp, `${label}-${remoteDirs.length}`);
      remoteDirs.push(dir);
      return dir;
    },
    /** `--remote-dir ... --host ... --identity ... --known-hosts ... --ssh-config ...` */
    hostArgs(sshd, remoteDir) {
      return [
        '--remote-dir',
        remoteDir,
        '--host',
        sshd.hostSpec,
        '--identity',
        sshd.identityFile,
        '--known-hosts',
        sshd.knownHostsFile,
        '--ssh-config',
        sshd.configFile,
      ];
    },
    /** Runs the spotctl executable with this benchmark's SPOTCTL_HOME. */
    spotctl(args, options = {}) {
      return runCommand(process.execPath, [options.bin ?? ctx.bin, ...args], {
        ...options,
        signal: options.signal ?? init.signal,
        env: { ...process.env, SPOTCTL_HOME: home, NO_COLOR: '1', ...options.env },
      });
    },
    /** The agent state files (agent.json) of every run under a remote dir. */
    agentStates(remoteDir) {
      const runs = path.join(remoteDir, 'runs');
      if (!existsSync(runs)) return [];
      return readdirSync(runs).flatMap((id) => {
        try {
          return [
            {
              runId: id,
              stateDir: path.join(runs, id, 'agent'),
              ...JSON.parse(readFileSync(path.join(runs, id, 'agent', 'agent.json'), 'utf8')),
            },
          ];
        } catch {
          return [];
        }
      });
    },
    async close() {
      for (const fn of cleanups.reverse()) {
        try {
          await fn();
        } catch (e) {
          init.log(`cleanup failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      // An interrupted run leaves its agent (a daemon we started) running: stop it by its pid.
      for (const dir of remoteDirs) for (const state of ctx.agentStates(dir)) await stopPid(state.pid, 3_000);
      rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  return ctx;
}
