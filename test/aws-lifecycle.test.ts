/**
 * `spotctl ls`, `teardown` and `gc` against moto, through the real CLI. The cloud holds a mix of
 * spotctl's resources and someone else's: gc and teardown must touch only what carries
 * `spotctl:managed=true`, whatever else it looks like.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { TEST_CREDENTIALS, loadEc2Sdk, startMotoEc2, type EC2Client, type MotoEc2 } from './helpers/aws-moto.ts';
import { createRunRole, listRunRoles, loadIamSdk, runRolePolicy } from '@spotctl/controller';
import { tmpDir, type TmpDir } from './helpers/tmp.ts';

const REGION = 'us-east-2';
const AMI = 'ami-0a1b2c3d4e5f60002';
const HOUR = 3_600_000;
const iso = (ms: number): string => new Date(ms).toISOString();

type Tags = Record<string, string>;
const spotctl = (runId: string, extra: Tags = {}): Tags => ({
  'spotctl:managed': 'true',
  'spotctl:role': 'run',
  'spotctl:run-id': runId,
  'spotctl:owner': 'arn:aws:sts::123456789012:user/moto',
  'spotctl:created': iso(Date.now() - 2 * HOUR),
  'spotctl:command': 'python3 train.py',
  'spotctl:market': 'spot',
  'spotctl:price': '0.05',
  ...extra,
});

describe('spotctl ls / teardown / gc against moto', () => {
  let moto: MotoEc2;
  let ec2: EC2Client & Disposable;
  let home: TmpDir;
  let sdk: Awaited<ReturnType<typeof loadEc2Sdk>>;

  const cli = (args: string[]) => runSpotctl(args, { home: home.path, env: moto.env(REGION), timeoutMs: 60_000 });
  const toTags = (tags: Tags) => Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));

  async function launch(tags: Tags | undefined, extra: { KeyName?: string; SecurityGroupIds?: string[] } = {}): Promise<string> {
    const r = await ec2.send(
      new sdk.RunInstancesCommand({
        ImageId: AMI,
        InstanceType: 'c7a.large',
        MinCount: 1,
        MaxCount: 1,
        ...extra,
        ...(tags ? { TagSpecifications: [{ ResourceType: 'instance', Tags: toTags(tags) }] } : {}),
      }),
    );
    return r.Instances![0]!.InstanceId!;
  }
  async function state(id: string): Promise<string | undefined> {
    const r = await ec2.send(new sdk.DescribeInstancesCommand({ InstanceIds: [id] }));
    return r.Reservations?.[0]?.Instances?.[0]?.State?.Name;
  }
  async function keyNames(): Promise<string[]> {
    return ((await ec2.send(new sdk.DescribeKeyPairsCommand({}))).KeyPairs ?? []).map((k) => k.KeyName!).sort();
  }
  async function groupNames(): Promise<string[]> {
    return ((await ec2.send(new sdk.DescribeSecurityGroupsCommand({}))).SecurityGroups ?? [])
      .map((g) => g.GroupName!)
      .filter((n) => n !== 'default')
      .sort();
  }
  async function keyPair(name: string, tags?: Tags): Promise<void> {
    await ec2.send(
      new sdk.CreateKeyPairCommand({
        KeyName: name,
        ...(tags ? { TagSpecifications: [{ ResourceType: 'key-pair', Tags: toTags(tags) }] } : {}),
      }),
    );
  }
  async function group(name: string, tags?: Tags): Promise<string> {
    const vpc = (await ec2.send(new sdk.DescribeVpcsCommand({ Filters: [{ Name: 'is-default', Values: ['true'] }] }))).Vpcs![0]!.VpcId!;
    const r = await ec2.send(
      new sdk.CreateSecurityGroupCommand({
        GroupName: name,
        Description: name,
        VpcId: vpc,
        ...(tags ? { TagSpecifications: [{ ResourceType: 'security-group', Tags: toTags(tags) }] } : {}),
      }),
    );
    return r.GroupId!;
  }

  beforeAll(async () => {
    sdk = await loadEc2Sdk();
    moto = await startMotoEc2();
    ec2 = await moto.ec2(REGION);
    home = await tmpDir();
  });
  afterAll(async () => {
    ec2?.[Symbol.dispose]();
    await moto?.close();
    await home?.[Symbol.asyncDispose]();
  });
  beforeEach(async () => {
    await moto.reset();
  });

  it('ls lists spotctl instances with price and spend, and nothing else', async () => {
    const mine = await launch(spotctl('run-a'));
    const theirs = await launch({ Name: 'not spotctl', 'spotctl:run-id': 'forged' });
    const r = await cli(['ls', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as {
      instanceId: string;
      region: string;
      instanceType: string;
      state: string;
      pricePerHour: number;
      spentUsd: number;
      runId: string;
      ageMs: number;
    }[];
    expect(rows.map((x) => x.instanceId)).toEqual([mine]);
    expect(rows[0]).toMatchObject({ region: REGION, instanceType: 'c7a.large', state: 'running', pricePerHour: 0.05, runId: 'run-a' });
    expect(rows[0]!.spentUsd).toBeGreaterThanOrEqual(0);
    expect(rows.some((x) => x.instanceId === theirs)).toBe(false);

    const text = await cli(['ls']);
    expect(text.stdout).toMatch(/INSTANCE\s+REGION\s+TYPE\s+STATE\s+AGE\s+\$\/H\s+SPENT\s+RUN/);
    expect(text.stdout).toContain(mine);
    expect(text.stdout).toContain('run-a (elsewhere)');
  });

  it('teardown RUN finds the run by its tag (no local record needed) and terminates only it', async () => {
    const a = await launch(spotctl('run-a'));
    const b = await launch(spotctl('run-b'));
    const r = await cli(['teardown', 'run-a']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`terminated ${a}`);
    expect(await state(a)).toMatch(/terminated|shutting-down/);
    expect(await state(b)).toBe('running');
  });

  it('teardown --all ends every spotctl run instance and never an untagged one', async () => {
    const a = await launch(spotctl('run-a'));
    const b = await launch(spotctl('run-b'));
    const untagged = await launch(undefined);
    const forged = await launch({ 'spotctl:role': 'run', 'spotctl:run-id': 'x' });
    const r = await cli(['teardown', '--all']);
    expect(r.code, r.stderr).toBe(0);
    for (const id of [a, b]) expect(await state(id)).toMatch(/terminated|shutting-down/);
    expect(await state(untagged)).toBe('running');
    expect(await state(forged)).toBe('running');
    const none = await cli(['teardown', '--all']);
    expect(none.stderr).toMatch(/no live spotctl run instance/);
  });

  it('gc terminates expired spotctl instances, deletes unused spotctl key pairs and groups, and never touches an untagged resource', async () => {
    const old = iso(Date.now() - 2 * HOUR);
    await keyPair('spotctl-used', { 'spotctl:managed': 'true', 'spotctl:created': old });
    await keyPair('spotctl-unused', { 'spotctl:managed': 'true', 'spotctl:created': old });
    await keyPair('spotctl-fresh', { 'spotctl:managed': 'true', 'spotctl:created': iso(Date.now()) });
    await keyPair('someone-elses', undefined);
    const usedGroup = await group('spotctl-ssh-used', { 'spotctl:managed': 'true', 'spotctl:created': old });
    const unusedGroup = await group('spotctl-ssh-unused', { 'spotctl:managed': 'true', 'spotctl:created': old });
    await group('their-group', undefined);

    const expired = await launch(spotctl('run-old', { 'spotctl:expires-at': iso(Date.now() - HOUR) }));
    const alive = await launch(spotctl('run-live', { 'spotctl:expires-at': iso(Date.now() + HOUR) }), {
      KeyName: 'spotctl-used',
      SecurityGroupIds: [usedGroup],
    });
    const watchdogOwned = await launch(spotctl('run-never', { 'spotctl:expires-at': 'never' }));
    const untagged = await launch({ 'spotctl:expires-at': iso(Date.now() - 10 * HOUR), Name: 'looks expired, is not ours' });
    const bare = await launch(undefined, { KeyName: 'someone-elses' });

    // Run roles: one whose run is gone, one of a live run, one of a run being launched right now.
    const { IAMClient, CreateRoleCommand } = await loadIamSdk();
    const iam = new IAMClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: TEST_CREDENTIALS });
    const policy = runRolePolicy({ partition: 'aws', runId: 'any', checkpoints: { bucket: 'ck', prefix: '' } });
    await createRunRole({ iam, runId: 'run-gone', owner: 'o', policy, createdAt: new Date(Date.now() - 2 * HOUR) });
    await createRunRole({ iam, runId: 'run-live', owner: 'o', policy, createdAt: new Date(Date.now() - 2 * HOUR) });
    await createRunRole({ iam, runId: 'run-launching', owner: 'o', policy });
    // Someone's role under the same path, without spotctl's tags: never touched.
    await iam.send(
      new CreateRoleCommand({
        RoleName: 'spotctl-run-not-ours',
        Path: '/spotctl/',
        AssumeRolePolicyDocument: JSON.stringify({ Version: '2012-10-17', Statement: [] }),
      }),
    );

    const dry = await cli(['gc', '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    const planned = JSON.parse(dry.stdout) as { actions: { kind: string; id: string; done: boolean }[] };
    expect(planned.actions.map((a) => `${a.kind}:${a.id}`).sort()).toEqual(
      [`instance:${expired}`, 'key-pair:spotctl-unused', `security-group:${unusedGroup}`, 'iam-role:spotctl-run-run-gone'].sort(),
    );
    expect(await state(expired)).toBe('running');

    const r = await cli(['gc', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { actions: { kind: string; id: string; done: boolean }[] };
    expect(report.actions.every((a) => a.done)).toBe(true);

    expect(await state(expired)).toMatch(/terminated|shutting-down/);
    for (const id of [alive, watchdogOwned, untagged, bare]) expect(await state(id)).toBe('running');
    expect(await keyNames()).toEqual(['someone-elses', 'spotctl-fresh', 'spotctl-used']);
    expect(await groupNames()).toEqual(['spotctl-ssh-used', 'their-group']);
    expect((await listRunRoles(iam)).map((r) => r.runId).sort()).toEqual(['run-launching', 'run-live']);
    iam.destroy();
  });
});
