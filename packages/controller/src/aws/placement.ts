/**
 * Where to launch: every (region, AZ, instance type) that fits, ranked by the spot price of that
 * very type in that very AZ, and the walker that tries them in turn.
 *
 * Ranking prices what is launched (not the smallest type, not a regional average) and each
 * candidate names its AZ: the launch must pin it (`launchPlacement()` gives the fields), or the
 * price we ranked by is not the price paid.
 *
 * Failover order: always the cheapest candidate not yet ruled out, and the error decides what is
 * ruled out — its scope widens from the capacity pool (this type in this AZ) to the AZ to the
 * region:
 *   - InsufficientInstanceCapacity, SpotMaxPriceTooLow, Unsupported → only that type in that AZ;
 *   - InsufficientFreeAddressesInSubnet → every type in that AZ;
 *   - VcpuLimitExceeded → that region's candidates of this size or larger (a smaller one may fit);
 *   - MaxSpotInstanceCountExceeded, InstanceLimitExceeded, throttling → the whole region;
 *   - anything else (UnauthorizedOperation, InvalidParameter…, credentials) → stop at once with a
 *     UserError carrying the remediation from errors.ts.
 * We chose this over a fixed "other types, then other AZs, then other regions" walk because spot
 * capacity pools are independent per (type, AZ): one pool running dry says nothing about its
 * neighbours, so sticking to the same AZ or region only makes the user pay more per hour, while a
 * region switch costs the launch code a few API calls once. Errors that do speak for a wider scope
 * (quotas are per region; a full subnet is per AZ) prune that scope, so no attempt is wasted on them.
 */
import { SpotctlError, UserError } from '@spotctl/shared';
import type { RunInstancesCommandInput } from '@aws-sdk/client-ec2';
import createDebug from 'debug';
import { mapLimit } from '../util/map-limit.ts';
import type { Ec2ClientFor } from './clients.ts';
import {
  AWS_ERROR_CODES,
  AWS_ERRORS,
  awsErrorName,
  awsRemediation,
  awsUserError,
  describeAwsError,
  failureScope,
  isAbort,
  isAwsServiceError,
  isNetworkError,
  type FailureScope,
  type Market,
} from './errors.ts';
import {
  fetchAzIds,
  fetchPlacementScores,
  priceRegions,
  scoreKey,
  withTimeout,
  DEFAULT_REGION_TIMEOUT_MS,
  type PlacementScores,
  type RegionFailure,
  type SpotPriceQuote,
} from './pricing.ts';
import type { GpuInfo, GpuRequest } from './gpus.ts';
import { DEFAULT_WORKERS, describeNeed, findCandidateTypes, type Architecture, type CpuOptions, type SizedType } from './sizing.ts';

export type { Market } from './errors.ts';

const debug = createDebug('spotctl:ec2');

/** One place to launch, with the price it will cost there. */
export interface PlacementCandidate {
  region: string;
  /** The AZ the price is for; the launch must pin it. */
  az: string;
  instanceType: string;
  /** vCPUs as launched. */
  vcpus: number;
  /** Spot price of this type in this AZ, USD per hour, in effect now. */
  pricePerHour: number;
  /** Present only with --no-ht on a type with SMT. */
  cpuOptions?: CpuOptions;
  architecture: Architecture;
  /** When the price took effect (ISO 8601). */
  priceSince: string;
  /** Spot placement score 1–10 of the AZ (only with placement scores on). */
  placementScore?: number;
  /** The type's GPUs, when it has any. */
  gpu?: GpuInfo;
}

export interface RankOptions {
  /** Scores keyed by `region/azId` (see pricing.fetchPlacementScores). */
  scores?: PlacementScores;
  /** AZ name → id per region, for quotes that don't carry the id. */
  azIds?: ReadonlyMap<string, ReadonlyMap<string, string>>;
  /** Leave out AZs whose known score is below this. @default undefined (no filter) */
  minScore?: number;
}

/**
 * Cheapest first. Ties: higher placement score, then more vCPUs (same money, more machine),
 * then region, AZ and type names, so the order never depends on response order.
 */
export function compareCandidates(a: PlacementCandidate, b: PlacementCandidate): number {
  return (
    a.pricePerHour - b.pricePerHour ||
    (b.placementScore ?? 0) - (a.placementScore ?? 0) ||
    b.vcpus - a.vcpus ||
    a.region.localeCompare(b.region) ||
    a.az.localeCompare(b.az) ||
    a.instanceType.localeCompare(b.instanceType)
  );
}

/** Joins prices with the fitting types and orders them (see compareCandidates). */
export function rankPlacements(
  quotes: readonly SpotPriceQuote[],
  types: readonly SizedType[],
  options: RankOptions = {},
): PlacementCandidate[] {
  const byType = new Map(types.map((t) => [t.instanceType, t]));
  const candidates: PlacementCandidate[] = [];
  for (const q of quotes) {
    const type = byType.get(q.instanceType);
    if (!type) continue;
    const azId = q.azId ?? options.azIds?.get(q.region)?.get(q.az);
    const score = azId !== undefined ? options.scores?.get(scoreKey(q.region, azId)) : undefined;
    if (options.minScore !== undefined && score !== undefined && score < options.minScore) continue;
    candidates.push({
      region: q.region,
      az: q.az,
      instanceType: q.instanceType,
      vcpus: type.vcpus,
      pricePerHour: q.pricePerHour,
      ...(type.cpuOptions ? { cpuOptions: { ...type.cpuOptions } } : {}),
      architecture: type.architecture,
      priceSince: q.since.toISOString(),
      ...(score !== undefined ? { placementScore: score } : {}),
      ...(type.gpu ? { gpu: { ...type.gpu } } : {}),
    });
  }
  return candidates.sort(compareCandidates);
}

/**
 * The RunInstances fields that make a launch match its candidate: the type, the pinned AZ, the
 * CPU options (both fields), and for spot a one-time request that terminates on interruption.
 * The launch code adds image, subnet (in this AZ), tags and the rest.
 */
export function launchPlacement(
  candidate: PlacementCandidate,
  market: Market,
): Pick<
  RunInstancesCommandInput,
  'InstanceType' | 'Placement' | 'CpuOptions' | 'InstanceMarketOptions' | 'InstanceInitiatedShutdownBehavior'
> {
  return {
    InstanceType: candidate.instanceType as RunInstancesCommandInput['InstanceType'],
    Placement: { AvailabilityZone: candidate.az },
    ...(candidate.cpuOptions
      ? { CpuOptions: { CoreCount: candidate.cpuOptions.CoreCount, ThreadsPerCore: candidate.cpuOptions.ThreadsPerCore } }
      : {}),
    ...(market === 'spot'
      ? {
          InstanceMarketOptions: {
            MarketType: 'spot',
            SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' },
          },
        }
      : {}),
    // The default is "stop", which leaves a stopped instance with billed storage after `shutdown -h`.
    InstanceInitiatedShutdownBehavior: 'terminate',
  };
}

/**
 * On-demand order. We have no on-demand prices (that is the Pricing API, a separate client), so:
 * fewest vCPUs first (on-demand prices scale with size), then the spot order, which is a fair
 * proxy for which regions and families are cheap.
 */
export function onDemandOrder(candidates: readonly PlacementCandidate[]): PlacementCandidate[] {
  const rank = new Map(candidates.map((c, i) => [c, i]));
  return [...candidates].sort((a, b) => a.vcpus - b.vcpus || (rank.get(a) ?? 0) - (rank.get(b) ?? 0));
}

export type AttemptEvent =
  | { type: 'trying'; attempt: number; candidate: PlacementCandidate; market: Market }
  | { type: 'launched'; attempt: number; candidate: PlacementCandidate; market: Market }
  | {
      type: 'failed';
      attempt: number;
      candidate: PlacementCandidate;
      market: Market;
      errorName: string;
      /** One line: what AWS said and what it means. */
      message: string;
      scope: Exclude<FailureScope, 'fatal'>;
      /** Untried candidates this failure rules out as well. */
      ruledOut: number;
    }
  | { type: 'fallback'; from: Market; to: Market; tried: number };

/**
 * A region whose infrastructure (key pair, security group, image, subnet) could not be set up:
 * the walk skips the region and goes on elsewhere; only when no other region is left does the
 * cause surface, with its own remediation.
 */
export class RegionSetupError extends Error {
  constructor(
    readonly region: string,
    override readonly cause: unknown,
  ) {
    super(`setting up ${region} failed: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'RegionSetupError';
  }
}

export interface AttemptRecord {
  candidate: PlacementCandidate;
  market: Market;
  outcome: 'launched' | 'failed';
  errorName?: string;
  message?: string;
}

export interface AttemptContext {
  market: Market;
  /** 1-based, across both markets. */
  attempt: number;
  signal?: AbortSignal;
}

/** Launches one candidate (the launch code's job); throws the AWS error when it can't. */
export type AttemptFn<T> = (candidate: PlacementCandidate, context: AttemptContext) => Promise<T>;

export interface FailoverOptions {
  /** `'on-demand'` for `--on-demand`. @default 'spot' */
  market?: Market;
  /** What to do when no spot candidate launches. @default 'none' */
  spotFallback?: 'none' | 'on-demand';
  /** Called before and after each attempt, and when falling back to on-demand. */
  onAttempt?: (event: AttemptEvent) => void;
  signal?: AbortSignal;
  /** Attempts per market before giving up (every loop is bounded). @default 25 */
  maxAttemptsPerMarket?: number;
}

export interface FailoverResult<T> {
  value: T;
  candidate: PlacementCandidate;
  market: Market;
  attempts: AttemptRecord[];
}

/** @default 25 */
export const DEFAULT_MAX_ATTEMPTS_PER_MARKET = 25;

/** The untried candidates a failure rules out, including the failed one itself. */
function ruledOutBy(failed: PlacementCandidate, scope: Exclude<FailureScope, 'fatal'>): (c: PlacementCandidate) => boolean {
  switch (scope) {
    case 'pool':
      return (c) => c.region === failed.region && c.az === failed.az && c.instanceType === failed.instanceType;
    case 'az':
      return (c) => c.region === failed.region && c.az === failed.az;
    case 'region-vcpus':
      return (c) => c.region === failed.region && c.vcpus >= failed.vcpus;
    case 'region':
      return (c) => c.region === failed.region;
  }
}

const where = (c: PlacementCandidate): { region: string; az: string; instanceType: string; vcpus: number } => ({
  region: c.region,
  az: c.az,
  instanceType: c.instanceType,
  vcpus: c.vcpus,
});

/**
 * Tries candidates until one launches (see the file comment for the order). Returns the launch
 * function's value with the candidate that worked; throws a UserError when an error rules out
 * everything or must not be retried elsewhere. Errors that are not AWS's (our own SpotctlErrors,
 * bugs, cancellation) pass through untouched.
 */
export async function launchWithFailover<T>(
  candidates: readonly PlacementCandidate[],
  attemptFn: AttemptFn<T>,
  options: FailoverOptions = {},
): Promise<FailoverResult<T>> {
  const firstMarket = options.market ?? 'spot';
  const maxPerMarket = options.maxAttemptsPerMarket ?? DEFAULT_MAX_ATTEMPTS_PER_MARKET;
  const attempts: AttemptRecord[] = [];
  const failures: { error: unknown; candidate: PlacementCandidate; market: Market }[] = [];
  if (candidates.length === 0) {
    throw new UserError(AWS_ERROR_CODES.capacity, 'no placement to try: no priced instance type fits', {
      remediation: 'see what is available with: spotctl prices --regions us-east-1,us-east-2,us-west-2,eu-west-1',
    });
  }

  const markets: Market[] = firstMarket === 'spot' && options.spotFallback === 'on-demand' ? ['spot', 'on-demand'] : [firstMarket];
  let budgetHit = false;
  for (const [mi, market] of markets.entries()) {
    if (mi > 0) options.onAttempt?.({ type: 'fallback', from: markets[mi - 1] ?? 'spot', to: market, tried: attempts.length });
    // Quotas and capacity pools are separate for spot and on-demand: each market starts afresh.
    const order = market === 'spot' ? [...candidates] : onDemandOrder(candidates);
    const ruledOut: ((c: PlacementCandidate) => boolean)[] = [];
    const done = new Set<PlacementCandidate>();
    let tried = 0;
    for (const candidate of order) {
      if (ruledOut.some((rule) => rule(candidate))) continue;
      if (tried >= maxPerMarket) {
        budgetHit = true;
        break;
      }
      options.signal?.throwIfAborted();
      tried++;
      done.add(candidate);
      const attempt = attempts.length + 1;
      options.onAttempt?.({ type: 'trying', attempt, candidate, market });
      try {
        const value = await attemptFn(candidate, { market, attempt, ...(options.signal ? { signal: options.signal } : {}) });
        attempts.push({ candidate, market, outcome: 'launched' });
        options.onAttempt?.({ type: 'launched', attempt, candidate, market });
        return { value, candidate, market, attempts };
      } catch (error) {
        if (error instanceof RegionSetupError && !options.signal?.aborted) {
          const rule = ruledOutBy(candidate, 'region');
          const elsewhere = order.filter((c) => !done.has(c) && !rule(c) && !ruledOut.some((r) => r(c)));
          if (elsewhere.length === 0) throw error.cause;
          const more = order.filter((c) => !done.has(c) && c !== candidate && rule(c) && !ruledOut.some((r) => r(c))).length;
          ruledOut.push(rule);
          attempts.push({ candidate, market, outcome: 'failed', errorName: 'RegionSetup', message: error.message });
          options.onAttempt?.({
            type: 'failed',
            attempt,
            candidate,
            market,
            errorName: 'RegionSetup',
            message: error.message,
            scope: 'region',
            ruledOut: more,
          });
          continue;
        }
        if (options.signal?.aborted || isAbort(error) || error instanceof SpotctlError) throw error;
        const name = awsErrorName(error);
        const known = name !== undefined && AWS_ERRORS[name] !== undefined;
        // Not AWS's answer (a bug, a network failure the SDK gave up on): not ours to reinterpret.
        if (!known && !isAwsServiceError(error)) throw error;
        const ctx = { ...where(candidate), market, action: 'RunInstances' };
        // A connection lost during RunInstances may still have launched an instance: stop here, so
        // the launch's cleanup (which terminates by run tag) ends it, rather than try elsewhere.
        if (isNetworkError(error)) throw awsUserError(error, ctx);
        const scope = failureScope(error);
        const message = describeAwsError(error, ctx);
        attempts.push({ candidate, market, outcome: 'failed', errorName: name ?? 'Error', message });
        if (scope === 'fatal') throw awsUserError(error, ctx);
        failures.push({ error, candidate, market });
        const rule = ruledOutBy(candidate, scope);
        const more = order.filter((c) => !done.has(c) && c !== candidate && rule(c) && !ruledOut.some((r) => r(c))).length;
        ruledOut.push(rule);
        debug('attempt %d %s %s %s failed: %s', attempt, market, candidate.az, candidate.instanceType, message);
        options.onAttempt?.({ type: 'failed', attempt, candidate, market, errorName: name ?? 'Error', message, scope, ruledOut: more });
      }
    }
  }
  throw noCapacityError(attempts, failures, { market: firstMarket, fallback: markets.length > 1, budgetHit });
}

function noCapacityError(
  attempts: readonly AttemptRecord[],
  failures: readonly { error: unknown; candidate: PlacementCandidate; market: Market }[],
  info: { market: Market; fallback: boolean; budgetHit: boolean },
): UserError {
  const counts = new Map<string, number>();
  for (const a of attempts) if (a.errorName) counts.set(a.errorName, (counts.get(a.errorName) ?? 0) + 1);
  const tally = [...counts].map(([n, k]) => `${k}× ${n}`).join(', ');
  const quota = failures.find(
    (f) => ['region-vcpus', 'region'].includes(failureScope(f.error)) && awsErrorName(f.error) !== 'RequestLimitExceeded',
  );
  const hints: string[] = [];
  if (quota) hints.push(awsRemediation(quota.error, { ...where(quota.candidate), market: quota.market }) ?? '');
  if (info.market === 'spot' && !info.fallback) hints.push('or launch on-demand: spotctl run --on-demand …');
  hints.push('widen the search with --regions and --families (see spotctl prices)');
  const label = info.fallback ? 'spot or on-demand' : info.market;
  return new UserError(
    AWS_ERROR_CODES.capacity,
    `no ${label} capacity: ${attempts.length} placement${attempts.length === 1 ? '' : 's'} tried (${tally})${info.budgetHit ? ', attempt limit reached' : ''}`,
    { remediation: hints.filter(Boolean).join('; ') },
  );
}

export interface FindPlacementsOptions {
  clientFor: Ec2ClientFor;
  regions: readonly string[];
  /** @default 4 */
  workers?: number;
  /** Graviton instead of x86. @default false */
  arm?: boolean;
  /** @default DEFAULT_FAMILIES for the architecture */
  families?: readonly string[];
  /** Exact types instead of families (`--instance-type`). */
  instanceTypes?: readonly string[];
  /** @default false */
  noHt?: boolean;
  /** @default 1 */
  sizesUp?: number;
  /** GPUs each candidate type must carry (`--gpus`, `--gpu-memory`). @default undefined */
  gpus?: GpuRequest;
  /**
   * Ask GetSpotPlacementScores and use the score to break price ties (and, with `minScore`, to
   * drop unlikely AZs). Off by default: it needs its own IAM permission and AWS limits how many
   * different queries an account may make per day. Never replaces price.
   * @default false
   */
  placementScores?: boolean | { minScore?: number };
  signal?: AbortSignal;
  /** @default () => new Date() */
  now?: () => Date;
  /** @default 4 */
  concurrency?: number;
  /** @default 20_000 */
  regionTimeoutMs?: number;
}

export interface PlacementPlan {
  candidates: PlacementCandidate[];
  types: SizedType[];
  /** "4 workers → ≥ 10 vCPUs …" */
  need: string;
  regionsAnswered: string[];
  failures: RegionFailure[];
  notes: string[];
}

/** Sizing, live prices in every region, optional placement scores, ranking: the whole search. */
export async function findPlacements(options: FindPlacementsOptions): Promise<PlacementPlan> {
  const request = {
    workers: options.workers ?? DEFAULT_WORKERS,
    architecture: (options.arm ? 'arm64' : 'x86_64') as Architecture,
    noHt: options.noHt ?? false,
    ...(options.sizesUp === undefined ? {} : { sizesUp: options.sizesUp }),
    ...(options.gpus ? { gpus: options.gpus } : {}),
  };
  const choice = await findCandidateTypes({
    ...request,
    clientFor: options.clientFor,
    regions: options.regions,
    ...(options.families ? { families: options.families } : {}),
    ...(options.instanceTypes ? { instanceTypes: options.instanceTypes } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const notes = [...choice.notes];
  if (request.noHt && request.architecture === 'arm64') notes.push('--no-ht: Graviton has one thread per core already; nothing to change');
  const typeNames = choice.types.map((t) => t.instanceType);
  const prices = await priceRegions({
    regions: options.regions,
    instanceTypes: typeNames,
    clientFor: options.clientFor,
    ...(options.now ? { now: options.now } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
    ...(options.regionTimeoutMs === undefined ? {} : { regionTimeoutMs: options.regionTimeoutMs }),
  });

  const rankOptions: RankOptions = {};
  if (options.placementScores) {
    const minScore = typeof options.placementScores === 'object' ? options.placementScores.minScore : undefined;
    if (typeNames.length < 3) {
      notes.push(`placement scores skipped: AWS needs at least 3 instance types to score (have ${typeNames.length}); ranked by price only`);
    } else {
      try {
        Object.assign(
          rankOptions,
          await scorePlaces(options, prices.answered, prices.quotes, typeNames),
          minScore === undefined ? {} : { minScore },
        );
      } catch (error) {
        if (options.signal?.aborted) throw error;
        debug('placement scores failed: %O', error);
        notes.push(`placement scores unavailable (${describeAwsError(error, { action: 'GetSpotPlacementScores' })}); ranked by price only`);
      }
    }
  }

  const candidates = rankPlacements(prices.quotes, choice.types, rankOptions);
  if (candidates.length === 0) {
    throw new UserError(AWS_ERROR_CODES.capacity, `no spot price for ${typeNames.join(', ')} in ${prices.answered.join(', ')}`, {
      remediation: 'those types are not sold as spot there; try other regions (--regions) or families (--families c7a,m7a)',
    });
  }
  return {
    candidates,
    types: choice.types,
    need: describeNeed(request),
    regionsAnswered: prices.answered,
    failures: prices.failures,
    notes,
  };
}

async function scorePlaces(
  options: FindPlacementsOptions,
  regions: readonly string[],
  quotes: readonly SpotPriceQuote[],
  instanceTypes: readonly string[],
): Promise<Pick<RankOptions, 'scores' | 'azIds'>> {
  const home = regions[0];
  if (home === undefined) return {};
  const timeoutMs = options.regionTimeoutMs ?? DEFAULT_REGION_TIMEOUT_MS;
  const scores = await withTimeout(
    options.signal,
    timeoutMs,
    async (signal) => await fetchPlacementScores({ client: await options.clientFor(home), regions, instanceTypes, signal }),
  );
  // Scores are keyed by AZ id; look the ids up only where the price entries lacked them.
  const needIds = [...new Set(quotes.filter((q) => q.azId === undefined).map((q) => q.region))];
  const azIds = new Map<string, ReadonlyMap<string, string>>();
  await mapLimit(needIds, options.concurrency ?? 4, async (region) => {
    try {
      azIds.set(
        region,
        await withTimeout(options.signal, timeoutMs, async (signal) => await fetchAzIds(await options.clientFor(region), signal)),
      );
    } catch (error) {
      if (options.signal?.aborted) throw error;
      debug('DescribeAvailabilityZones in %s failed: %O', region, error);
    }
  });
  return { scores, azIds };
}
