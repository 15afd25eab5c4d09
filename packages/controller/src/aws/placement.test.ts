import {
  DescribeAvailabilityZonesCommand,
  DescribeInstanceTypesCommand,
  DescribeSpotPriceHistoryCommand,
  EC2Client,
  EC2ServiceException,
  GetSpotPlacementScoresCommand,
  RunInstancesCommand,
  type DescribeSpotPriceHistoryCommandInput,
  type SpotPrice,
} from '@aws-sdk/client-ec2';
import { SpotctlError, UserError } from '@spotctl/shared';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { typesOf } from '../../../../test/fixtures/ec2-instance-types.ts';
import {
  findPlacements,
  launchPlacement,
  launchWithFailover,
  rankPlacements,
  type AttemptEvent,
  type PlacementCandidate,
} from './placement.ts';
import type { SpotPriceQuote } from './pricing.ts';

const ec2 = mockClient(EC2Client);
afterEach(() => ec2.reset());

const NOW = new Date('2026-03-14T09:30:00.000Z');
const hoursAgo = (h: number): Date => new Date(NOW.getTime() - h * 3_600_000);
const clientFor = async (region: string): Promise<EC2Client> => new EC2Client({ region });

const awsError = (name: string, message: string, status = 400): EC2ServiceException =>
  new EC2ServiceException({
    name,
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status, requestId: '5c1f2a9e-0000-4000-8000-000000000000' },
    message,
  });

/**
 * Spot price history as EC2 keeps it: several entries per (type, AZ) over time. The fake answers
 * like DescribeSpotPriceHistory does: with a StartTime, the entry in effect at that time and any
 * later ones; without, everything (90 days of history).
 */
type History = Record<string, [az: string, type: string, price: string, at: Date][]>;
function serveHistory(history: History): void {
  ec2.on(DescribeSpotPriceHistoryCommand).callsFake(async (input: DescribeSpotPriceHistoryCommandInput, getClient) => {
    const client = getClient();
    const region = await client.config.region();
    const wanted = new Set(input.InstanceTypes ?? []);
    const rows = (history[region] ?? []).filter(([, type]) => wanted.size === 0 || wanted.has(type as never));
    const start = input.StartTime?.getTime();
    const picked =
      start === undefined
        ? rows
        : rows.filter(([az, type, , at]) => {
            if (at.getTime() >= start) return true;
            const inEffect = rows
              .filter(([a, t, , when]) => a === az && t === type && when.getTime() <= start)
              .sort((x, y) => y[3].getTime() - x[3].getTime())[0];
            return inEffect?.[3] === at;
          });
    return {
      SpotPriceHistory: picked.map(([az, type, price, at]): SpotPrice => ({
        AvailabilityZone: az,
        InstanceType: type as SpotPrice['InstanceType'],
        ProductDescription: 'Linux/UNIX',
        SpotPrice: price,
        Timestamp: at,
      })),
      NextToken: '',
    };
  });
}

describe('rankPlacements', () => {
  it('prices the type that is launched, in the AZ it is launched in, across regions (not the smallest type, not a region average)', async () => {
    ec2.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: typesOf('c6a', 'c7a') });
    serveHistory({
      'ap-south-1': [
        // The cheapest c7a.2xlarge anywhere, and a very cheap c6a.large that doesn't fit 4 workers:
        // a tool that picks the region by its smallest type's price would go here.
        ['ap-south-1a', 'c7a.2xlarge', '0.095300', hoursAgo(6)],
        ['ap-south-1a', 'c6a.large', '0.014100', hoursAgo(6)],
        ['ap-south-1a', 'c6a.4xlarge', '0.310400', hoursAgo(6)],
      ],
      'us-east-2': [
        ['us-east-2a', 'c6a.4xlarge', '0.221800', hoursAgo(2)],
        ['us-east-2b', 'c6a.4xlarge', '0.089600', hoursAgo(9)], // the best deal: 16 vCPUs for less
        ['us-east-2b', 'c7a.2xlarge', '0.118000', hoursAgo(1)],
      ],
      'us-east-1': [
        // Cheap three weeks ago, not now: the minimum of old history must not win.
        ['us-east-1a', 'c7a.2xlarge', '0.041000', hoursAgo(24 * 21)],
        ['us-east-1a', 'c7a.2xlarge', '0.151200', hoursAgo(24 * 2)],
        ['us-east-1d', 'c7a.4xlarge', '0.265000', hoursAgo(4)],
      ],
    });

    const plan = await findPlacements({ clientFor, regions: ['us-east-1', 'us-east-2', 'ap-south-1'], workers: 4, now: () => NOW });
    const top = plan.candidates.map((c) => `${c.az} ${c.instanceType} ${c.pricePerHour}`);
    expect(top).toEqual([
      'us-east-2b c6a.4xlarge 0.0896',
      'ap-south-1a c7a.2xlarge 0.0953',
      'us-east-2b c7a.2xlarge 0.118',
      'us-east-1a c7a.2xlarge 0.1512',
      'us-east-2a c6a.4xlarge 0.2218',
      'us-east-1d c7a.4xlarge 0.265',
      'ap-south-1a c6a.4xlarge 0.3104',
    ]);
    expect(plan.candidates[0]).toMatchObject({
      region: 'us-east-2',
      az: 'us-east-2b',
      instanceType: 'c6a.4xlarge',
      vcpus: 16,
      architecture: 'x86_64',
    });
    expect(plan.need).toMatch(/4 workers → ≥ 10 vCPUs with 2 threads per core, or ≥ 6 vCPUs with 1 thread per core/);
    // Only the fitting types were priced; c6a.large was never asked for.
    for (const call of ec2.commandCalls(DescribeSpotPriceHistoryCommand)) {
      expect(call.args[0].input.InstanceTypes).toEqual(['c6a.4xlarge', 'c6a.8xlarge', 'c7a.2xlarge', 'c7a.4xlarge']);
      expect(call.args[0].input.StartTime).toEqual(NOW);
    }

    // The launch pins the AZ that was priced.
    expect(launchPlacement(plan.candidates[0]!, 'spot').Placement).toEqual({ AvailabilityZone: 'us-east-2b' });
  });

  it('breaks ties deterministically: more vCPUs, then region, AZ and type names', () => {
    const quote = (region: string, az: string, instanceType: string, pricePerHour: number): SpotPriceQuote => ({
      region,
      az,
      instanceType,
      pricePerHour,
      since: hoursAgo(1),
    });
    const types = [
      { instanceType: 'c7a.2xlarge', family: 'c7a', architecture: 'x86_64' as const, vcpus: 8, threadsPerCore: 1 },
      { instanceType: 'c6a.4xlarge', family: 'c6a', architecture: 'x86_64' as const, vcpus: 16, threadsPerCore: 2 },
    ];
    const quotes = [
      quote('us-west-2', 'us-west-2a', 'c7a.2xlarge', 0.12),
      quote('eu-west-1', 'eu-west-1b', 'c7a.2xlarge', 0.12),
      quote('eu-west-1', 'eu-west-1a', 'c7a.2xlarge', 0.12),
      quote('us-west-2', 'us-west-2c', 'c6a.4xlarge', 0.12),
    ];
    const expected = ['us-west-2c c6a.4xlarge', 'eu-west-1a c7a.2xlarge', 'eu-west-1b c7a.2xlarge', 'us-west-2a c7a.2xlarge'];
    for (const order of [quotes, [...quotes].reverse(), [quotes[2]!, quotes[0]!, quotes[3]!, quotes[1]!]]) {
      expect(rankPlacements(order, types).map((c) => `${c.az} ${c.instanceType}`)).toEqual(expected);
    }
  });
});

describe('placement scores (optional)', () => {
  it('break price ties by score and can drop unlikely AZs, never overriding price', async () => {
    ec2.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: typesOf('c6a', 'c7a') });
    serveHistory({
      'us-east-1': [
        ['us-east-1a', 'c7a.2xlarge', '0.120000', hoursAgo(3)],
        ['us-east-1b', 'c7a.2xlarge', '0.120000', hoursAgo(3)],
        ['us-east-1c', 'c7a.2xlarge', '0.130000', hoursAgo(3)],
        ['us-east-1d', 'c7a.2xlarge', '0.110000', hoursAgo(3)],
      ],
    });
    ec2.on(DescribeAvailabilityZonesCommand).resolves({
      AvailabilityZones: [
        { ZoneName: 'us-east-1a', ZoneId: 'use1-az6', RegionName: 'us-east-1', State: 'available' },
        { ZoneName: 'us-east-1b', ZoneId: 'use1-az1', RegionName: 'us-east-1', State: 'available' },
        { ZoneName: 'us-east-1c', ZoneId: 'use1-az2', RegionName: 'us-east-1', State: 'available' },
        { ZoneName: 'us-east-1d', ZoneId: 'use1-az4', RegionName: 'us-east-1', State: 'available' },
      ],
    });
    ec2.on(GetSpotPlacementScoresCommand).resolves({
      SpotPlacementScores: [
        { Region: 'us-east-1', AvailabilityZoneId: 'use1-az1', Score: 9 },
        { Region: 'us-east-1', AvailabilityZoneId: 'use1-az2', Score: 8 },
        { Region: 'us-east-1', AvailabilityZoneId: 'use1-az6', Score: 3 },
        { Region: 'us-east-1', AvailabilityZoneId: 'use1-az4', Score: 1 },
      ],
    });

    const plan = await findPlacements({ clientFor, regions: ['us-east-1'], workers: 4, now: () => NOW, placementScores: true });
    // 1d is cheapest despite its score of 1; between the equal 1a and 1b, the better score wins.
    expect(plan.candidates.map((c) => `${c.az}:${c.placementScore}`)).toEqual([
      'us-east-1d:1',
      'us-east-1b:9',
      'us-east-1a:3',
      'us-east-1c:8',
    ]);
    const request = ec2.commandCalls(GetSpotPlacementScoresCommand)[0]!.args[0].input;
    expect(request).toMatchObject({ SingleAvailabilityZone: true, RegionNames: ['us-east-1'], TargetCapacity: 1 });
    expect(request.InstanceTypes!.length).toBeGreaterThanOrEqual(3);

    const filtered = await findPlacements({
      clientFor,
      regions: ['us-east-1'],
      workers: 4,
      now: () => NOW,
      placementScores: { minScore: 5 },
    });
    expect(filtered.candidates.map((c) => c.az)).toEqual(['us-east-1b', 'us-east-1c']);
  });

  it('fall back to price only, with a note, when the call fails', async () => {
    ec2.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: typesOf('c6a', 'c7a') });
    serveHistory({ 'us-east-1': [['us-east-1a', 'c7a.2xlarge', '0.120000', hoursAgo(3)]] });
    ec2
      .on(GetSpotPlacementScoresCommand)
      .rejects(awsError('UnauthorizedOperation', 'You are not authorized to perform this operation.', 403));
    const plan = await findPlacements({ clientFor, regions: ['us-east-1'], workers: 4, placementScores: true });
    expect(plan.candidates).toHaveLength(1);
    expect(plan.notes.join('\n')).toMatch(/placement scores unavailable \(UnauthorizedOperation.*\); ranked by price only/);
  });
});

/** A ranked list like findPlacements returns: cheapest first. */
function candidates(): PlacementCandidate[] {
  const c = (region: string, az: string, instanceType: string, vcpus: number, pricePerHour: number): PlacementCandidate => ({
    region,
    az,
    instanceType,
    vcpus,
    pricePerHour,
    architecture: 'x86_64',
    priceSince: hoursAgo(2).toISOString(),
  });
  return [
    c('us-east-2', 'us-east-2b', 'c7a.2xlarge', 8, 0.0987),
    c('us-east-2', 'us-east-2c', 'c7a.2xlarge', 8, 0.115),
    c('eu-west-1', 'eu-west-1a', 'c7a.2xlarge', 8, 0.1181),
    c('us-east-2', 'us-east-2b', 'c6a.4xlarge', 16, 0.1311),
    c('us-east-2', 'us-east-2a', 'c7a.4xlarge', 16, 0.1902),
    c('eu-west-1', 'eu-west-1b', 'c6a.4xlarge', 16, 0.2204),
  ];
}

const label = (c: PlacementCandidate): string => `${c.az}/${c.instanceType}`;

describe('launchWithFailover', () => {
  it('tries the cheapest remaining placement, skipping what each error rules out, and reports every attempt', async () => {
    const list = candidates();
    const events: AttemptEvent[] = [];
    const tried: string[] = [];
    const result = await launchWithFailover(
      list,
      async (candidate, { market }) => {
        tried.push(`${market}:${label(candidate)}`);
        if (candidate.az === 'us-east-2b' && candidate.instanceType === 'c7a.2xlarge') {
          throw awsError(
            'InsufficientInstanceCapacity',
            'We currently do not have sufficient c7a.2xlarge capacity in the Availability Zone you requested (us-east-2b).',
            500,
          );
        }
        if (candidate.az === 'us-east-2c') {
          throw awsError('MaxSpotInstanceCountExceeded', 'Max spot instance count exceeded');
        }
        if (candidate.az === 'eu-west-1a')
          throw awsError(
            'Unsupported',
            'Your requested instance type (c7a.2xlarge) is not supported in your requested Availability Zone (eu-west-1a).',
          );
        return { instanceId: 'i-0f3c2b1a9d8e7f654' };
      },
      { onAttempt: (e) => events.push(e) },
    );
    // 2b/c7a: no capacity in that pool only → 2c (next cheapest) → spot count quota: all of us-east-2 is out
    // → eu-west-1a: type not offered there → eu-west-1b.
    expect(tried).toEqual([
      'spot:us-east-2b/c7a.2xlarge',
      'spot:us-east-2c/c7a.2xlarge',
      'spot:eu-west-1a/c7a.2xlarge',
      'spot:eu-west-1b/c6a.4xlarge',
    ]);
    expect(result).toMatchObject({ value: { instanceId: 'i-0f3c2b1a9d8e7f654' }, market: 'spot', candidate: { az: 'eu-west-1b' } });
    expect(result.attempts.map((a) => [label(a.candidate), a.outcome, a.errorName])).toEqual([
      ['us-east-2b/c7a.2xlarge', 'failed', 'InsufficientInstanceCapacity'],
      ['us-east-2c/c7a.2xlarge', 'failed', 'MaxSpotInstanceCountExceeded'],
      ['eu-west-1a/c7a.2xlarge', 'failed', 'Unsupported'],
      ['eu-west-1b/c6a.4xlarge', 'launched', undefined],
    ]);
    expect(events.map((e) => (e.type === 'fallback' ? e.type : `${e.type}:${e.attempt}:${label(e.candidate)}`))).toEqual([
      'trying:1:us-east-2b/c7a.2xlarge',
      'failed:1:us-east-2b/c7a.2xlarge',
      'trying:2:us-east-2c/c7a.2xlarge',
      'failed:2:us-east-2c/c7a.2xlarge',
      'trying:3:eu-west-1a/c7a.2xlarge',
      'failed:3:eu-west-1a/c7a.2xlarge',
      'trying:4:eu-west-1b/c6a.4xlarge',
      'launched:4:eu-west-1b/c6a.4xlarge',
    ]);
    const quota = events.find((e) => e.type === 'failed' && e.attempt === 2);
    expect(quota).toMatchObject({ scope: 'region', ruledOut: 2, errorName: 'MaxSpotInstanceCountExceeded' });
    expect(events.find((e) => e.type === 'failed' && e.attempt === 1)).toMatchObject({ scope: 'pool', ruledOut: 0 });
  });

  it('on VcpuLimitExceeded skips that size and larger in the region, but still tries smaller ones', async () => {
    const c = (az: string, instanceType: string, vcpus: number, pricePerHour: number): PlacementCandidate => ({
      region: 'us-east-1',
      az,
      instanceType,
      vcpus,
      pricePerHour,
      architecture: 'x86_64',
      priceSince: NOW.toISOString(),
    });
    const list = [
      c('us-east-1a', 'c6a.4xlarge', 16, 0.09),
      c('us-east-1b', 'c7a.4xlarge', 16, 0.1),
      c('us-east-1a', 'c7a.2xlarge', 8, 0.11),
    ];
    const tried: string[] = [];
    const result = await launchWithFailover(list, async (candidate) => {
      tried.push(label(candidate));
      if (candidate.vcpus > 8)
        throw awsError(
          'VcpuLimitExceeded',
          'You have requested more vCPU capacity than your current vCPU limit of 8 allows for the instance bucket that the specified instance type belongs to.',
        );
      return 'ok';
    });
    expect(tried).toEqual(['us-east-1a/c6a.4xlarge', 'us-east-1a/c7a.2xlarge']);
    expect(result.candidate.instanceType).toBe('c7a.2xlarge');
  });

  it('stops at once on a non-retryable error with a UserError whose remediation says what to do', async () => {
    const tried: string[] = [];
    const err = await launchWithFailover(candidates(), async (candidate) => {
      tried.push(label(candidate));
      throw awsError(
        'UnauthorizedOperation',
        'You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ec2:RunInstances on resource: arn:aws:ec2:us-east-2:123456789012:instance/*. Encoded authorization failure message: Zx9...',
        403,
      );
    }).catch((e: unknown) => e);
    expect(tried).toEqual(['us-east-2b/c7a.2xlarge']);
    expect(err).toBeInstanceOf(UserError);
    const userError = err as UserError;
    expect(userError.message).toMatch(/may not call ec2:RunInstances/);
    expect(userError.remediation).toMatch(/grant ec2:RunInstances .*aws sts get-caller-identity/);
    expect(userError.remediation).toMatch(/aws sts decode-authorization-message/);
    expect(userError.cause).toBeInstanceOf(EC2ServiceException);

    const bad = await launchWithFailover(candidates(), async () => {
      throw awsError('InvalidParameterCombination', 'The parameter CpuOptions is not supported for instance type c7g.2xlarge.');
    }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(UserError);
    expect((bad as UserError).remediation).toMatch(/--no-ht/);
  });

  it("passes the launch code's own errors, bugs and cancellation through untouched", async () => {
    const own = new SpotctlError('SPOTCTL_INTERNAL', 'could not tag the instance');
    await expect(launchWithFailover(candidates(), async () => await Promise.reject(own))).rejects.toBe(own);
    const bug = new TypeError("Cannot read properties of undefined (reading 'InstanceId')");
    await expect(launchWithFailover(candidates(), async () => await Promise.reject(bug))).rejects.toBe(bug);
    const controller = new AbortController();
    controller.abort();
    await expect(launchWithFailover(candidates(), async () => 'never', { signal: controller.signal })).rejects.toMatchObject({
      name: 'AbortError',
    });
  });

  it('falls back to on-demand (fewest vCPUs first) when no spot capacity is found, if asked to', async () => {
    const events: AttemptEvent[] = [];
    const tried: string[] = [];
    const result = await launchWithFailover(
      candidates(),
      async (candidate, { market }) => {
        tried.push(`${market}:${label(candidate)}`);
        if (market === 'spot')
          throw awsError('InsufficientInstanceCapacity', 'There is no Spot capacity available that matches your request.', 500);
        if (candidate.az === 'us-east-2b')
          throw awsError('InsufficientInstanceCapacity', 'We currently do not have sufficient c7a.2xlarge capacity.', 500);
        return 'on-demand instance';
      },
      { spotFallback: 'on-demand', onAttempt: (e) => events.push(e) },
    );
    expect(tried.filter((t) => t.startsWith('spot:'))).toHaveLength(6);
    expect(tried.filter((t) => t.startsWith('on-demand:'))).toEqual([
      'on-demand:us-east-2b/c7a.2xlarge',
      'on-demand:us-east-2c/c7a.2xlarge',
    ]);
    expect(result).toMatchObject({ market: 'on-demand', value: 'on-demand instance', candidate: { az: 'us-east-2c' } });
    expect(events.find((e) => e.type === 'fallback')).toEqual({ type: 'fallback', from: 'spot', to: 'on-demand', tried: 6 });
  });

  it('launches on-demand only with market on-demand, and passes the market to the launch', async () => {
    const markets: string[] = [];
    const result = await launchWithFailover(
      candidates(),
      async (_c, { market }) => {
        markets.push(market);
        return 1;
      },
      { market: 'on-demand' },
    );
    expect(markets).toEqual(['on-demand']);
    expect(result.market).toBe('on-demand');
  });

  it('gives up with a UserError naming what was tried and how to get more quota', async () => {
    const err = await launchWithFailover(candidates(), async (candidate) => {
      if (candidate.region === 'eu-west-1')
        throw awsError('VcpuLimitExceeded', 'You have requested more vCPU capacity than your current vCPU limit of 0 allows.');
      throw awsError('InsufficientInstanceCapacity', 'There is no Spot capacity available that matches your request.', 500);
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    const e = err as UserError;
    expect(e.message).toMatch(/no spot capacity: 5 placements tried \(4× InsufficientInstanceCapacity, 1× VcpuLimitExceeded\)/);
    expect(e.remediation).toMatch(
      /aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-34B43A08 .*--region eu-west-1/,
    );
    expect(e.remediation).toMatch(/spotctl run --on-demand/);
  });

  it('is bounded by maxAttemptsPerMarket', async () => {
    let calls = 0;
    const err = await launchWithFailover(
      candidates(),
      async () => {
        calls++;
        throw awsError('InsufficientInstanceCapacity', 'no capacity', 500);
      },
      { maxAttemptsPerMarket: 2 },
    ).catch((e: unknown) => e);
    expect(calls).toBe(2);
    expect((err as UserError).message).toMatch(/attempt limit reached/);
  });
});

describe('the launch request', () => {
  it('pins the priced AZ, sends CoreCount with ThreadsPerCore, and asks for a one-time spot instance that terminates', async () => {
    ec2
      .on(RunInstancesCommand)
      .rejectsOnce(
        awsError(
          'InsufficientInstanceCapacity',
          'We currently do not have sufficient c6a.4xlarge capacity in the Availability Zone you requested (us-east-2b).',
          500,
        ),
      )
      .resolves({ Instances: [{ InstanceId: 'i-0a1b2c3d4e5f60718', Placement: { AvailabilityZone: 'us-west-2a' } }] });
    const noHt = (region: string, az: string, pricePerHour: number): PlacementCandidate => ({
      region,
      az,
      instanceType: 'c6a.4xlarge',
      vcpus: 8,
      pricePerHour,
      cpuOptions: { CoreCount: 8, ThreadsPerCore: 1 },
      architecture: 'x86_64',
      priceSince: NOW.toISOString(),
    });
    // What the launch code does with a candidate (it adds image, subnet, tags, ...).
    const result = await launchWithFailover(
      [noHt('us-east-2', 'us-east-2b', 0.19), noHt('us-west-2', 'us-west-2a', 0.2)],
      async (candidate, { market, signal }) => {
        const client = await clientFor(candidate.region);
        const out = await client.send(
          new RunInstancesCommand({ ...launchPlacement(candidate, market), ImageId: 'ami-0c7217cdde317cfec', MinCount: 1, MaxCount: 1 }),
          signal ? { abortSignal: signal } : {},
        );
        return out.Instances?.[0]?.InstanceId;
      },
    );
    expect(result.value).toBe('i-0a1b2c3d4e5f60718');
    const sent = ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input);
    expect(sent.map((i) => i.Placement)).toEqual([{ AvailabilityZone: 'us-east-2b' }, { AvailabilityZone: 'us-west-2a' }]);
    for (const input of sent) {
      expect(input.CpuOptions).toEqual({ CoreCount: 8, ThreadsPerCore: 1 });
      expect(input.InstanceType).toBe('c6a.4xlarge');
      expect(input.InstanceMarketOptions).toEqual({
        MarketType: 'spot',
        SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' },
      });
      expect(input.InstanceInitiatedShutdownBehavior).toBe('terminate');
    }
    expect(launchPlacement(noHt('us-east-2', 'us-east-2b', 0.19), 'on-demand').InstanceMarketOptions).toBeUndefined();
    const withoutCpu = launchPlacement({ ...noHt('us-east-2', 'us-east-2b', 0.19), cpuOptions: undefined }, 'spot');
    expect('CpuOptions' in withoutCpu).toBe(false);
  });
});
