/**
 * Turns the run command's checkpoint and interruption flags into the agent's config, once the
 * host's layout is known.
 */
import path from 'node:path';
import { UserError, parseS3Url, type AgentConfig, type CheckpointTarget } from '@spotctl/shared';
import type { RemoteLayout } from '../runs/run-store.ts';

export interface CheckpointSpec {
  /** Folder the job writes checkpoints to, relative to the workdir or absolute. @default 'checkpoints' */
  dir: string;
  /** `s3://bucket/prefix`, or a directory on the host; undefined = `<base>/checkpoint-store` on the host. */
  to?: string;
  restoreFrom?: { runId: string; target: CheckpointTarget };
  /** How long the flush after the job ended may take. @default the agent's (5 min) */
  exitFlushBudgetMs?: number;
  /** `forwarded`: the controller pushes run-scoped S3 credentials to the agent (ssh and local providers). @default the host's chain */
  credentials?: 'forwarded';
  /** `--pull` paths, also uploaded to the target when the run is interrupted. @default none */
  outputs?: string[];
}

export interface SpotSpec {
  checkpoint?: CheckpointSpec;
  /** Poll this metadata endpoint for interruption notices (an emulator, or AWS's on EC2). */
  imdsEndpoint?: string;
  /** Rehearse: the agent serves itself an interruption notice this long after the job starts. */
  simulateInterruptionAfterMs?: number;
  onRebalance?: string;
}

/** The base directory that holds `runs/` on the host. */
export function layoutBase(layout: RemoteLayout): string {
  return path.posix.dirname(path.posix.dirname(layout.runDir));
}

/** Checks `--checkpoint-to` before anything is created: s3://BUCKET/PREFIX or an absolute directory. */
export function parseCheckpointTo(to: string): { kind: 's3'; bucket: string; prefix: string } | { kind: 'dir'; path: string } {
  if (to.startsWith('s3://')) {
    const parsed = parseS3Url(to);
    if (!parsed)
      throw new UserError('SPOTCTL_USAGE', `--checkpoint-to: '${to}' is not a valid S3 URL`, {
        remediation: 'use s3://BUCKET/PREFIX (bucket names are 3-63 lowercase letters, digits, dots, hyphens)',
        exitCode: 2,
      });
    return { kind: 's3', bucket: parsed.bucket, prefix: parsed.prefix };
  }
  if (!to.startsWith('/'))
    throw new UserError('SPOTCTL_USAGE', `--checkpoint-to: '${to}' must be s3://BUCKET/PREFIX or an absolute directory on the host`, {
      remediation: 'e.g. --checkpoint-to s3://my-bucket/spotctl',
      exitCode: 2,
    });
  return { kind: 'dir', path: to };
}

export function checkpointTarget(spec: CheckpointSpec, layout: RemoteLayout, env: NodeJS.ProcessEnv = process.env): CheckpointTarget {
  const to = spec.to;
  if (to === undefined) return { kind: 'dir', path: path.posix.join(layoutBase(layout), 'checkpoint-store') };
  const parsed = parseCheckpointTo(to);
  if (parsed.kind === 's3') {
    const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
    const region = env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
    return { kind: 's3', bucket: parsed.bucket, prefix: parsed.prefix, ...(region ? { region } : {}), ...(endpoint ? { endpoint } : {}) };
  }
  return parsed;
}

export function describeCheckpointTarget(target: CheckpointTarget, runId?: string): string {
  const suffix = runId ? `${runId}/` : '';
  return target.kind === 's3' ? `s3://${target.bucket}/${target.prefix ? `${target.prefix}/` : ''}${suffix}` : `${target.path}/${suffix}`;
}

/** The spot-related part of the agent config. */
export function spotAgentConfig(
  spot: SpotSpec,
  layout: RemoteLayout,
): Pick<AgentConfig, 'checkpoint' | 'imds' | 'simulate' | 'onRebalance'> {
  const out: Pick<AgentConfig, 'checkpoint' | 'imds' | 'simulate' | 'onRebalance'> = {};
  if (spot.checkpoint) {
    const target = checkpointTarget(spot.checkpoint, layout);
    out.checkpoint = {
      dir: spot.checkpoint.dir,
      target,
      ...(spot.checkpoint.restoreFrom
        ? { restoreFrom: spot.checkpoint.restoreFrom.runId, restoreTarget: spot.checkpoint.restoreFrom.target }
        : {}),
      ...(spot.checkpoint.exitFlushBudgetMs !== undefined ? { exitFlushBudgetMs: spot.checkpoint.exitFlushBudgetMs } : {}),
      ...(spot.checkpoint.credentials ? { credentials: spot.checkpoint.credentials } : {}),
      ...(spot.checkpoint.outputs?.length ? { outputs: spot.checkpoint.outputs } : {}),
    };
  }
  // 'default' polls the real metadata address (what the aws provider does on EC2).
  if (spot.imdsEndpoint) out.imds = spot.imdsEndpoint === 'default' ? {} : { endpoint: spot.imdsEndpoint };
  if (spot.simulateInterruptionAfterMs !== undefined) out.simulate = { interruptAfterMs: spot.simulateInterruptionAfterMs };
  if (spot.onRebalance) out.onRebalance = spot.onRebalance;
  return out;
}
