import {
  DescribeInstancesCommand,
  DescribeSubnetsCommand,
  EC2Client,
  EC2ServiceException,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import { UserError } from '@spotctl/shared';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import type { RegionInfra } from './infra.ts';
import { instanceTags, launchInstance, runInstancesInput, terminateRun, waitForRunning, type RunTags } from './launch.ts';
import type { PlacementCandidate } from './placement.ts';
import { NEVER, TAG, tagMap } from './tags.ts';

const ec2 = mockClient(EC2Client);
afterEach(() => ec2.reset());

const clientFor = async (region: string): Promise<EC2Client> => new EC2Client({ region });
const awsError = (name: string, message = name): EC2ServiceException =>
  new EC2ServiceException({ name, $fault: 'client', $metadata: { httpStatusCode: 400 }, message });

const CREATED = new Date('2026-03-14T09:30:00.000Z');
const TAGS: RunTags = {
  runId: '20260314-093000-ab12',
  owner: 'arn:aws:iam::111122223333:user/alice',
  command: ['python3', 'train.py', '--lr', '3e-4', 'it is'],
  createdAt: CREATED,
  expiresAt: new Date(CREATED.getTime() + 3_600_000),
  sshUser: 'ubuntu',
  launchedFrom: 'laptop',
  detached: false,
};

const candidate = (over: Partial<PlacementCandidate> = {}): PlacementCandidate => ({
  region: 'us-east-2',
  az: 'us-east-2b',
  instanceType: 'c7a.2xlarge',
  vcpus: 8,
  pricePerHour: 0.0712,
  architecture: 'x86_64',
  priceSince: '2026-03-14T08:00:00.000Z',
  ...over,
});

const infra = (region = 'us-east-2'): RegionInfra => ({
  region,
  vpcId: `vpc-${region}`,
  keyName: 'spotctl-0123456789ab',
  privateKeyPath: '/home/u/.spotctl/keys/spotctl-0123456789ab',
  securityGroupId: `sg-${region}`,
  sshCidr: '198.51.100.23/32',
  image: { imageId: 'ami-0a1b', name: 'ubuntu noble', baked: false, rootDeviceName: '/dev/sda1', rootSnapshotGiB: 8 },
});

describe('runInstancesInput', () => {
  const input = runInstancesInput({
    candidate: candidate({ instanceType: 'c6a.2xlarge', cpuOptions: { CoreCount: 4, ThreadsPerCore: 1 } }),
    market: 'spot',
    infra: infra(),
    subnetId: 'subnet-b',
    userData: '#cloud-config\nssh_keys: {}\n',
    tags: TAGS,
    clientToken: `${TAGS.runId}-1`,
  });

  it('asks for a one-time spot instance that terminates on interruption and on an OS shutdown', () => {
    expect(input.InstanceMarketOptions).toEqual({
      MarketType: 'spot',
      SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' },
    });
    expect(input.InstanceInitiatedShutdownBehavior).toBe('terminate');
  });

  it('requires IMDSv2 with hop limit 2', () => {
    expect(input.MetadataOptions).toEqual({ HttpTokens: 'required', HttpPutResponseHopLimit: 2, HttpEndpoint: 'enabled' });
  });

  it('pins the placement: type, AZ, that AZ’s subnet, both CPU options', () => {
    expect(input.InstanceType).toBe('c6a.2xlarge');
    expect(input.Placement).toEqual({ AvailabilityZone: 'us-east-2b' });
    expect(input.NetworkInterfaces).toEqual([
      { DeviceIndex: 0, SubnetId: 'subnet-b', Groups: ['sg-us-east-2'], AssociatePublicIpAddress: true, DeleteOnTermination: true },
    ]);
    expect(input.CpuOptions).toEqual({ CoreCount: 4, ThreadsPerCore: 1 });
    expect(input.SubnetId).toBeUndefined();
    expect(input.SecurityGroupIds).toBeUndefined();
  });

  it('deletes the root volume with the instance, and sizes it at least as large as the image', () => {
    expect(input.BlockDeviceMappings).toEqual([
      { DeviceName: '/dev/sda1', Ebs: { DeleteOnTermination: true, VolumeType: 'gp3', VolumeSize: 30 } },
    ]);
    const big = runInstancesInput({
      candidate: candidate(),
      market: 'spot',
      infra: { ...infra(), image: { ...infra().image, rootSnapshotGiB: 64 } },
      subnetId: 's',
      userData: 'x',
      tags: TAGS,
      clientToken: 't',
    });
    expect(big.BlockDeviceMappings?.[0]?.Ebs?.VolumeSize).toBe(64);
  });

  it('tags the instance, its volume and its spot request from the start', () => {
    expect(input.TagSpecifications?.map((t) => t.ResourceType)).toEqual(['instance', 'volume', 'spot-instances-request']);
    const tags = tagMap(input.TagSpecifications?.[0]?.Tags);
    expect(tags).toMatchObject({
      [TAG.managed]: 'true',
      [TAG.runId]: TAGS.runId,
      [TAG.owner]: TAGS.owner,
      [TAG.created]: '2026-03-14T09:30:00.000Z',
      [TAG.expiresAt]: '2026-03-14T10:30:00.000Z',
      [TAG.command]: "python3 train.py --lr 3e-4 'it is'",
      [TAG.market]: 'spot',
      [TAG.price]: '0.0712',
      [TAG.sshUser]: 'ubuntu',
      Name: `spotctl ${TAGS.runId}`,
    });
  });

  it('base64-encodes the user-data and carries an idempotency token', () => {
    expect(Buffer.from(input.UserData!, 'base64').toString()).toBe('#cloud-config\nssh_keys: {}\n');
    expect(input.ClientToken).toBe(`${TAGS.runId}-1`);
    expect(input.KeyName).toBe('spotctl-0123456789ab');
    expect(input.ImageId).toBe('ami-0a1b');
    expect([input.MinCount, input.MaxCount]).toEqual([1, 1]);
  });

  it('on-demand has no market options and no price tag', () => {
    const od = runInstancesInput({
      candidate: candidate(),
      market: 'on-demand',
      infra: infra(),
      subnetId: 's',
      userData: 'x',
      tags: TAGS,
      clientToken: 't',
    });
    expect(od.InstanceMarketOptions).toBeUndefined();
    expect(od.InstanceInitiatedShutdownBehavior).toBe('terminate');
    expect(tagMap(od.TagSpecifications?.[0]?.Tags)[TAG.price]).toBeUndefined();
    expect(od.TagSpecifications?.map((t) => t.ResourceType)).toEqual(['instance', 'volume']);
  });

  it('clips a long command to the 256-character tag limit', () => {
    const tags = instanceTags({ ...TAGS, command: ['python3', 'x'.repeat(400)], expiresAt: NEVER }, candidate(), 'spot');
    expect([...tags[TAG.command]!].length).toBe(256);
    expect(tags[TAG.expiresAt]).toBe('never');
  });
});

describe('launchInstance', () => {
  it('fails over to the next placement and launches it in its own AZ subnet', async () => {
    ec2.on(DescribeSubnetsCommand).callsFake((input: { Filters?: { Name?: string; Values?: string[] }[] }) => {
      const az = input.Filters?.find((f) => f.Name === 'availability-zone')?.Values?.[0];
      return { Subnets: [{ SubnetId: `subnet-${az}` }] };
    });
    ec2
      .on(RunInstancesCommand)
      .rejectsOnce(awsError('InsufficientInstanceCapacity', 'We currently do not have sufficient c7a.2xlarge capacity in us-east-2b.'))
      .resolves({ Instances: [{ InstanceId: 'i-0abc', Placement: { AvailabilityZone: 'us-east-2c' } }] });
    const touched: string[] = [];
    const result = await launchInstance({
      candidates: [candidate(), candidate({ az: 'us-east-2c', pricePerHour: 0.08 })],
      clientFor,
      infraFor: async (region) => infra(region),
      userDataFor: () => '#cloud-config\n',
      tags: TAGS,
      onRegionTouched: (r) => touched.push(r),
      now: () => 42,
    });
    expect(result.value).toMatchObject({
      instanceId: 'i-0abc',
      az: 'us-east-2c',
      pricePerHour: 0.08,
      market: 'spot',
      subnetId: 'subnet-us-east-2c',
      launchedAt: 42,
    });
    const sent = ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input as RunInstancesCommandInput);
    expect(sent.map((i) => [i.Placement?.AvailabilityZone, i.NetworkInterfaces?.[0]?.SubnetId, i.ClientToken])).toEqual([
      ['us-east-2b', 'subnet-us-east-2b', `${TAGS.runId}-1`],
      ['us-east-2c', 'subnet-us-east-2c', `${TAGS.runId}-2`],
    ]);
    expect(touched).toEqual(['us-east-2', 'us-east-2']);
  });

  it('waits out a new instance profile EC2 does not know yet, in the same placement, with a fresh token', async () => {
    ec2.on(DescribeSubnetsCommand).resolves({ Subnets: [{ SubnetId: 'subnet-b' }] });
    const arn = 'arn:aws:iam::111122223333:instance-profile/spotctl/spotctl-run-20260314-093000-ab12';
    ec2
      .on(RunInstancesCommand)
      .rejectsOnce(
        awsError(
          'InvalidParameterValue',
          `Value (${arn}) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN`,
        ),
      )
      .resolves({ Instances: [{ InstanceId: 'i-0prof', Placement: { AvailabilityZone: 'us-east-2b' } }] });
    const result = await launchInstance({
      candidates: [candidate(), candidate({ az: 'us-east-2c' })],
      clientFor,
      infraFor: async (region) => infra(region),
      userDataFor: () => '#cloud-config\n',
      tags: TAGS,
      instanceProfileArn: arn,
      profileRetryIntervalMs: 10,
    });
    expect(result.value).toMatchObject({ instanceId: 'i-0prof', az: 'us-east-2b' });
    const sent = ec2.commandCalls(RunInstancesCommand).map((c) => c.args[0].input as RunInstancesCommandInput);
    expect(sent.map((i) => [i.Placement?.AvailabilityZone, i.IamInstanceProfile?.Arn, i.ClientToken])).toEqual([
      ['us-east-2b', arn, `${TAGS.runId}-1`],
      ['us-east-2b', arn, `${TAGS.runId}-1-p2`],
    ]);
  });

  it('gives up on the profile at its deadline with the error, and never retries that error without a profile', async () => {
    ec2.on(DescribeSubnetsCommand).resolves({ Subnets: [{ SubnetId: 'subnet-b' }] });
    ec2
      .on(RunInstancesCommand)
      .rejects(
        awsError('InvalidParameterValue', 'Value (x) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name'),
      );
    const base = {
      candidates: [candidate()],
      clientFor,
      infraFor: async (region: string) => infra(region),
      userDataFor: () => '#cloud-config\n',
      tags: TAGS,
    };
    await expect(
      launchInstance({
        ...base,
        instanceProfileArn: 'arn:aws:iam::1:instance-profile/x',
        profileRetryIntervalMs: 10,
        profilePropagationTimeoutMs: 100,
      }),
    ).rejects.toBeInstanceOf(UserError);
    const tries = ec2.commandCalls(RunInstancesCommand).length;
    expect(tries).toBeGreaterThan(2);
    ec2.resetHistory();
    await expect(launchInstance(base)).rejects.toBeInstanceOf(UserError);
    expect(ec2.commandCalls(RunInstancesCommand)).toHaveLength(1);
  });

  it('skips a region whose infrastructure cannot be set up and launches in the next one', async () => {
    ec2.on(DescribeSubnetsCommand).resolves({ Subnets: [{ SubnetId: 'subnet-w' }] });
    ec2.on(RunInstancesCommand).resolves({ Instances: [{ InstanceId: 'i-0west', Placement: { AvailabilityZone: 'us-west-2a' } }] });
    const noVpc = new UserError('SPOTCTL_AWS_REQUEST', 'us-east-2 has no default VPC', {
      remediation: 'aws ec2 create-default-vpc --region us-east-2',
    });
    const events: string[] = [];
    const result = await launchInstance({
      candidates: [candidate(), candidate({ az: 'us-east-2c' }), candidate({ region: 'us-west-2', az: 'us-west-2a', pricePerHour: 0.09 })],
      clientFor,
      infraFor: async (region) => {
        if (region === 'us-east-2') throw noVpc;
        return infra(region);
      },
      userDataFor: () => '#cloud-config\n',
      tags: TAGS,
      onAttempt: (e) =>
        events.push(
          e.type === 'failed'
            ? `failed ${e.candidate.region} ${e.errorName} +${e.ruledOut}`
            : e.type === 'fallback'
              ? e.type
              : `${e.type} ${e.candidate.region}`,
        ),
    });
    expect(result.value).toMatchObject({ instanceId: 'i-0west', region: 'us-west-2' });
    expect(events).toEqual(['trying us-east-2', 'failed us-east-2 RegionSetup +1', 'trying us-west-2', 'launched us-west-2']);
    // With no other region left, the setup error itself (and its remediation) surfaces.
    await expect(
      launchInstance({
        candidates: [candidate()],
        clientFor,
        infraFor: async () => await Promise.reject(noVpc),
        userDataFor: () => '',
        tags: TAGS,
      }),
    ).rejects.toBe(noVpc);
  });
});

describe('waitForRunning', () => {
  it('waits through pending until there is a public address', async () => {
    ec2
      .on(DescribeInstancesCommand)
      .rejectsOnce(awsError('InvalidInstanceID.NotFound'))
      .resolvesOnce({ Reservations: [{ Instances: [{ InstanceId: 'i-1', State: { Name: 'pending' } }] }] })
      .resolvesOnce({ Reservations: [{ Instances: [{ InstanceId: 'i-1', State: { Name: 'running' } }] }] })
      .resolves({ Reservations: [{ Instances: [{ InstanceId: 'i-1', State: { Name: 'running' }, PublicIpAddress: '203.0.113.50' }] }] });
    const r = await waitForRunning(new EC2Client({ region: 'us-east-2' }), 'i-1', { intervalMs: 1, sleep: async () => undefined });
    expect(r.address).toBe('203.0.113.50');
    expect(ec2.commandCalls(DescribeInstancesCommand)).toHaveLength(4);
  });

  it('an instance that dies before running is an error, not a wait', async () => {
    ec2.on(DescribeInstancesCommand).resolves({
      Reservations: [
        { Instances: [{ InstanceId: 'i-1', State: { Name: 'terminated' }, StateReason: { Message: 'Server.SpotInstanceTermination' } }] },
      ],
    });
    await expect(
      waitForRunning(new EC2Client({ region: 'us-east-2' }), 'i-1', { intervalMs: 1, sleep: async () => undefined }),
    ).rejects.toThrow(UserError);
  });

  it('is bounded', async () => {
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: [{ InstanceId: 'i-1', State: { Name: 'pending' } }] }] });
    await expect(
      waitForRunning(new EC2Client({ region: 'us-east-2' }), 'i-1', {
        timeoutMs: 30,
        intervalMs: 10,
        sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      }),
    ).rejects.toThrow(/not running/);
  });
});

describe('terminateRun', () => {
  it('finds the run by its tag (also an instance whose id we never saw) and terminates only those', async () => {
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: [{ InstanceId: 'i-unseen' }] }] });
    ec2
      .on(TerminateInstancesCommand)
      .callsFake((input: { InstanceIds: string[] }) => ({ TerminatingInstances: input.InstanceIds.map((InstanceId) => ({ InstanceId })) }));
    const r = await terminateRun(clientFor, ['us-east-2'], TAGS.runId, { knownIds: new Map([['i-known', 'us-east-2']]) });
    expect(r.failed).toEqual([]);
    expect(r.terminated.map((t) => t.instanceId).sort()).toEqual(['i-known', 'i-unseen']);
    const filters = ec2.commandCalls(DescribeInstancesCommand)[0]!.args[0].input.Filters;
    expect(filters).toEqual(
      expect.arrayContaining([
        { Name: `tag:${TAG.runId}`, Values: [TAGS.runId] },
        { Name: `tag:${TAG.managed}`, Values: ['true'] },
      ]),
    );
  });

  it('still terminates the known id when the search fails, and reports what it could not do', async () => {
    ec2.on(DescribeInstancesCommand).rejects(awsError('RequestLimitExceeded'));
    ec2.on(TerminateInstancesCommand).resolves({ TerminatingInstances: [{ InstanceId: 'i-known' }] });
    const r = await terminateRun(clientFor, ['us-east-2'], TAGS.runId, { knownIds: new Map([['i-known', 'us-east-2']]) });
    expect(r.terminated).toEqual([{ region: 'us-east-2', instanceId: 'i-known' }]);

    ec2.reset();
    ec2.on(DescribeInstancesCommand).rejects(awsError('UnauthorizedOperation'));
    const r2 = await terminateRun(clientFor, ['eu-west-1'], TAGS.runId);
    expect(r2.terminated).toEqual([]);
    expect(r2.failed.map((f) => f.region)).toEqual(['eu-west-1']);
  });
});
