/**
 * Local records of runs under `$SPOTCTL_HOME/runs/<run-id>/` (default `~/.spotctl`). One directory
 * per run, so parallel runs never overwrite each other.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError, type AgentState, type CheckpointTarget, type JobStatus } from '@spotctl/shared';
import type { SshTarget } from '../transport/ssh.ts';

export type ProviderKind = 'local' | 'ssh' | 'aws';

/** What an aws run launched; the same facts are on the instance's `spotctl:*` tags. */
export interface AwsRunInfo {
  region: string;
  az: string;
  instanceId: string;
  instanceType: string;
  vcpus: number;
  market: 'spot' | 'on-demand';
  /** USD per hour at launch (the spot price ranked by). */
  pricePerHour: number;
  imageId: string;
  keyName: string;
  securityGroupId: string;
  launchedAt: number;
  /** The run's own IAM role and instance profile (S3 checkpoints), deleted after the instance. */
  instanceProfile?: string;
  /** Set once spotctl terminated the instance (teardown). */
  terminatedAt?: number;
}

export interface RemoteLayout {
  /** The host's home directory (absolute). */
  home: string;
  /** `<home>/.spotctl/runs/<run-id>` on the host (or locally for the local provider). */
  runDir: string;
  workdir: string;
  stateDir: string;
  /** Path of the agent bundle on the host. */
  agentPath: string;
}

/** One attempt of a managed aws run: the instance it ran on, and how it ended. */
export interface AttemptRecord {
  attempt: number;
  instanceId: string;
  region: string;
  az: string;
  instanceType: string;
  market: string;
  pricePerHour: number;
  launchedAt: number;
  endedAt?: number;
  /** interrupted: a spot interruption ended it; ended: the job ended on it. */
  outcome?: 'interrupted' | 'ended';
  /** The newest committed checkpoint set when it ended. */
  committedSet?: number | null;
}

/** What a run's attempts cost so far: hours × launch price, summed (spot prices move; an estimate). */
export function attemptsSpend(attempts: readonly AttemptRecord[], now = Date.now()): number {
  return attempts.reduce((sum, a) => sum + (a.pricePerHour * Math.max(0, (a.endedAt ?? now) - a.launchedAt)) / 3_600_000, 0);
}

export interface RunRecord {
  runId: string;
  provider: ProviderKind;
  createdAt: number;
  command: string[];
  /** Local paths that were synced. */
  syncPaths: string[];
  target?: SshTarget;
  layout: RemoteLayout;
  token: string;
  graceMs: number;
  /** --max-runtime (0 or absent: no limit), for the end-of-run message. */
  maxRuntimeMs?: number;
  detached: boolean;
  agent?: AgentState;
  /**
   * Where this run's checkpoint sets go, when checkpointing is on; `credentials: 'forwarded'` when
   * the agent takes S3 credentials from the controller (`attach` renews them too).
   */
  checkpoint?: { dir: string; target: CheckpointTarget; credentials?: 'forwarded' };
  /** Last status seen by this machine. */
  status?: JobStatus;
  /** aws runs: the instance (the SSH part of the run is in `target`). */
  aws?: AwsRunInfo;
  /** aws runs with S3 checkpoints: the run's IAM role (and instance profile of the same name), kept across attempts. */
  runRole?: { name: string; /** The instance profile's ARN, for the next attempt's launch. */ arn?: string; deletedAt?: number };
  /** aws managed runs: a local copy of the synced code taken when the run started; every attempt syncs it. */
  codeSnapshot?: string;
  /** aws managed runs: one entry per instance the run ran on, in order (`aws` is the current one). */
  attempts?: AttemptRecord[];
  /** Set when the setup never got the job going: it failed (with the reason) or was cancelled. */
  setup?: { state: 'failed' | 'cancelled'; reason: string; endedAt: number };
}

export function spotctlHome(): string {
  return process.env.SPOTCTL_HOME ?? path.join(os.homedir(), '.spotctl');
}

export function runsDir(): string {
  return path.join(spotctlHome(), 'runs');
}

/** Sortable, readable and unique: `20261125-213000-a1b2`. */
export function newRunId(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
  return `${stamp}-${randomBytes(2).toString('hex')}`;
}

export function newToken(): string {
  return randomBytes(32).toString('hex');
}

export class RunStore {
  constructor(private readonly dir: string = runsDir()) {}

  runDir(runId: string): string {
    return path.join(this.dir, runId);
  }

  save(record: RunRecord): void {
    const dir = this.runDir(record.runId);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, 'run.json');
    const tmp = `${file}.${process.pid}.tmp`;
    // The record holds the agent's bearer token: owner-only.
    writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, file);
  }

  update(runId: string, patch: Partial<RunRecord>): RunRecord {
    const next = { ...this.load(runId), ...patch };
    this.save(next);
    return next;
  }

  list(): RunRecord[] {
    if (!existsSync(this.dir)) return [];
    const out: RunRecord[] = [];
    for (const name of readdirSync(this.dir)) {
      const file = path.join(this.dir, name, 'run.json');
      if (!existsSync(file)) continue;
      try {
        out.push(JSON.parse(readFileSync(file, 'utf8')) as RunRecord);
      } catch {
        // A half-written record (crash during save) is skipped rather than breaking `ps`.
      }
    }
    return out.sort((a, b) => b.createdAt - a.createdAt || b.runId.localeCompare(a.runId));
  }

  /** Resolves a run id, a unique prefix of one, or `last`. */
  resolve(ref: string): RunRecord {
    const runs = this.list();
    if (ref === 'last') {
      const last = runs[0];
      if (!last)
        throw new UserError('SPOTCTL_RUN_NOT_FOUND', 'there are no runs yet', { remediation: 'start one with: spotctl run -- <command>' });
      return last;
    }
    const exact = runs.find((r) => r.runId === ref);
    if (exact) return exact;
    const matches = runs.filter((r) => r.runId.startsWith(ref));
    if (matches.length === 1 && matches[0]) return matches[0];
    if (matches.length > 1) {
      throw new UserError('SPOTCTL_USAGE', `run id '${ref}' is ambiguous (${matches.length} runs match)`, {
        remediation: 'give more characters; see: spotctl ps',
        exitCode: 2,
      });
    }
    throw new UserError('SPOTCTL_RUN_NOT_FOUND', `no run '${ref}' on this machine`, { remediation: 'list runs with: spotctl ps' });
  }

  load(runId: string): RunRecord {
    const file = path.join(this.runDir(runId), 'run.json');
    if (!existsSync(file))
      throw new UserError('SPOTCTL_RUN_NOT_FOUND', `no run '${runId}' on this machine`, { remediation: 'list runs with: spotctl ps' });
    return JSON.parse(readFileSync(file, 'utf8')) as RunRecord;
  }

  /** The highest seq this machine has printed for the run (so `attach` resumes after it). */
  readCursor(runId: string): number {
    try {
      return Number.parseInt(readFileSync(path.join(this.runDir(runId), 'cursor'), 'utf8'), 10) || 0;
    } catch {
      return 0;
    }
  }

  writeCursor(runId: string, seq: number): void {
    writeFileSync(path.join(this.runDir(runId), 'cursor'), String(seq));
  }
}
