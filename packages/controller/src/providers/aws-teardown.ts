/**
 * Ending what an aws run holds: its instance (per attempt) and its IAM role (per run), bounded,
 * with Ctrl-C held off so an impatient user cannot strand a billed instance.
 */
import { SpotctlError, UserError } from '@spotctl/shared';
import { Ec2Clients } from '../aws/clients.ts';
import { describeAwsError } from '../aws/errors.ts';
import { deleteRunRole, iamClient, runRoleName } from '../aws/iam.ts';
import { terminateRun } from '../aws/launch.ts';
import { formatDuration, type Output } from '../output/output.ts';
import type { RunRecord, RunStore } from '../runs/run-store.ts';

/**
 * Runs a (bounded) cleanup with Ctrl-C and SIGTERM held off: an impatient second Ctrl-C must not
 * cut a TerminateInstances call short and strand a billed instance. The cleanup has its own
 * timeout (CLEANUP_TIMEOUT_MS), so this never hangs.
 */
export async function shielded<T>(out: Output, message: string, fn: () => Promise<T>): Promise<T> {
  let told = false;
  const hold = (): void => {
    if (told) return;
    told = true;
    out.info(message);
  };
  process.on('SIGINT', hold);
  process.on('SIGTERM', hold);
  try {
    return await fn();
  } finally {
    process.off('SIGINT', hold);
    process.off('SIGTERM', hold);
  }
}

export function cleanupFailureError(error: unknown, failed: { region: string; instanceIds: string[] }[], runId: string): unknown {
  if (failed.length === 0) return error;
  const where = failed.map((f) => `${f.region}${f.instanceIds.length ? ` (${f.instanceIds.join(', ')})` : ''}`).join(', ');
  return new UserError(
    error instanceof SpotctlError ? error.code : 'SPOTCTL_INTERNAL',
    `${error instanceof Error ? error.message : String(error)} — and spotctl could not confirm that the run's instances in ${where} were terminated`,
    {
      remediation: `terminate them now: spotctl teardown ${runId} (or in the EC2 console: instances tagged spotctl:run-id=${runId})`,
      cause: error,
    },
  );
}

/** Deletes the run's role and instance profile after its instance is gone; never throws. */
export async function removeRunRole(out: Output, runId: string): Promise<boolean> {
  try {
    using iam = await iamClient();
    await deleteRunRole(iam, runId, AbortSignal.timeout(60_000));
    return true;
  } catch (error) {
    out.warn(`could not delete the run's IAM role ${runRoleName(runId)}: ${describeAwsError(error)} — spotctl gc deletes it later`, {
      event: 'iam-cleanup-failed',
      runId,
    });
    return false;
  }
}

/** Hours × price: what the instance has cost so far (spot prices move; an estimate). */
export function spendSoFar(pricePerHour: number, fromMs: number, toMs: number): number {
  return (pricePerHour * Math.max(0, toMs - fromMs)) / 3_600_000;
}

/**
 * Ends an attempt: terminates its instance and says what it cost. The IAM role stays (it is the
 * run's, see `releaseRunRole`). Idempotent (the record remembers `terminatedAt`); never throws; a
 * failure says exactly what to run by hand.
 */
export async function terminateRunInstance(options: {
  store: RunStore;
  record: RunRecord;
  out: Output;
  reason?: string;
}): Promise<boolean> {
  const { store, out } = options;
  // The stored record is the fresher one: an earlier release may have terminated the instance already.
  const current = freshest(store, options.record);
  const aws = current.aws;
  if (!aws || aws.terminatedAt) return true;
  const started = performance.now();
  using clients = new Ec2Clients();
  const { terminated, failed } = await shielded(out, `terminating ${aws.instanceId} first (bounded)`, () =>
    terminateRun(clients.forRegion, [aws.region], options.record.runId, { knownIds: new Map([[aws.instanceId, aws.region]]) }),
  );
  if (failed.length > 0 || !terminated.some((t) => t.instanceId === aws.instanceId)) {
    const why = failed[0] ? describeAwsError(failed[0].error) : 'EC2 did not acknowledge it';
    out.warn(`could not terminate ${aws.instanceId} in ${aws.region}: ${why} — run: spotctl teardown ${options.record.runId}`, {
      event: 'teardown-failed',
      instanceId: aws.instanceId,
    });
    return false;
  }
  const now = Date.now();
  store.update(options.record.runId, { aws: { ...aws, terminatedAt: now } });
  const cost = spendSoFar(aws.pricePerHour, aws.launchedAt, now);
  out.step(
    'teardown',
    `terminated ${aws.instanceId} after ${formatDuration(now - aws.launchedAt)} (about $${cost.toFixed(4)}${aws.market === 'spot' ? ' at the launch spot price' : ''})${options.reason ? ` — ${options.reason}` : ''}`,
    performance.now() - started,
  );
  return true;
}

/**
 * Ends the run's own IAM role (S3 checkpoints) once no instance of the run is left to use it.
 * Skipped while the instance may still run (its termination failed). Idempotent; never throws.
 */
export async function releaseRunRole(options: { store: RunStore; record: RunRecord; out: Output }): Promise<void> {
  const { store, out } = options;
  const current = freshest(store, options.record);
  const role = current.runRole ?? (current.aws?.instanceProfile ? { name: current.aws.instanceProfile } : undefined);
  if (!role || role.deletedAt) return;
  if (current.aws && !current.aws.terminatedAt) return; // still attached to a live instance: gc deletes it later
  if (await removeRunRole(out, current.runId)) {
    try {
      store.update(current.runId, { runRole: { ...role, deletedAt: Date.now() } });
    } catch {
      // No local record (a run recovered elsewhere): nothing to remember it in.
    }
  }
}

function freshest(store: RunStore, record: RunRecord): RunRecord {
  try {
    return store.load(record.runId);
  } catch {
    // No local record (a run recovered elsewhere): go by what we were given.
    return record;
  }
}
