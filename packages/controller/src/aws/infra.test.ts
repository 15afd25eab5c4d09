import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DeleteKeyPairCommand,
  DescribeImagesCommand,
  DescribeKeyPairsCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  EC2ServiceException,
  ImportKeyPairCommand,
  type Image,
} from '@aws-sdk/client-ec2';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { UserError } from '@spotctl/shared';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  CANONICAL_OWNER_ID,
  UBUNTU_NAME_PATTERN,
  callerArn,
  ensureKeyPair,
  ensureLocalKey,
  ensureSecurityGroup,
  keyPairName,
  newestImage,
  parseSshCidr,
  resolveImage,
  resolveSshCidr,
  securityGroupName,
} from './infra.ts';
import { TAG, tagMap } from './tags.ts';

const ec2 = mockClient(EC2Client);
const sts = mockClient(STSClient);
afterEach(() => {
  ec2.reset();
  sts.reset();
});

const OWNER = 'arn:aws:iam::111122223333:user/alice';
const NOW = new Date('2026-03-14T09:30:00.000Z');
const ctx = () => ({ ec2: new EC2Client({ region: 'us-east-2' }), region: 'us-east-2', owner: OWNER, now: () => NOW });
const awsError = (name: string, message = name): EC2ServiceException =>
  new EC2ServiceException({ name, $fault: 'client', $metadata: { httpStatusCode: 400 }, message });

describe('parseSshCidr', () => {
  it('takes an address as /32 and a CIDR with zero host bits as given', () => {
    expect(parseSshCidr('203.0.113.7')).toBe('203.0.113.7/32');
    expect(parseSshCidr('203.0.113.7/32')).toBe('203.0.113.7/32');
    expect(parseSshCidr('10.0.0.0/8')).toBe('10.0.0.0/8');
  });
  it('accepts the whole internet only spelled exactly 0.0.0.0/0', () => {
    expect(parseSshCidr('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(() => parseSshCidr('1.2.3.4/0')).toThrow(/whole internet/);
  });
  it('refuses host bits, bad prefixes and non-addresses with a usable hint', () => {
    expect(() => parseSshCidr('203.0.113.7/24')).toThrow(UserError);
    try {
      parseSshCidr('203.0.113.7/24');
    } catch (e) {
      expect((e as UserError).remediation).toContain('203.0.113.0/24');
    }
    for (const bad of ['203.0.113.7/33', '256.1.1.1', 'example.com', '::1', '1.2.3.4/x'])
      expect(() => parseSshCidr(bad)).toThrow(UserError);
  });
});

describe('resolveSshCidr', () => {
  let server: http.Server;
  let url = '';
  let answer = '198.51.100.23\n';
  beforeAll(async () => {
    server = http.createServer((_req, res) => res.end(answer));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => server.close());

  it("is the lookup URL's address as a /32", async () => {
    answer = '198.51.100.23\n';
    expect(await resolveSshCidr({ lookupUrl: url })).toEqual({ cidr: '198.51.100.23/32', source: url });
  });
  it('refuses an answer that is not an IPv4 address (never widens to 0.0.0.0/0)', async () => {
    answer = '<html>captive portal</html>';
    await expect(resolveSshCidr({ lookupUrl: url })).rejects.toThrow(/not an IPv4 address/);
  });
  it('--ssh-cidr wins and the lookup is not asked', async () => {
    expect(await resolveSshCidr({ sshCidr: '192.0.2.9', lookupUrl: 'http://127.0.0.1:1/' })).toEqual({
      cidr: '192.0.2.9/32',
      source: '--ssh-cidr',
    });
  });
  it('an unreachable lookup says to pass --ssh-cidr', async () => {
    const err = await resolveSshCidr({ lookupUrl: 'http://127.0.0.1:1/' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).remediation).toContain('--ssh-cidr');
  });
});

describe('callerArn', () => {
  it('is the STS identity', async () => {
    sts.on(GetCallerIdentityCommand).resolves({ Arn: OWNER, Account: '111122223333', UserId: 'AIDA' });
    expect(await callerArn({ region: 'us-east-2', sts: new STSClient({ region: 'us-east-2' }) })).toBe(OWNER);
  });
  it('bad credentials become a UserError that says how to log in', async () => {
    sts.on(GetCallerIdentityCommand).rejects(awsError('InvalidClientTokenId', 'The security token included in the request is invalid.'));
    const err = await callerArn({ region: 'us-east-2', sts: new STSClient({ region: 'us-east-2' }) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).remediation).toMatch(/aws sts get-caller-identity/);
  });
});

describe('local key and key pair', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-keys-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('generates one ed25519 key, 0600, named after its public key, and reuses it', async () => {
    const keys = path.join(dir, 'a');
    const first = await ensureLocalKey(keys);
    expect(first.name).toMatch(/^spotctl-[0-9a-f]{12}$/);
    expect(first.name).toBe(keyPairName(first.publicKey));
    expect(first.publicKey).toMatch(/^ssh-ed25519 /);
    expect(statSync(first.privateKeyPath).mode & 0o777).toBe(0o600);
    expect(await ensureLocalKey(keys)).toEqual(first);
  });

  it('imports only the public key, tagged, when the region lacks the pair', async () => {
    const key = await ensureLocalKey(path.join(dir, 'b'));
    ec2.on(DescribeKeyPairsCommand).resolves({ KeyPairs: [] });
    ec2.on(ImportKeyPairCommand).resolves({ KeyName: key.name });
    expect(await ensureKeyPair(ctx(), key)).toBe(key.name);
    const [call] = ec2.commandCalls(ImportKeyPairCommand);
    const input = call!.args[0].input;
    expect(input.KeyName).toBe(key.name);
    expect(Buffer.from(input.PublicKeyMaterial!).toString()).toBe(`${key.publicKey.split(' ').slice(0, 2).join(' ')}\n`);
    expect(Buffer.from(input.PublicKeyMaterial!).toString()).not.toContain('PRIVATE');
    expect(tagMap(input.TagSpecifications?.[0]?.Tags)).toMatchObject({
      [TAG.managed]: 'true',
      [TAG.owner]: OWNER,
      [TAG.created]: NOW.toISOString(),
    });
    expect(input.TagSpecifications?.[0]?.ResourceType).toBe('key-pair');
  });

  it('reuses the pair when it is there, and a lost local key makes a NEW pair instead of deleting the old one', async () => {
    const old = await ensureLocalKey(path.join(dir, 'c'));
    ec2.on(DescribeKeyPairsCommand).callsFake((input: { Filters?: { Values?: string[] }[] }) => ({
      KeyPairs:
        input.Filters?.[0]?.Values?.[0] === old.name
          ? [{ KeyName: old.name, PublicKey: `${old.publicKey}\n`, Tags: [{ Key: TAG.managed, Value: 'true' }] }]
          : [],
    }));
    ec2.on(ImportKeyPairCommand).resolves({});
    expect(await ensureKeyPair(ctx(), old)).toBe(old.name);
    expect(ec2.commandCalls(ImportKeyPairCommand)).toHaveLength(0);

    rmSync(path.join(dir, 'c'), { recursive: true });
    const fresh = await ensureLocalKey(path.join(dir, 'c'));
    expect(fresh.name).not.toBe(old.name);
    expect(await ensureKeyPair(ctx(), fresh)).toBe(fresh.name);
    expect(ec2.commandCalls(ImportKeyPairCommand).map((c) => c.args[0].input.KeyName)).toEqual([fresh.name]);
    expect(ec2.commandCalls(DeleteKeyPairCommand)).toHaveLength(0);
  });

  it('a parallel import of the same key is success', async () => {
    const key = await ensureLocalKey(path.join(dir, 'd'));
    let describes = 0;
    ec2.on(DescribeKeyPairsCommand).callsFake(() => ({ KeyPairs: describes++ === 0 ? [] : [{ KeyName: key.name }] }));
    ec2.on(ImportKeyPairCommand).rejects(awsError('InvalidKeyPair.Duplicate'));
    expect(await ensureKeyPair(ctx(), key)).toBe(key.name);
  });

  it('refuses a same-named pair that holds another public key', async () => {
    const key = await ensureLocalKey(path.join(dir, 'e'));
    ec2.on(DescribeKeyPairsCommand).resolves({
      KeyPairs: [{ KeyName: key.name, PublicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherOtherOtherOtherOtherOtherOtherOther' }],
    });
    await expect(ensureKeyPair(ctx(), key)).rejects.toThrow(/different public key/);
    expect(existsSync(key.privateKeyPath)).toBe(true);
  });
});

describe('ensureSecurityGroup', () => {
  const cidr = '198.51.100.23/32';

  it('creates a tagged group whose one inbound rule is 22/tcp from exactly the /32', async () => {
    ec2.on(DescribeSecurityGroupsCommand).resolves({ SecurityGroups: [] });
    ec2.on(CreateSecurityGroupCommand).resolves({ GroupId: 'sg-0123' });
    ec2.on(AuthorizeSecurityGroupIngressCommand).resolves({ Return: true });
    expect(await ensureSecurityGroup(ctx(), 'vpc-1', cidr)).toBe('sg-0123');

    const create = ec2.commandCalls(CreateSecurityGroupCommand)[0]!.args[0].input;
    expect(create.GroupName).toBe(securityGroupName(cidr));
    expect(create.VpcId).toBe('vpc-1');
    expect(tagMap(create.TagSpecifications?.[0]?.Tags)).toMatchObject({ [TAG.managed]: 'true', [TAG.owner]: OWNER, [TAG.sshCidr]: cidr });

    const calls = ec2.commandCalls(AuthorizeSecurityGroupIngressCommand);
    expect(calls).toHaveLength(1);
    const perms = calls[0]!.args[0].input.IpPermissions!;
    expect(perms).toHaveLength(1);
    expect(perms[0]).toMatchObject({ IpProtocol: 'tcp', FromPort: 22, ToPort: 22 });
    expect(perms[0]!.IpRanges!.map((r) => r.CidrIp)).toEqual([cidr]);
    expect(perms[0]!.Ipv6Ranges ?? []).toEqual([]);
  });

  it('reuses its own group as it is', async () => {
    ec2.on(DescribeSecurityGroupsCommand).resolves({
      SecurityGroups: [
        {
          GroupId: 'sg-9',
          GroupName: securityGroupName(cidr),
          Tags: [{ Key: TAG.managed, Value: 'true' }],
          IpPermissions: [{ IpProtocol: 'tcp', FromPort: 22, ToPort: 22, IpRanges: [{ CidrIp: cidr }] }],
        },
      ],
    });
    expect(await ensureSecurityGroup(ctx(), 'vpc-1', cidr)).toBe('sg-9');
    expect(ec2.commandCalls(CreateSecurityGroupCommand)).toHaveLength(0);
    expect(ec2.commandCalls(AuthorizeSecurityGroupIngressCommand)).toHaveLength(0);
  });

  it('never adopts a same-named group spotctl did not make', async () => {
    ec2.on(DescribeSecurityGroupsCommand).resolves({ SecurityGroups: [{ GroupId: 'sg-x', GroupName: securityGroupName(cidr), Tags: [] }] });
    await expect(ensureSecurityGroup(ctx(), 'vpc-1', cidr)).rejects.toThrow(/did not create/);
    expect(ec2.commandCalls(AuthorizeSecurityGroupIngressCommand)).toHaveLength(0);
  });
});

describe('resolveImage', () => {
  const ubuntu = (id: string, name: string, owner = CANONICAL_OWNER_ID, created = '2026-01-01T00:00:00.000Z'): Image => ({
    ImageId: id,
    Name: `ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-${name}`,
    OwnerId: owner,
    CreationDate: created,
    RootDeviceName: '/dev/sda1',
    State: 'available',
  });

  it("asks Canonical's account for Ubuntu 24.04 of the architecture, and takes the newest", async () => {
    ec2
      .on(DescribeImagesCommand)
      .callsFake((input: { Owners?: string[] }) =>
        input.Owners?.[0] === 'self'
          ? { Images: [] }
          : { Images: [ubuntu('ami-old', '20250305'), ubuntu('ami-new', '20250610'), ubuntu('ami-evil', '20991231', '123456789012')] },
      );
    const image = await resolveImage(ctx(), 'x86_64');
    expect(image).toMatchObject({ imageId: 'ami-new', baked: false, rootDeviceName: '/dev/sda1' });
    const stock = ec2
      .commandCalls(DescribeImagesCommand)
      .map((c) => c.args[0].input)
      .find((i) => i.Owners?.[0] !== 'self')!;
    expect(stock.Owners).toEqual([CANONICAL_OWNER_ID]);
    expect(stock.Filters).toEqual(
      expect.arrayContaining([
        { Name: 'name', Values: [UBUNTU_NAME_PATTERN] },
        { Name: 'architecture', Values: ['x86_64'] },
      ]),
    );
  });

  it('prefers a baked spotctl image of this account', async () => {
    ec2
      .on(DescribeImagesCommand)
      .callsFake((input: { Owners?: string[] }) =>
        input.Owners?.[0] === 'self'
          ? { Images: [{ ...ubuntu('ami-baked', 'x', '111122223333'), Name: 'spotctl-agent-1' }] }
          : { Images: [ubuntu('ami-new', '20250610')] },
      );
    expect(await resolveImage(ctx(), 'x86_64')).toMatchObject({ imageId: 'ami-baked', baked: true });
    const baked = ec2.commandCalls(DescribeImagesCommand)[0]!.args[0].input;
    expect(baked.Filters).toContainEqual({ Name: `tag:${TAG.ami}`, Values: ['true'] });
  });

  it('newest is by creation time first, then by name', () => {
    expect(
      newestImage([ubuntu('a', '2', undefined, '2026-02-01T00:00:00Z'), ubuntu('b', '9', undefined, '2026-01-01T00:00:00Z')])?.ImageId,
    ).toBe('a');
    expect(newestImage([ubuntu('a', '20250305'), ubuntu('b', '20250610')])?.ImageId).toBe('b');
  });

  it('no image is a UserError with the command to check', async () => {
    ec2.on(DescribeImagesCommand).resolves({ Images: [] });
    await expect(resolveImage(ctx(), 'arm64')).rejects.toThrow(/no Ubuntu 24.04 \(arm64\) image/);
  });
});

it('key files never end up anywhere but the keys directory', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-keys-'));
  try {
    const key = await ensureLocalKey(path.join(dir, 'keys'));
    expect(path.dirname(key.privateKeyPath)).toBe(path.join(dir, 'keys'));
    expect(readFileSync(key.privateKeyPath, 'utf8')).toMatch(/BEGIN OPENSSH PRIVATE KEY/);
    expect(statSync(path.join(dir, 'keys')).mode & 0o077).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
