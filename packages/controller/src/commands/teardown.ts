import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { Ec2Clients } from '../aws/clients.ts';
import { describeAwsError } from '../aws/errors.ts';
import { deleteRunRole, iamClient } from '../aws/iam.ts';
import { listManagedInstances, spendOf, terminateManaged, type ManagedInstance } from '../aws/lifecycle.ts';
import { lifecycleRegions } from '../aws/lifecycle-regions.ts';
import { TAG } from '../aws/tags.ts';
import type { RunStore } from '../runs/run-store.ts';

const COMMAND_TIMEOUT_MS = 120_000;

interface TeardownOptions extends Record<string, unknown> {
  all?: boolean;
  regions?: string;
  region?: string;
  json?: boolean;
}

/** A run known here resolves like everywhere else (prefix, `last`); an unknown id is looked up by tag. */
function runIdOf(ref: string, store: RunStore): { runId: string; region?: string } {
  try {
    const record = store.resolve(ref);
    if (record.provider !== 'aws') {
      throw new UserError(
        'SPOTCTL_USAGE',
        `run ${record.runId} ran on the ${record.provider} provider: it has no EC2 instance to terminate`,
        {
          remediation: `stop its job with: spotctl stop ${record.runId}`,
          exitCode: 2,
        },
      );
    }
    return { runId: record.runId, ...(record.aws ? { region: record.aws.region } : {}) };
  } catch (error) {
    if (error instanceof UserError && error.code === 'SPOTCTL_RUN_NOT_FOUND' && ref !== 'last') return { runId: ref };
    throw error;
  }
}

export default defineCommand<TeardownOptions>({
  name: 'teardown',
  description:
    "Terminate a run's EC2 instance (found by its spotctl:run-id tag, so it works from any machine), or every spotctl run instance with --all",
  examples: ['spotctl teardown last', 'spotctl teardown 20261125-213000-a1b2', 'spotctl teardown --all --region us-east-1'],
  configure: (cmd) =>
    cmd
      .argument('[run]', "run id, a unique prefix of one, or 'last'")
      .option('--all', 'terminate every spotctl run instance in the regions')
      .option('--regions <list>', 'comma-separated regions to look in (default: 8 common regions and those of runs started here)')
      .option('--region <region>', 'look only in this region')
      .option('--json', 'JSON output'),
  run: async ([ref], options, { out, store }) => {
    if ((ref === undefined) === (options.all !== true)) {
      throw new UserError('SPOTCTL_USAGE', ref === undefined ? 'say which run to tear down, or --all' : 'give a run or --all, not both', {
        remediation: 'spotctl teardown <run> — or spotctl teardown --all',
        exitCode: 2,
      });
    }
    const target = ref === undefined ? undefined : runIdOf(ref, store);
    const regions =
      target?.region && options.regions === undefined && options.region === undefined ? [target.region] : lifecycleRegions(options, store);
    using clients = new Ec2Clients();
    const signal = AbortSignal.timeout(COMMAND_TIMEOUT_MS);
    const { instances, errors } = await listManagedInstances({
      clientFor: clients.forRegion,
      regions,
      signal,
      ...(target ? { runId: target.runId } : {}),
    });
    for (const e of errors) out.warn(`${e.region} skipped: ${e.message}`);
    // --all ends runs only: never an image builder or anything else spotctl may tag later.
    const victims = instances.filter((i) => (target ? i.runId === target.runId : i.tags[TAG.role] === 'run'));
    if (victims.length === 0) {
      const what = target ? `run ${target.runId}` : 'spotctl run';
      out.result({ terminated: [] }, `no live ${what} instance in ${regions.join(', ')}`);
      return errors.length > 0 ? 1 : 0;
    }
    const result = await terminateManaged(clients.forRegion, victims, signal);
    const now = Date.now();
    for (const i of result.terminated) {
      const record = i.runId ? store.list().find((r) => r.runId === i.runId) : undefined;
      if (record?.aws?.instanceId === i.instanceId) store.update(record.runId, { aws: { ...record.aws, terminatedAt: now } });
      const spent = spendOf(i, now);
      out.info(
        `terminated ${i.instanceId} (${i.az}, run ${i.runId ?? '?'})${spent === undefined ? '' : `, about $${spent.toFixed(4)} spent`}`,
        { event: 'terminated', instanceId: i.instanceId, region: i.region, runId: i.runId },
      );
    }
    for (const f of result.failed) out.warn(`could not terminate ${f.instance.instanceId} (${f.instance.region}): ${f.message}`);
    // The S3 role of each run whose instances are all gone now (only runs started with S3 checkpoints have one).
    const ended = new Set(
      result.terminated.flatMap((i) => (i.runId && !result.failed.some((f) => f.instance.runId === i.runId) ? [i.runId] : [])),
    );
    if (ended.size > 0) {
      using iam = await iamClient();
      for (const runId of ended) {
        try {
          await deleteRunRole(iam, runId, signal);
        } catch (error) {
          out.warn(`could not delete the IAM role of run ${runId}: ${describeAwsError(error)} — spotctl gc deletes it later`);
        }
      }
    }
    out.result(
      { terminated: result.terminated.map((i: ManagedInstance) => i.instanceId), failed: result.failed.map((f) => f.instance.instanceId) },
      `terminated ${result.terminated.length} instance${result.terminated.length === 1 ? '' : 's'}${result.failed.length ? `, ${result.failed.length} failed` : ''}`,
    );
    return result.failed.length > 0 || errors.length > 0 ? 1 : 0;
  },
});
