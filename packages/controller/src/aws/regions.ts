/**
 * The region names spotctl accepts, checked before any AWS call: a typo (`--region us-east1`,
 * `xx-fake-9`) should be a usage error that lists the names, not a DNS failure minutes later.
 *
 * AWS adds regions a few times a year. Until this list catches up, name a new one in
 * SPOTCTL_EXTRA_REGIONS (comma-separated, e.g. `SPOTCTL_EXTRA_REGIONS=xx-newregion-1`) and spotctl
 * accepts it too.
 */
import { UserError } from '@spotctl/shared';

/** Extra region names to accept (comma-separated). */
export const EXTRA_REGIONS_ENV = 'SPOTCTL_EXTRA_REGIONS';

/** Regions per partition, as AWS lists them (aws ec2 describe-regions --all-regions), late 2026. */
export const KNOWN_REGIONS: Readonly<Record<string, readonly string[]>> = {
  aws: [
    'af-south-1',
    'ap-east-1',
    'ap-east-2',
    'ap-northeast-1',
    'ap-northeast-2',
    'ap-northeast-3',
    'ap-south-1',
    'ap-south-2',
    'ap-southeast-1',
    'ap-southeast-2',
    'ap-southeast-3',
    'ap-southeast-4',
    'ap-southeast-5',
    'ap-southeast-6',
    'ap-southeast-7',
    'ca-central-1',
    'ca-west-1',
    'eu-central-1',
    'eu-central-2',
    'eu-north-1',
    'eu-south-1',
    'eu-south-2',
    'eu-west-1',
    'eu-west-2',
    'eu-west-3',
    'il-central-1',
    'me-central-1',
    'me-south-1',
    'mx-central-1',
    'sa-east-1',
    'us-east-1',
    'us-east-2',
    'us-west-1',
    'us-west-2',
  ],
  'aws-cn': ['cn-north-1', 'cn-northwest-1'],
  'aws-us-gov': ['us-gov-east-1', 'us-gov-west-1'],
  'aws-eusc': ['eusc-de-east-1'],
};

/** Every accepted region name: the static list plus SPOTCTL_EXTRA_REGIONS. */
export function knownRegions(env: NodeJS.ProcessEnv = process.env): Set<string> {
  const names = new Set(Object.values(KNOWN_REGIONS).flat());
  for (const extra of (env[EXTRA_REGIONS_ENV] ?? '').split(',')) if (extra.trim()) names.add(extra.trim());
  return names;
}

/** Throws a usage error naming the first unknown region in `list`; `flag` says where it came from. */
export function checkRegionNames(list: readonly string[], flag: string, env: NodeJS.ProcessEnv = process.env): void {
  const known = knownRegions(env);
  const bad = list.find((r) => !known.has(r));
  if (bad === undefined) return;
  const near = [...known].filter((r) => r.split('-')[0] === bad.split('-')[0]).sort();
  throw new UserError('SPOTCTL_USAGE', `${flag}: unknown region '${bad}'${near.length ? ` (known: ${near.join(', ')})` : ''}`, {
    remediation: `use a region name such as us-east-1 (aws ec2 describe-regions lists them); for a region newer than spotctl, set ${EXTRA_REGIONS_ENV}=${bad}`,
    exitCode: 2,
  });
}
