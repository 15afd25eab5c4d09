import { DescribeInstanceTypesCommand, EC2Client, EC2ServiceException } from '@aws-sdk/client-ec2';
import { UserError } from '@spotctl/shared';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { INSTANCE_TYPES, typesOf } from '../../../../test/fixtures/ec2-instance-types.ts';
import {
  chooseTypes,
  choosePinnedTypes,
  describeInstanceTypes,
  findCandidateTypes,
  parseFamilies,
  sizeType,
  toSpec,
  vcpusNeeded,
  type InstanceTypeSpec,
} from './sizing.ts';

const ec2 = mockClient(EC2Client);
afterEach(() => ec2.reset());

const specs = (...families: string[]): InstanceTypeSpec[] => typesOf(...families).map((t) => toSpec(t)!);
const spec = (name: string): InstanceTypeSpec => toSpec(INSTANCE_TYPES.find((t) => t.InstanceType === name)!)!;
const names = (types: { instanceType: string }[]): string[] => types.map((t) => t.instanceType);

describe('the vCPU rule', () => {
  it('is 2N+2 on x86 with two threads per core and N+2 with one', () => {
    expect(vcpusNeeded(4, 2)).toBe(10);
    expect(vcpusNeeded(4, 1)).toBe(6);
    expect(vcpusNeeded(1, 2)).toBe(4);
  });

  it('picks the smallest fitting size per family plus one size up (x86, 4 workers)', () => {
    const { types, notes } = chooseTypes(specs('c6a', 'c7a'), { workers: 4, architecture: 'x86_64' });
    // c6a has SMT: needs 10 vCPUs → 4xlarge (16). c7a is one vCPU per core: needs 6 → 2xlarge (8).
    expect(names(types)).toEqual(['c6a.4xlarge', 'c6a.8xlarge', 'c7a.2xlarge', 'c7a.4xlarge']);
    expect(types.every((t) => t.cpuOptions === undefined)).toBe(true);
    expect(notes).toEqual([]);
  });

  it('sizes Graviton at N+2 and never picks metal or the wrong architecture', () => {
    const { types } = chooseTypes(specs('c6g', 'c7g', 'c6a'), { workers: 4, architecture: 'arm64' });
    expect(names(types)).toEqual(['c6g.2xlarge', 'c6g.4xlarge', 'c7g.2xlarge', 'c7g.4xlarge']);
    const big = chooseTypes(specs('c7g'), { workers: 62, architecture: 'arm64' });
    expect(names(big.types)).toEqual(['c7g.16xlarge']); // c7g.metal (64) is left out
  });

  it('leaves out types that are not sold as spot', () => {
    const onDemandOnly = { ...spec('c7a.2xlarge'), supportsSpot: false };
    expect(names(chooseTypes([onDemandOnly, spec('c7a.4xlarge')], { workers: 4, architecture: 'x86_64' }).types)).toEqual(['c7a.4xlarge']);
  });
});

describe('--no-ht', () => {
  it('gives SMT types CoreCount and ThreadsPerCore together, with every valid core', () => {
    const fit = sizeType(spec('c6a.4xlarge'), { workers: 4, architecture: 'x86_64', noHt: true });
    expect(fit).toMatchObject({ ok: true, type: { vcpus: 8, threadsPerCore: 1, cpuOptions: { CoreCount: 8, ThreadsPerCore: 1 } } });
  });

  it('needs N+1 physical cores: c6a.2xlarge (4 cores) does not fit 4 workers', () => {
    expect(sizeType(spec('c6a.2xlarge'), { workers: 4, architecture: 'x86_64', noHt: true })).toMatchObject({ ok: false });
    expect(sizeType(spec('c6a.2xlarge'), { workers: 3, architecture: 'x86_64', noHt: true })).toMatchObject({
      ok: true,
      type: { cpuOptions: { CoreCount: 4, ThreadsPerCore: 1 } },
    });
  });

  it('leaves one-thread-per-core types alone, with a note (Graviton rejects CPU option changes)', () => {
    const x86 = chooseTypes(specs('c6a', 'c7a'), { workers: 4, architecture: 'x86_64', noHt: true });
    expect(names(x86.types)).toEqual(['c6a.4xlarge', 'c6a.8xlarge', 'c7a.2xlarge', 'c7a.4xlarge']);
    expect(x86.types.find((t) => t.instanceType === 'c6a.8xlarge')?.cpuOptions).toEqual({ CoreCount: 16, ThreadsPerCore: 1 });
    expect(x86.types.find((t) => t.instanceType === 'c7a.2xlarge')?.cpuOptions).toBeUndefined();
    expect(x86.notes.join('\n')).toMatch(/c7a already has one thread per core/);

    const arm = chooseTypes(specs('c7g'), { workers: 4, architecture: 'arm64', noHt: true });
    expect(arm.types.every((t) => t.cpuOptions === undefined)).toBe(true);
    expect(arm.notes.join('\n')).toMatch(/Graviton.*rejects CPU option changes/);
  });
});

describe('pinned --instance-type', () => {
  it('keeps a type that is too small, saying so, and drops one of the other architecture', () => {
    const { types, notes } = choosePinnedTypes([spec('c6a.large'), spec('c7g.2xlarge')], { workers: 4, architecture: 'x86_64' });
    expect(names(types)).toEqual(['c6a.large']);
    expect(notes.join('\n')).toMatch(/c6a.large has 2 vCPUs, 10 needed; using it anyway/);
    expect(notes.join('\n')).toMatch(/c7g.2xlarge left out: not x86_64 \(it is ARM: add --arm\)/);
  });
});

describe('DescribeInstanceTypes', () => {
  it('filters by family, architecture and spot, follows NextToken and passes the abort signal', async () => {
    const all = typesOf('c6a', 'c7a');
    ec2
      .on(DescribeInstanceTypesCommand)
      .resolvesOnce({ InstanceTypes: all.slice(0, 8), NextToken: 'page-2' })
      // A loose filter must not let c6gn (or any other family) through.
      .resolvesOnce({ InstanceTypes: [...all.slice(8), ...typesOf('c6gn')] });
    const controller = new AbortController();
    const client = new EC2Client({ region: 'us-east-1' });
    const found = await describeInstanceTypes(client, { architecture: 'x86_64', signal: controller.signal });

    expect(found.map((s) => s.instanceType).sort()).toEqual(all.map((t) => t.InstanceType).sort());
    const calls = ec2.commandCalls(DescribeInstanceTypesCommand);
    expect(calls).toHaveLength(2);
    expect(calls[0]!.args[0].input).toEqual({
      Filters: [
        { Name: 'instance-type', Values: ['c6a.*', 'c7a.*'] },
        { Name: 'processor-info.supported-architecture', Values: ['x86_64'] },
        { Name: 'supported-usage-class', Values: ['spot'] },
      ],
      MaxResults: 100,
    });
    expect(calls[1]!.args[0].input.NextToken).toBe('page-2');
    for (const call of calls) expect(((call.args as unknown[])[1] as { abortSignal?: AbortSignal }).abortSignal).toBe(controller.signal);
  });

  it('asks for exact types without filters when --instance-type is given', async () => {
    ec2.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: typesOf('c7a').filter((t) => t.InstanceType === 'c7a.2xlarge') });
    const choice = await findCandidateTypes({
      clientFor: async (region) => new EC2Client({ region }),
      regions: ['us-east-1'],
      workers: 4,
      architecture: 'x86_64',
      instanceTypes: ['c7a.2xlarge'],
    });
    expect(names(choice.types)).toEqual(['c7a.2xlarge']);
    expect(ec2.commandCalls(DescribeInstanceTypesCommand)[0]!.args[0].input).toEqual({ InstanceTypes: ['c7a.2xlarge'] });
  });

  it('tries the next region when one fails, and turns an unknown type into a UserError', async () => {
    const regionsAsked: string[] = [];
    ec2.on(DescribeInstanceTypesCommand).callsFake(async (_input, getClient) => {
      const region = await getClient().config.region();
      regionsAsked.push(region);
      if (region === 'us-east-1')
        throw new EC2ServiceException({
          name: 'RequestLimitExceeded',
          $fault: 'client',
          $metadata: { httpStatusCode: 503 },
          message: 'Request limit exceeded.',
        });
      return { InstanceTypes: typesOf('c7a') };
    });
    const choice = await findCandidateTypes({
      clientFor: async (region) => new EC2Client({ region }),
      regions: ['us-east-1', 'us-west-2'],
      workers: 4,
      architecture: 'x86_64',
      families: ['c7a'],
    });
    expect(regionsAsked).toEqual(['us-east-1', 'us-west-2']);
    expect(names(choice.types)).toEqual(['c7a.2xlarge', 'c7a.4xlarge']);

    ec2.reset();
    ec2.on(DescribeInstanceTypesCommand).rejects(
      new EC2ServiceException({
        name: 'InvalidInstanceType',
        $fault: 'client',
        $metadata: { httpStatusCode: 400 },
        message: 'The following supplied instance types do not exist: [c7a.2xlarg]',
      }),
    );
    const err = await findCandidateTypes({
      clientFor: async (region) => new EC2Client({ region }),
      regions: ['us-east-1', 'us-west-2'],
      workers: 4,
      architecture: 'x86_64',
      instanceTypes: ['c7a.2xlarg'],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).message).toMatch(/c7a.2xlarg is not a known EC2 instance type/);
    expect((err as UserError).remediation).toMatch(/aws ec2 describe-instance-types --instance-types/);
    // The same answer everywhere: no second region asked.
    expect(ec2.commandCalls(DescribeInstanceTypesCommand)).toHaveLength(1);
  });

  it('explains when nothing fits the architecture', async () => {
    ec2.on(DescribeInstanceTypesCommand).resolves({ InstanceTypes: [] });
    const err = await findCandidateTypes({
      clientFor: async (region) => new EC2Client({ region }),
      regions: ['us-east-1'],
      workers: 4,
      architecture: 'x86_64',
      families: ['c7g'],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).remediation).toMatch(/--arm/);
  });
});

describe('flags', () => {
  it('rejects malformed families and worker counts', async () => {
    expect(parseFamilies('c6a, C7A ,c6a')).toEqual(['c6a', 'c7a']);
    expect(() => parseFamilies('c6a,c7*')).toThrow(UserError);
    await expect(
      findCandidateTypes({
        clientFor: async (region) => new EC2Client({ region }),
        regions: ['us-east-1'],
        workers: 0,
        architecture: 'x86_64',
      }),
    ).rejects.toThrow(/--workers must be a whole number/);
  });
});
