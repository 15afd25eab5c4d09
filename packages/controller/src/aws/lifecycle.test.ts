import {
  DeleteKeyPairCommand,
  DeleteSecurityGroupCommand,
  DescribeInstancesCommand,
  DescribeKeyPairsCommand,
  DescribeNetworkInterfacesCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  TerminateInstancesCommand,
  type Instance,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { gcManaged, isExpired, listManagedInstances, spendOf, terminateManaged } from './lifecycle.ts';
import { TAG } from './tags.ts';

const ec2 = mockClient(EC2Client);
afterEach(() => ec2.reset());
const clientFor = async (region: string): Promise<EC2Client> => new EC2Client({ region });

const NOW = Date.parse('2026-03-14T12:00:00.000Z');
const HOUR = 3_600_000;
const instance = (id: string, tags: Record<string, string>, extra: Partial<Instance> = {}): Instance => ({
  InstanceId: id,
  InstanceType: 'c7a.large',
  State: { Name: 'running' },
  Placement: { AvailabilityZone: 'us-east-2a' },
  LaunchTime: new Date(NOW - 2 * HOUR),
  Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })),
  ...extra,
});
const ours = (id: string, expiresAt: string) =>
  instance(id, { [TAG.managed]: 'true', [TAG.role]: 'run', [TAG.runId]: `run-${id}`, [TAG.expiresAt]: expiresAt, [TAG.price]: '0.5' });

describe('expiry and spend', () => {
  it('never and unreadable values never expire', () => {
    expect(isExpired({ expiresAt: 'never' }, NOW)).toBe(false);
    expect(isExpired({ expiresAt: 'soon' }, NOW)).toBe(false);
    expect(isExpired({ expiresAt: undefined }, NOW)).toBe(false);
    expect(isExpired({ expiresAt: new Date(NOW - 1).toISOString() }, NOW)).toBe(true);
    expect(isExpired({ expiresAt: new Date(NOW + 1).toISOString() }, NOW)).toBe(false);
  });
  it('spend is price × hours at the tagged price', () => {
    expect(spendOf({ pricePerHour: 0.5, launchedAt: NOW - 2 * HOUR, state: 'running' }, NOW)).toBeCloseTo(1.0);
    expect(spendOf({ pricePerHour: undefined, launchedAt: NOW, state: 'running' }, NOW)).toBeUndefined();
  });
});

describe('listing', () => {
  it('asks for the managed tag, and drops anything that lacks it whatever the answer holds', async () => {
    ec2
      .on(DescribeInstancesCommand)
      .resolves({ Reservations: [{ Instances: [ours('i-1', 'never'), instance('i-2', { Name: 'theirs' })] }] });
    const { instances } = await listManagedInstances({ clientFor, regions: ['us-east-2'] });
    expect(instances.map((i) => i.instanceId)).toEqual(['i-1']);
    expect(ec2.commandCalls(DescribeInstancesCommand)[0]!.args[0].input.Filters).toContainEqual({
      Name: `tag:${TAG.managed}`,
      Values: ['true'],
    });
  });
  it('a failing region is reported and the others still answer', async () => {
    ec2.on(DescribeInstancesCommand).callsFake(async (_input, getClient) => {
      if ((await getClient().config.region()) === 'eu-west-1')
        throw Object.assign(new Error('denied'), { name: 'UnauthorizedOperation', $fault: 'client', $metadata: {} });
      return { Reservations: [{ Instances: [ours('i-1', 'never')] }] };
    });
    const { instances, errors } = await listManagedInstances({ clientFor, regions: ['us-east-2', 'eu-west-1'] });
    expect(instances).toHaveLength(1);
    expect(errors.map((e) => e.region)).toEqual(['eu-west-1']);
  });
});

describe('gc', () => {
  it('terminates only expired instances that carry our tag, and keeps what is used or young', async () => {
    const old = new Date(NOW - 2 * HOUR).toISOString();
    ec2.on(DescribeInstancesCommand).callsFake((input: { Filters?: { Name?: string }[] }) => {
      if (input.Filters?.some((f) => f.Name === 'key-name')) return { Reservations: [{ Instances: [{ InstanceId: 'i-live' }] }] };
      return {
        Reservations: [
          {
            Instances: [
              ours('i-expired', new Date(NOW - HOUR).toISOString()),
              ours('i-live', new Date(NOW + HOUR).toISOString()),
              ours('i-never', 'never'),
              // A filter that misbehaves must still not get an untagged instance terminated.
              instance('i-untagged', { [TAG.expiresAt]: new Date(NOW - 10 * HOUR).toISOString() }),
            ],
          },
        ],
      };
    });
    ec2
      .on(TerminateInstancesCommand)
      .callsFake((input: { InstanceIds: string[] }) => ({ TerminatingInstances: input.InstanceIds.map((InstanceId) => ({ InstanceId })) }));
    ec2.on(DescribeKeyPairsCommand).resolves({
      KeyPairs: [
        {
          KeyName: 'spotctl-used',
          Tags: [
            { Key: TAG.managed, Value: 'true' },
            { Key: TAG.created, Value: old },
          ],
        },
        {
          KeyName: 'spotctl-young',
          Tags: [
            { Key: TAG.managed, Value: 'true' },
            { Key: TAG.created, Value: new Date(NOW - 60_000).toISOString() },
          ],
        },
        { KeyName: 'untagged', Tags: [] },
      ],
    });
    ec2.on(DescribeSecurityGroupsCommand).resolves({
      SecurityGroups: [
        {
          GroupId: 'sg-used',
          Tags: [
            { Key: TAG.managed, Value: 'true' },
            { Key: TAG.created, Value: old },
          ],
        },
        {
          GroupId: 'sg-free',
          Tags: [
            { Key: TAG.managed, Value: 'true' },
            { Key: TAG.created, Value: old },
          ],
        },
        { GroupId: 'sg-theirs', Tags: [] },
      ],
    });
    ec2.on(DescribeNetworkInterfacesCommand).callsFake((input: { Filters?: { Values?: string[] }[] }) => ({
      NetworkInterfaces: input.Filters?.[0]?.Values?.[0] === 'sg-used' ? [{ NetworkInterfaceId: 'eni-1' }] : [],
    }));
    ec2.on(DeleteKeyPairCommand).resolves({});
    ec2.on(DeleteSecurityGroupCommand).resolves({});

    const report = await gcManaged({ clientFor, regions: ['us-east-2'], now: () => NOW });
    expect(ec2.commandCalls(TerminateInstancesCommand).flatMap((c) => c.args[0].input.InstanceIds)).toEqual(['i-expired']);
    // spotctl-used is used by i-live; spotctl-young is too young; untagged is not ours.
    expect(ec2.commandCalls(DeleteKeyPairCommand)).toHaveLength(0);
    expect(ec2.commandCalls(DeleteSecurityGroupCommand).map((c) => c.args[0].input.GroupId)).toEqual(['sg-free']);
    expect(report.actions.map((a) => `${a.kind}:${a.id}:${a.done}`)).toEqual(['instance:i-expired:true', 'security-group:sg-free:true']);
  });

  it('a dry run changes nothing', async () => {
    ec2.on(DescribeInstancesCommand).resolves({ Reservations: [{ Instances: [ours('i-expired', new Date(NOW - HOUR).toISOString())] }] });
    ec2.on(DescribeKeyPairsCommand).resolves({ KeyPairs: [] });
    ec2.on(DescribeSecurityGroupsCommand).resolves({ SecurityGroups: [] });
    const report = await gcManaged({ clientFor, regions: ['us-east-2'], now: () => NOW, dryRun: true });
    expect(report.actions.map((a) => a.id)).toEqual(['i-expired']);
    expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(0);
  });
});

it('terminateManaged refuses instances without the managed tag', async () => {
  ec2
    .on(TerminateInstancesCommand)
    .callsFake((input: { InstanceIds: string[] }) => ({ TerminatingInstances: input.InstanceIds.map((InstanceId) => ({ InstanceId })) }));
  const forged = { instanceId: 'i-x', region: 'us-east-2', tags: { [TAG.runId]: 'r' } } as unknown as Parameters<
    typeof terminateManaged
  >[1][number];
  const r = await terminateManaged(clientFor, [forged]);
  expect(r.terminated).toEqual([]);
  expect(ec2.commandCalls(TerminateInstancesCommand)).toHaveLength(0);
});
