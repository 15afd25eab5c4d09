/**
 * Live spot prices, per region and Availability Zone.
 *
 * DescribeSpotPriceHistory is asked with `StartTime = now`: AWS then returns, per (type, AZ), the
 * price in effect at that moment (its Timestamp is when that price was set, which can be days
 * ago) plus any change since. Without a StartTime it returns up to 90 days of history, and taking
 * the minimum of that (what spotrun does) prices a market that no longer exists. We keep the
 * newest entry per (type, AZ) and never filter by age.
 *
 * Regions are asked in parallel (bounded), each with its own timeout; a region that fails is
 * reported and left out, and only when every region fails is that an error.
 */
import { UserError, deadline } from '@spotctl/shared';
import type { _InstanceType, EC2Client } from '@aws-sdk/client-ec2';
import createDebug from 'debug';
import { mapLimit } from '../util/map-limit.ts';
import { loadEc2Sdk, sendOptions, type Ec2ClientFor } from './clients.ts';
import { awsErrorName, awsRemediation, awsUserError, describeAwsError, isAbort } from './errors.ts';
import { checkRegionNames } from './regions.ts';

const debug = createDebug('spotctl:ec2');

export const DEFAULT_REGIONS: readonly string[] = [
  'us-east-1',
  'us-east-2',
  'us-west-2',
  'eu-west-1',
  'eu-central-1',
  'ap-south-1',
  'ap-southeast-1',
  'ap-northeast-1',
];
/** The product we run (Linux without a licence surcharge). */
export const PRODUCT_DESCRIPTION = 'Linux/UNIX';
/** @default 4 */
export const DEFAULT_REGION_CONCURRENCY = 4;
/** @default 20_000 */
export const DEFAULT_REGION_TIMEOUT_MS = 20_000;
/** 1000 is the API's page maximum; a handful of types × ≤ 6 AZs is far below one page. */
const PRICE_PAGE_SIZE = 1000;
const MAX_PRICE_PAGES = 20;
const MAX_SCORE_PAGES = 10;

/** The spot price in effect now for one type in one AZ. */
export interface SpotPriceQuote {
  region: string;
  az: string;
  /** AZ id (`use1-az4`), when AWS sends it; placement scores are keyed by it. */
  azId?: string;
  instanceType: string;
  /** USD per hour. */
  pricePerHour: number;
  /** When this price took effect. */
  since: Date;
}

export interface RegionFailure {
  region: string;
  /** AWS error name, `Timeout`, or `Error`. */
  errorName: string;
  message: string;
  remediation?: string;
}

const REGION_RE = /^[a-z]{2}(-[a-z]+)+-\d+$/;

export interface RegionSelection {
  regions: string[];
  /** Why only one region is searched, for a note. */
  pinnedBy?: '--region' | 'AWS_REGION';
}

/**
 * Which regions to search: `--regions a,b` wins, then `--region`, then `AWS_REGION` (each of the
 * last two pins one region), else DEFAULT_REGIONS.
 */
export function resolveRegions(options: { regions?: string; region?: string; env?: NodeJS.ProcessEnv }): RegionSelection {
  const env = options.env ?? process.env;
  if (options.regions !== undefined && options.region !== undefined) {
    throw new UserError('SPOTCTL_USAGE', '--regions and --region both given', {
      remediation: 'use --region us-east-1 to pin one region, or --regions us-east-1,eu-west-1 to search several',
    });
  }
  const check = (list: string[], flag: string): string[] => {
    const bad = list.find((r) => !REGION_RE.test(r));
    if (list.length === 0 || bad !== undefined) {
      throw new UserError('SPOTCTL_USAGE', `${flag} ${bad === undefined ? 'is empty' : `has an invalid region '${bad}'`}`, {
        remediation: `for example: ${flag === 'AWS_REGION' ? 'export AWS_REGION=us-east-1' : `${flag} us-east-1${flag === '--regions' ? ',eu-west-1' : ''}`}`,
        exitCode: 2,
      });
    }
    checkRegionNames(list, flag, env);
    return [...new Set(list)];
  };
  if (options.regions !== undefined) {
    return {
      regions: check(
        options.regions
          .split(',')
          .map((r) => r.trim())
          .filter(Boolean),
        '--regions',
      ),
    };
  }
  if (options.region !== undefined) return { regions: check([options.region.trim()], '--region'), pinnedBy: '--region' };
  const fromEnv = env.AWS_REGION?.trim();
  if (fromEnv) return { regions: check([fromEnv], 'AWS_REGION'), pinnedBy: 'AWS_REGION' };
  return { regions: [...DEFAULT_REGIONS] };
}

/**
 * A regional AZ name (`us-east-1a`), as opposed to Local Zones (`us-east-1-bos-1a`) and Wavelength
 * zones, which need an opt-in and a different subnet setup.
 */
export function isRegionalAz(region: string, az: string): boolean {
  return az.startsWith(region) && /^[a-z]$/.test(az.slice(region.length));
}

export interface FetchPricesOptions {
  region: string;
  instanceTypes: readonly string[];
  /** @default () => new Date() */
  now?: () => Date;
  signal?: AbortSignal;
}

/** The current spot price of each type in each AZ of one region. */
export async function fetchSpotPrices(client: EC2Client, options: FetchPricesOptions): Promise<SpotPriceQuote[]> {
  const { DescribeSpotPriceHistoryCommand } = await loadEc2Sdk();
  const startTime = (options.now ?? (() => new Date()))();
  const newest = new Map<string, SpotPriceQuote>();
  let token: string | undefined;
  for (let page = 0; page < MAX_PRICE_PAGES; page++) {
    const response = await client.send(
      new DescribeSpotPriceHistoryCommand({
        StartTime: startTime,
        ProductDescriptions: [PRODUCT_DESCRIPTION],
        InstanceTypes: [...options.instanceTypes] as _InstanceType[],
        MaxResults: PRICE_PAGE_SIZE,
        ...(token ? { NextToken: token } : {}),
      }),
      sendOptions(options.signal),
    );
    for (const entry of response.SpotPriceHistory ?? []) {
      const { AvailabilityZone: az, InstanceType: instanceType, SpotPrice: price, Timestamp: since } = entry;
      // "Linux/UNIX (Amazon VPC)" is the same product under its EC2-Classic-era name (moto uses it).
      if (!az || !instanceType || !price || !since || !(entry.ProductDescription ?? PRODUCT_DESCRIPTION).startsWith(PRODUCT_DESCRIPTION))
        continue;
      if (!isRegionalAz(options.region, az)) continue;
      const pricePerHour = Number.parseFloat(price);
      if (!Number.isFinite(pricePerHour) || pricePerHour <= 0) continue;
      const key = `${instanceType}\u0000${az}`;
      const seen = newest.get(key);
      if (seen && seen.since.getTime() >= since.getTime()) continue;
      newest.set(key, {
        region: options.region,
        az,
        ...(entry.AvailabilityZoneId ? { azId: entry.AvailabilityZoneId } : {}),
        instanceType,
        pricePerHour,
        since,
      });
    }
    const next = response.NextToken;
    if (!next || next === token) break;
    token = next;
    if (page === MAX_PRICE_PAGES - 1) debug('DescribeSpotPriceHistory in %s: stopped after %d pages', options.region, MAX_PRICE_PAGES);
  }
  return [...newest.values()];
}

/**
 * Runs `fn` with a signal that aborts on the parent signal or after `timeoutMs`, and settles when
 * that signal fires even if `fn` ignores it (so a stuck region can't hold the whole search).
 */
export async function withTimeout<T>(
  parent: AbortSignal | undefined,
  timeoutMs: number,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  // Owned, not AbortSignal.any + AbortSignal.timeout: on Node 20 that timeout can be collected and never fire.
  using timeout = deadline(timeoutMs, parent);
  const signal = timeout.signal;
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    const work = fn(signal);
    // If the timeout wins, a late rejection of `work` must not become an unhandled rejection.
    work.catch(() => undefined);
    return await Promise.race([work, aborted]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

export interface PriceRegionsOptions {
  regions: readonly string[];
  instanceTypes: readonly string[];
  clientFor: Ec2ClientFor;
  /** @default () => new Date() */
  now?: () => Date;
  signal?: AbortSignal;
  /** @default 4 */
  concurrency?: number;
  /** @default 20_000 */
  regionTimeoutMs?: number;
}

export interface RegionPrices {
  quotes: SpotPriceQuote[];
  /** Regions that answered (possibly with no prices). */
  answered: string[];
  failures: RegionFailure[];
}

/** Current spot prices in every region; failing regions are reported, not fatal unless all fail. */
export async function priceRegions(options: PriceRegionsOptions): Promise<RegionPrices> {
  const timeoutMs = options.regionTimeoutMs ?? DEFAULT_REGION_TIMEOUT_MS;
  type Outcome =
    { ok: true; region: string; quotes: SpotPriceQuote[] } | { ok: false; region: string; failure: RegionFailure; error: unknown };
  const outcomes = await mapLimit(options.regions, options.concurrency ?? DEFAULT_REGION_CONCURRENCY, async (region): Promise<Outcome> => {
    try {
      const client = await options.clientFor(region);
      const quotes = await withTimeout(options.signal, timeoutMs, (signal) =>
        fetchSpotPrices(client, { region, instanceTypes: options.instanceTypes, signal, ...(options.now ? { now: options.now } : {}) }),
      );
      debug('%s: %d prices', region, quotes.length);
      return { ok: true, region, quotes };
    } catch (error) {
      if (options.signal?.aborted) throw error;
      debug('%s failed: %O', region, error);
      const failure: RegionFailure = isAbort(error)
        ? {
            region,
            errorName: 'Timeout',
            message: `no answer within ${Math.round(timeoutMs / 1000)} s`,
            remediation: 'check the network, or leave the region out with --regions',
          }
        : {
            region,
            errorName: awsErrorName(error) ?? 'Error',
            message: describeAwsError(error, { region, action: 'DescribeSpotPriceHistory' }),
            ...withRemediation(awsRemediation(error, { region, action: 'DescribeSpotPriceHistory' })),
          };
      return { ok: false, region, failure, error };
    }
  });
  const quotes: SpotPriceQuote[] = [];
  const answered: string[] = [];
  const failures: RegionFailure[] = [];
  for (const o of outcomes) {
    if (!o.ok) failures.push(o.failure);
    else {
      answered.push(o.region);
      quotes.push(...o.quotes);
    }
  }
  if (answered.length === 0 && failures.length > 0) {
    const first = outcomes.find((o) => !o.ok);
    const summary = failures.map((f) => `${f.region}: ${f.errorName}`).join(', ');
    if (first && !first.ok && !isAbort(first.error)) {
      const wrapped = awsUserError(first.error, { region: first.region, action: 'DescribeSpotPriceHistory' });
      throw new UserError(wrapped.code, `no region answered the spot price query (${summary}); ${wrapped.message}`, {
        cause: first.error,
        ...withRemediation(wrapped.remediation),
      });
    }
    throw new UserError('SPOTCTL_CONFIG', `no region answered the spot price query (${summary})`, {
      remediation: 'check the network connection to AWS, then re-run; or search fewer regions with --regions',
    });
  }
  return { quotes, answered, failures };
}

function withRemediation(remediation: string | undefined): { remediation?: string } {
  return remediation === undefined ? {} : { remediation };
}

export interface PlacementScoresOptions {
  client: EC2Client;
  regions: readonly string[];
  instanceTypes: readonly string[];
  /** Instances wanted. @default 1 */
  targetCapacity?: number;
  signal?: AbortSignal;
}

/** Placement score (1–10) per `region/azId`. */
export type PlacementScores = Map<string, number>;

export const scoreKey = (region: string, azId: string): string => `${region}/${azId}`;

/**
 * GetSpotPlacementScores with SingleAvailabilityZone, so scores come per AZ (keyed by AZ *id*). The
 * score is for the whole list of types together, so it ranks places, not types. AWS asks for at
 * least three types (fewer give uselessly low scores); callers skip scoring below that.
 */
export async function fetchPlacementScores(options: PlacementScoresOptions): Promise<PlacementScores> {
  const { GetSpotPlacementScoresCommand } = await loadEc2Sdk();
  const scores: PlacementScores = new Map();
  let token: string | undefined;
  for (let page = 0; page < MAX_SCORE_PAGES; page++) {
    const response = await options.client.send(
      new GetSpotPlacementScoresCommand({
        InstanceTypes: [...options.instanceTypes],
        TargetCapacity: options.targetCapacity ?? 1,
        TargetCapacityUnitType: 'units',
        SingleAvailabilityZone: true,
        RegionNames: [...options.regions],
        MaxResults: 100,
        ...(token ? { NextToken: token } : {}),
      }),
      sendOptions(options.signal),
    );
    for (const s of response.SpotPlacementScores ?? []) {
      if (s.Region && s.AvailabilityZoneId && typeof s.Score === 'number') scores.set(scoreKey(s.Region, s.AvailabilityZoneId), s.Score);
    }
    const next = response.NextToken;
    if (!next || next === token) break;
    token = next;
  }
  return scores;
}

/** AZ name → AZ id for a region (placement scores speak in ids, prices in names). */
export async function fetchAzIds(client: EC2Client, signal?: AbortSignal): Promise<Map<string, string>> {
  const { DescribeAvailabilityZonesCommand } = await loadEc2Sdk();
  const response = await client.send(new DescribeAvailabilityZonesCommand({}), sendOptions(signal));
  const ids = new Map<string, string>();
  for (const z of response.AvailabilityZones ?? []) if (z.ZoneName && z.ZoneId) ids.set(z.ZoneName, z.ZoneId);
  return ids;
}
