import { DescribeSpotPriceHistoryCommand, EC2Client, EC2ServiceException, type SpotPrice } from '@aws-sdk/client-ec2';
import { UserError } from '@spotctl/shared';
import { mockClient } from 'aws-sdk-client-mock';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_REGIONS, fetchSpotPrices, priceRegions, resolveRegions, withTimeout } from './pricing.ts';

const ec2 = mockClient(EC2Client);
afterEach(() => ec2.reset());

const NOW = new Date('2026-03-14T09:30:00.000Z');
const hoursAgo = (h: number): Date => new Date(NOW.getTime() - h * 3_600_000);

/** One DescribeSpotPriceHistory entry as the SDK hands it over (SpotPrice is a string, Timestamp a Date). */
function price(az: string, instanceType: string, spotPrice: string, timestamp: Date): SpotPrice {
  return {
    AvailabilityZone: az,
    InstanceType: instanceType as SpotPrice['InstanceType'],
    ProductDescription: 'Linux/UNIX',
    SpotPrice: spotPrice,
    Timestamp: timestamp,
  };
}

const awsError = (name: string, message: string, status = 400): EC2ServiceException =>
  new EC2ServiceException({
    name,
    $fault: 'client',
    $metadata: { httpStatusCode: status, requestId: 'b6a1c8f2-0000-4000-8000-000000000000' },
    message,
  });

const clientFor = async (region: string): Promise<EC2Client> => new EC2Client({ region });

describe('DescribeSpotPriceHistory', () => {
  it('asks for the price in effect now (StartTime = now), Linux/UNIX, the candidate types, and follows NextToken', async () => {
    ec2
      .on(DescribeSpotPriceHistoryCommand)
      .resolvesOnce({
        SpotPriceHistory: [
          price('us-east-1a', 'c7a.2xlarge', '0.134500', hoursAgo(5)),
          price('us-east-1b', 'c7a.2xlarge', '0.128700', hoursAgo(30)),
        ],
        NextToken: 'eyJ2IjoiMiIsImMiOiJ...',
      })
      .resolvesOnce({ SpotPriceHistory: [price('us-east-1a', 'c6a.4xlarge', '0.281200', hoursAgo(2))], NextToken: '' });
    const controller = new AbortController();
    const before = Date.now();
    const quotes = await fetchSpotPrices(new EC2Client({ region: 'us-east-1' }), {
      region: 'us-east-1',
      instanceTypes: ['c6a.4xlarge', 'c7a.2xlarge'],
      signal: controller.signal,
    });
    const after = Date.now();

    const calls = ec2.commandCalls(DescribeSpotPriceHistoryCommand);
    expect(calls).toHaveLength(2);
    const input = calls[0]!.args[0].input;
    expect(input.StartTime).toBeInstanceOf(Date);
    expect(input.StartTime!.getTime()).toBeGreaterThanOrEqual(before);
    expect(input.StartTime!.getTime()).toBeLessThanOrEqual(after);
    expect(input.EndTime).toBeUndefined();
    expect(input.ProductDescriptions).toEqual(['Linux/UNIX']);
    expect(input.InstanceTypes).toEqual(['c6a.4xlarge', 'c7a.2xlarge']);
    expect(calls[1]!.args[0].input.NextToken).toBe('eyJ2IjoiMiIsImMiOiJ...');
    expect(calls[1]!.args[0].input.StartTime).toEqual(input.StartTime);
    for (const call of calls) expect(((call.args as unknown[])[1] as { abortSignal?: AbortSignal }).abortSignal).toBe(controller.signal);

    expect(quotes.map((q) => [q.az, q.instanceType, q.pricePerHour])).toEqual([
      ['us-east-1a', 'c7a.2xlarge', 0.1345],
      ['us-east-1b', 'c7a.2xlarge', 0.1287],
      ['us-east-1a', 'c6a.4xlarge', 0.2812],
    ]);
  });

  it('keeps the newest price per (type, AZ), not the lowest, and ignores Local Zones and other products', async () => {
    ec2.on(DescribeSpotPriceHistoryCommand).resolves({
      SpotPriceHistory: [
        // The price changed during the window: the newest one is what a launch pays now.
        price('eu-west-1a', 'c7a.2xlarge', '0.097100', NOW),
        price('eu-west-1a', 'c7a.2xlarge', '0.061300', hoursAgo(20)),
        price('eu-west-1b', 'c7a.2xlarge', '0.088000', hoursAgo(48)),
        // A Local Zone needs an opt-in and its own subnet: not a place we launch.
        price('us-east-1-bos-1a', 'c7a.2xlarge', '0.010000', hoursAgo(1)),
        { ...price('eu-west-1c', 'c7a.2xlarge', '0.020000', hoursAgo(1)), ProductDescription: 'Windows' },
      ],
    });
    const quotes = await fetchSpotPrices(new EC2Client({ region: 'eu-west-1' }), {
      region: 'eu-west-1',
      instanceTypes: ['c7a.2xlarge'],
      now: () => NOW,
    });
    expect(quotes.map((q) => [q.az, q.pricePerHour, q.since.toISOString()])).toEqual([
      ['eu-west-1a', 0.0971, NOW.toISOString()],
      ['eu-west-1b', 0.088, hoursAgo(48).toISOString()],
    ]);
    expect(ec2.commandCalls(DescribeSpotPriceHistoryCommand)[0]!.args[0].input.StartTime).toEqual(NOW);
  });
});

describe('priceRegions', () => {
  it('reports and skips regions that fail (permission, opt-in, timeout) and keeps the rest', async () => {
    ec2.on(DescribeSpotPriceHistoryCommand).callsFake(async (_input, getClient) => {
      const client = getClient();
      const region = await client.config.region();
      switch (region) {
        case 'eu-central-1':
          throw awsError(
            'UnauthorizedOperation',
            'You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ec2:DescribeSpotPriceHistory',
            403,
          );
        case 'ap-south-1':
          throw awsError('OptInRequired', 'You are not subscribed to this service. Please go to http://aws.amazon.com to subscribe.', 401);
        case 'ap-northeast-1':
          return await new Promise(() => undefined); // never answers
        default:
          return { SpotPriceHistory: [price(`${region}a`, 'c7a.2xlarge', '0.120000', hoursAgo(3))] };
      }
    });
    const result = await priceRegions({
      regions: ['us-east-1', 'eu-central-1', 'ap-south-1', 'ap-northeast-1', 'us-west-2'],
      instanceTypes: ['c7a.2xlarge'],
      clientFor,
      regionTimeoutMs: 300,
      concurrency: 2,
    });
    expect(result.answered).toEqual(['us-east-1', 'us-west-2']);
    expect(result.quotes.map((q) => q.az)).toEqual(['us-east-1a', 'us-west-2a']);
    expect(result.failures.map((f) => [f.region, f.errorName])).toEqual([
      ['eu-central-1', 'UnauthorizedOperation'],
      ['ap-south-1', 'OptInRequired'],
      ['ap-northeast-1', 'Timeout'],
    ]);
    expect(result.failures[0]!.remediation).toMatch(/grant ec2:DescribeSpotPriceHistory/);
    expect(result.failures[1]!.remediation).toMatch(/aws account enable-region --region-name ap-south-1/);
  });

  it('fails with a UserError only when every region fails', async () => {
    ec2
      .on(DescribeSpotPriceHistoryCommand)
      .rejects(awsError('AuthFailure', 'AWS was not able to validate the provided access credentials', 401));
    const err = await priceRegions({ regions: ['us-east-1', 'us-east-2'], instanceTypes: ['c7a.2xlarge'], clientFor }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toMatch(
      /no region answered the spot price query \(us-east-1: AuthFailure, us-east-2: AuthFailure\)/,
    );
    expect((err as UserError).remediation).toMatch(/aws sts get-caller-identity/);
  });

  it('queries at most `concurrency` regions at once', async () => {
    let inFlight = 0;
    let peak = 0;
    ec2.on(DescribeSpotPriceHistoryCommand).callsFake(async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 20));
      inFlight--;
      return { SpotPriceHistory: [] };
    });
    const result = await priceRegions({ regions: DEFAULT_REGIONS, instanceTypes: ['c7a.2xlarge'], clientFor, concurrency: 3 });
    expect(result.answered).toHaveLength(DEFAULT_REGIONS.length);
    expect(peak).toBe(3);
  });
});

describe('withTimeout', () => {
  it('settles on the timeout even when the work ignores its signal', async () => {
    // The work never settles: only the timeout can end this.
    await expect(withTimeout(undefined, 50, () => new Promise(() => undefined))).rejects.toMatchObject({ name: 'TimeoutError' });
  });

  it('keeps its deadline under a parent signal through full GCs', async () => {
    // On Node 20 an AbortSignal.timeout() that only an AbortSignal.any() reaches can be collected
    // and never fire: the search would then wait for a stuck region for good.
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    let settled = false;
    const racing = withTimeout(new AbortController().signal, 200, () => new Promise(() => undefined)).finally(() => (settled = true));
    racing.catch(() => undefined);
    for (let i = 0; i < 100 && !settled; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    await expect(racing).rejects.toMatchObject({ name: 'TimeoutError' });
  });
});

describe('resolveRegions', () => {
  it('defaults to eight regions, --regions lists, --region and AWS_REGION pin one', () => {
    expect(resolveRegions({ env: {} })).toEqual({ regions: [...DEFAULT_REGIONS] });
    expect(DEFAULT_REGIONS).toEqual([
      'us-east-1',
      'us-east-2',
      'us-west-2',
      'eu-west-1',
      'eu-central-1',
      'ap-south-1',
      'ap-southeast-1',
      'ap-northeast-1',
    ]);
    expect(resolveRegions({ regions: 'eu-west-1, us-east-2', env: { AWS_REGION: 'us-west-2' } })).toEqual({
      regions: ['eu-west-1', 'us-east-2'],
    });
    expect(resolveRegions({ region: 'eu-west-1', env: { AWS_REGION: 'us-west-2' } })).toEqual({
      regions: ['eu-west-1'],
      pinnedBy: '--region',
    });
    expect(resolveRegions({ env: { AWS_REGION: 'us-west-2' } })).toEqual({ regions: ['us-west-2'], pinnedBy: 'AWS_REGION' });
    expect(() => resolveRegions({ regions: 'us-east-1', region: 'us-east-2', env: {} })).toThrow(/both given/);
    expect(() => resolveRegions({ regions: 'us-east-1,mars', env: {} })).toThrow(/invalid region 'mars'/);
  });

  it('refuses region names AWS does not have, up front, unless SPOTCTL_EXTRA_REGIONS names them', () => {
    expect(() => resolveRegions({ region: 'xx-fake-9', env: {} })).toThrow(/--region: unknown region 'xx-fake-9'/);
    expect(() => resolveRegions({ regions: 'us-east-1,us-east-7', env: {} })).toThrow(
      /--regions: unknown region 'us-east-7' \(known: .*us-east-1, us-east-2/,
    );
    expect(() => resolveRegions({ env: { AWS_REGION: 'eu-fake-1' } })).toThrow(/AWS_REGION: unknown region 'eu-fake-1'/);
    expect(resolveRegions({ regions: 'us-east-1,xx-fake-9', env: { SPOTCTL_EXTRA_REGIONS: 'yy-new-1, xx-fake-9' } }).regions).toEqual([
      'us-east-1',
      'xx-fake-9',
    ]);
    expect(resolveRegions({ region: 'cn-north-1', env: {} }).regions).toEqual(['cn-north-1']);
  });
});
