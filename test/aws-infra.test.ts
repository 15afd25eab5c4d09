/**
 * Infrastructure and launch against a real moto_server (validations on, the checked-in Ubuntu
 * image list): what spotctl creates is read back from moto with the SDK, as it would be from AWS.
 * moto fakes prices and capacity; the request details are covered by the unit tests next to the
 * code (aws-sdk-client-mock), this checks that EC2 (as moto models it) accepts them and stores
 * what we meant.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  CANONICAL_OWNER_ID,
  Ec2Clients,
  TAG,
  cloudConfig,
  createRunRole,
  deleteRunRole,
  ensureLocalKey,
  ensureRegionInfra,
  generateHostKey,
  hostKeyFromCloudConfig,
  launchInstance,
  listRunRoles,
  loadIamSdk,
  runRolePolicy,
  securityGroupName,
  tagMap,
  terminateRun,
  waitForRunning,
  type PlacementCandidate,
  type RunTags,
} from '@spotctl/controller';
import { TEST_CREDENTIALS, loadEc2Sdk, startMotoEc2, type MotoEc2 } from './helpers/aws-moto.ts';

const OWNER = 'arn:aws:iam::123456789012:user/moto';
const CIDR = '198.51.100.23/32';

describe('aws infrastructure and launch against moto', () => {
  let moto: MotoEc2;
  let clients: Ec2Clients;
  let keysDir: string;

  beforeAll(async () => {
    moto = await startMotoEc2();
    clients = new Ec2Clients({ endpoint: moto.endpoint, config: { credentials: TEST_CREDENTIALS } });
    keysDir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-keys-'));
  });
  afterAll(async () => {
    clients?.close();
    await moto?.close();
    if (keysDir) rmSync(keysDir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await moto.reset();
  });

  it('creates a tagged key pair, a /32-only security group, and finds stock Ubuntu 24.04 — in two regions', async () => {
    const sdk = await loadEc2Sdk();
    const key = await ensureLocalKey(keysDir);
    expect(statSync(key.privateKeyPath).mode & 0o777).toBe(0o600);
    for (const region of ['us-east-2', 'eu-west-1']) {
      const ec2 = await clients.forRegion(region);
      const infra = await ensureRegionInfra({ ec2, region, owner: OWNER, key, sshCidr: CIDR, architecture: 'x86_64' });
      // The newest Canonical image by name; never the same-named image of another owner.
      expect(infra.image).toMatchObject({ imageId: 'ami-0a1b2c3d4e5f60002', baked: false });
      expect(infra.keyName).toBe(key.name);

      const groups = (await ec2.send(new sdk.DescribeSecurityGroupsCommand({ GroupIds: [infra.securityGroupId] }))).SecurityGroups ?? [];
      expect(groups).toHaveLength(1);
      const group = groups[0]!;
      expect(group.GroupName).toBe(securityGroupName(CIDR));
      expect(tagMap(group.Tags)).toMatchObject({ [TAG.managed]: 'true', [TAG.owner]: OWNER, [TAG.sshCidr]: CIDR });
      const ranges = (group.IpPermissions ?? []).flatMap((p) =>
        (p.IpRanges ?? []).map((r) => ({ proto: p.IpProtocol, from: p.FromPort, to: p.ToPort, cidr: r.CidrIp })),
      );
      expect(ranges).toEqual([{ proto: 'tcp', from: 22, to: 22, cidr: CIDR }]);

      const pairs = (await ec2.send(new sdk.DescribeKeyPairsCommand({ KeyNames: [key.name], IncludePublicKey: true }))).KeyPairs ?? [];
      expect(tagMap(pairs[0]?.Tags)).toMatchObject({ [TAG.managed]: 'true', [TAG.owner]: OWNER });
      expect(pairs[0]?.PublicKey?.trim().split(' ').slice(0, 2)).toEqual(key.publicKey.split(' ').slice(0, 2));

      // Second time round: everything is reused, nothing is added.
      const again = await ensureRegionInfra({ ec2, region, owner: OWNER, key, sshCidr: CIDR, architecture: 'x86_64' });
      expect(again.securityGroupId).toBe(infra.securityGroupId);
      const all =
        (await ec2.send(new sdk.DescribeSecurityGroupsCommand({ Filters: [{ Name: `tag:${TAG.managed}`, Values: ['true'] }] })))
          .SecurityGroups ?? [];
      expect(all).toHaveLength(1);
    }
  });

  it('launches a one-time spot instance as asked, and terminateRun leaves nothing running', async () => {
    const sdk = await loadEc2Sdk();
    const region = 'us-east-2';
    const key = await ensureLocalKey(keysDir);
    const ec2 = await clients.forRegion(region);
    const infra = await ensureRegionInfra({ ec2, region, owner: OWNER, key, sshCidr: CIDR, architecture: 'x86_64' });
    const hostKey = await generateHostKey('spotctl-host-test');
    const runId = '20260314-093000-ab12';
    const tags: RunTags = {
      runId,
      owner: OWNER,
      command: ['python3', 'train.py'],
      createdAt: new Date(),
      expiresAt: new Date(Date.now() + 3_600_000),
      sshUser: 'ubuntu',
      launchedFrom: 'test',
      detached: false,
    };
    const candidate: PlacementCandidate = {
      region,
      az: 'us-east-2b',
      instanceType: 'c7a.xlarge',
      vcpus: 4,
      pricePerHour: 0.05,
      architecture: 'x86_64',
      priceSince: new Date().toISOString(),
    };
    const launched = await launchInstance({
      candidates: [candidate],
      clientFor: clients.forRegion,
      infraFor: async () => infra,
      userDataFor: (i) => cloudConfig({ hostKey, install: !i.image.baked, runId }),
      tags,
    });
    const id = launched.value.instanceId;
    const running = await waitForRunning(ec2, id, { intervalMs: 50 });
    expect(running.address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

    const inst = running.instance;
    expect(inst.InstanceType).toBe('c7a.xlarge');
    expect(inst.InstanceLifecycle).toBe('spot');
    expect(inst.Placement?.AvailabilityZone).toBe('us-east-2b');
    expect(inst.MetadataOptions).toMatchObject({ HttpTokens: 'required', HttpPutResponseHopLimit: 2 });
    expect(inst.KeyName).toBe(key.name);
    // The groups ride on the network interface (moto lists them there only; AWS in both places).
    expect(inst.NetworkInterfaces?.[0]?.Groups?.map((g) => g.GroupId)).toEqual([infra.securityGroupId]);
    expect(inst.NetworkInterfaces?.[0]?.Association?.PublicIp).toBe(running.address);
    expect(inst.ImageId).toBe(infra.image.imageId);
    expect(tagMap(inst.Tags)).toMatchObject({ [TAG.managed]: 'true', [TAG.runId]: runId, [TAG.owner]: OWNER, [TAG.market]: 'spot' });
    const subnet = (await ec2.send(new sdk.DescribeSubnetsCommand({ SubnetIds: [inst.SubnetId!] }))).Subnets?.[0];
    expect(subnet?.AvailabilityZone).toBe('us-east-2b');
    expect(inst.BlockDeviceMappings?.[0]?.Ebs?.DeleteOnTermination).toBe(true);
    const shutdown = await ec2.send(
      new sdk.DescribeInstanceAttributeCommand({ InstanceId: id, Attribute: 'instanceInitiatedShutdownBehavior' }),
    );
    expect(shutdown.InstanceInitiatedShutdownBehavior?.Value).toBe('terminate');
    const userData = await ec2.send(new sdk.DescribeInstanceAttributeCommand({ InstanceId: id, Attribute: 'userData' }));
    const text = Buffer.from(userData.UserData?.Value ?? '', 'base64').toString();
    expect(hostKeyFromCloudConfig(text)?.publicKey).toBe(hostKey.publicKey);
    const volumes =
      (await ec2.send(new sdk.DescribeVolumesCommand({ Filters: [{ Name: `tag:${TAG.runId}`, Values: [runId] }] }))).Volumes ?? [];
    expect(volumes.length).toBeGreaterThanOrEqual(1);

    const { terminated, failed } = await terminateRun(clients.forRegion, [region], runId);
    expect(failed).toEqual([]);
    expect(terminated.map((t) => t.instanceId)).toEqual([id]);
    const live = await ec2.send(
      new sdk.DescribeInstancesCommand({
        Filters: [
          { Name: `tag:${TAG.managed}`, Values: ['true'] },
          { Name: 'instance-state-name', Values: ['pending', 'running', 'stopping', 'stopped'] },
        ],
      }),
    );
    expect((live.Reservations ?? []).flatMap((r) => r.Instances ?? [])).toEqual([]);
  });

  it("a run's IAM role and instance profile: only its own prefix, tagged, found by gc's listing, deleted idempotently", async () => {
    const { IAMClient, GetRolePolicyCommand, GetInstanceProfileCommand, GetRoleCommand } = await loadIamSdk();
    const iam = new IAMClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: TEST_CREDENTIALS });
    try {
      const runId = '20260314-093000-ab12';
      const policy = runRolePolicy({
        partition: 'aws',
        runId,
        checkpoints: { bucket: 'ck', prefix: 'team/a' },
        restoreFrom: { bucket: 'old', prefix: '', runId: '20260301-000000-0000' },
      });
      const role = await createRunRole({ iam, runId, owner: OWNER, policy });
      expect(role.instanceProfileArn).toMatch(/^arn:aws:iam::\d{12}:instance-profile\/spotctl\/spotctl-run-20260314-093000-ab12$/);
      const profile = (await iam.send(new GetInstanceProfileCommand({ InstanceProfileName: role.instanceProfileName }))).InstanceProfile!;
      expect(profile.Roles?.map((r) => r.RoleName)).toEqual([role.roleName]);
      const trust = (await iam.send(new GetRoleCommand({ RoleName: role.roleName }))).Role!;
      expect(JSON.parse(decodeURIComponent(trust.AssumeRolePolicyDocument!))).toMatchObject({
        Statement: [{ Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }],
      });
      const stored = JSON.parse(
        decodeURIComponent(
          (await iam.send(new GetRolePolicyCommand({ RoleName: role.roleName, PolicyName: 'checkpoints' }))).PolicyDocument!,
        ),
      ) as {
        Statement: { Sid: string; Action: string[]; Resource: string[]; Condition?: unknown }[];
      };
      const bySid = Object.fromEntries(stored.Statement.map((st) => [st.Sid, st]));
      expect(bySid.RunCheckpointsReadWrite!.Resource).toEqual([`arn:aws:s3:::ck/team/a/${runId}/*`]);
      expect(bySid.RunCheckpointsReadWrite!.Action).not.toContain('s3:DeleteObject');
      expect(bySid.RunCheckpointsList!.Condition).toEqual({ StringLike: { 's3:prefix': [`team/a/${runId}/*`] } });
      expect(bySid.RestoreRead).toMatchObject({ Action: ['s3:GetObject'], Resource: ['arn:aws:s3:::old/20260301-000000-0000/*'] });
      expect(stored.Statement.flatMap((st) => st.Resource).every((r) => r.startsWith('arn:aws:s3:::'))).toBe(true);

      expect(await listRunRoles(iam)).toEqual([expect.objectContaining({ runId, roleName: role.roleName })]);
      await deleteRunRole(iam, runId);
      await deleteRunRole(iam, runId);
      expect(await listRunRoles(iam)).toEqual([]);
      await expect(iam.send(new GetInstanceProfileCommand({ InstanceProfileName: role.instanceProfileName }))).rejects.toMatchObject({
        name: 'NoSuchEntityException',
      });
    } finally {
      iam.destroy();
    }
  });

  it('moto knows no Ubuntu 24.04 of its own: only the fixture provides it', async () => {
    const sdk = await loadEc2Sdk();
    const ec2 = await clients.forRegion('ap-south-1');
    const images = (await ec2.send(new sdk.DescribeImagesCommand({ Owners: [CANONICAL_OWNER_ID] }))).Images ?? [];
    expect(images.map((i) => i.ImageId).sort()).toEqual([
      'ami-0a1b2c3d4e5f60001',
      'ami-0a1b2c3d4e5f60002',
      'ami-0a1b2c3d4e5f60003',
      'ami-0a1b2c3d4e5f60004',
    ]);
  });
});
