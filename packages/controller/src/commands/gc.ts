import { defineCommand } from '../cli/define-command.ts';
import { parseDuration } from '../cli/durations.ts';
import { Ec2Clients } from '../aws/clients.ts';
import { iamClient } from '../aws/iam.ts';
import { GC_MIN_AGE_MS, gcManaged } from '../aws/lifecycle.ts';
import { lifecycleRegions } from '../aws/lifecycle-regions.ts';
import { table } from '../output/output.ts';

const COMMAND_TIMEOUT_MS = 300_000;

interface GcOptions extends Record<string, unknown> {
  regions?: string;
  region?: string;
  dryRun?: boolean;
  minAge?: string;
  json?: boolean;
}

export default defineCommand<GcOptions>({
  name: 'gc',
  description:
    'Terminate spotctl instances past their spotctl:expires-at and delete spotctl key pairs, security groups and run roles nothing uses; never touches an untagged resource',
  examples: ['spotctl gc --dry-run', 'spotctl gc --region us-east-1', 'spotctl gc --json'],
  configure: (cmd) =>
    cmd
      .option('--regions <list>', 'comma-separated regions to clean (default: 8 common regions and those of runs started here)')
      .option('--region <region>', 'clean only this region')
      .option('--dry-run', 'say what would go, change nothing')
      .option('--min-age <duration>', 'leave key pairs and security groups younger than this alone', '15m')
      .option('--json', 'one JSON object on stdout'),
  run: async (_args, options, { out, store }) => {
    const regions = lifecycleRegions(options, store);
    const minAgeMs = options.minAge ? parseDuration(options.minAge, '--min-age', { timer: false }) : GC_MIN_AGE_MS;
    using clients = new Ec2Clients();
    using iam = await iamClient();
    const report = await gcManaged({
      clientFor: clients.forRegion,
      iam,
      regions,
      dryRun: options.dryRun === true,
      minAgeMs,
      signal: AbortSignal.timeout(COMMAND_TIMEOUT_MS),
    });
    if (!out.json) for (const e of report.errors) out.warn(`${e.region} skipped: ${e.message}`);
    const verb = options.dryRun ? 'would remove' : 'removed';
    const done = report.actions.filter((a) => a.done || options.dryRun).length;
    out.data(
      report,
      report.actions.length === 0
        ? `nothing to clean up in ${regions.join(', ')}`
        : `${table(
            ['REGION', 'KIND', 'ID', 'RESULT', 'WHY'],
            report.actions.map((a) => [
              a.region,
              a.kind,
              a.id,
              options.dryRun ? 'would go' : a.done ? 'removed' : `kept: ${a.error ?? '?'}`,
              a.reason,
            ]),
          )}\n\n${verb} ${done} of ${report.actions.length}`,
    );
    return report.errors.length > 0 || report.actions.some((a) => !options.dryRun && !a.done) ? 1 : 0;
  },
});
