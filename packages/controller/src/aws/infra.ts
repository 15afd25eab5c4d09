/**
 * Per-region infrastructure a run needs before RunInstances: who we are (for the owner tag), an
 * SSH key pair, a security group that lets in port 22 from one address only, the default VPC's
 * subnet in the AZ placement chose, and a machine image. Created on first use, reused after, every
 * piece tagged `spotctl:managed=true`.
 *
 * Key pair: the key is generated HERE with ssh-keygen and only its public half is imported
 * (ImportKeyPair), so the private key never crosses the network and exists on disk (0600) before
 * AWS knows the pair. The pair's name is derived from the public key (`spotctl-<sha256 prefix>`):
 * a machine that lost its local key simply makes a new key with a new name. An AWS key pair is
 * never deleted because the local file is missing: another machine may hold it. (Only `gc`
 * deletes spotctl's key pairs, and only those no instance uses.)
 *
 * Security group: one per CIDR (`spotctl-ssh-203-0-113-7-32`), with exactly one inbound rule,
 * 22/tcp from that CIDR. The CIDR is the caller's public address as a /32, found through a lookup
 * URL (`SPOTCTL_IP_LOOKUP_URL`, default https://checkip.amazonaws.com), or `--ssh-cidr`. Nothing
 * ever falls back to 0.0.0.0/0: that needs `--ssh-cidr 0.0.0.0/0`, typed out.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { UserError, deadline } from '@spotctl/shared';
import type { EC2Client, Image, SecurityGroup } from '@aws-sdk/client-ec2';
import type { STSClient } from '@aws-sdk/client-sts';
import createDebug from 'debug';
import { lazySdk, loadEc2Sdk, sendOptions } from './clients.ts';
import { awsErrorName, awsUserError } from './errors.ts';
import { TAG, baseTags, isManaged, tagSpecifications } from './tags.ts';
import type { Architecture } from './sizing.ts';

const debug = createDebug('spotctl:infra');
const execFileAsync = promisify(execFile);

/** Canonical's AWS account: the only owner whose Ubuntu images we accept. */
export const CANONICAL_OWNER_ID = '099720109477';
/** Stock Ubuntu 24.04 LTS (noble), gp3 root volume, server edition. */
export const UBUNTU_NAME_PATTERN = 'ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-*-server-*';
/**
 * The AWS Deep Learning Base image with NVIDIA's driver and CUDA, on Ubuntu (x86_64: "Deep Learning
 * Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250610"; arm64 has "ARM64" after "Learning").
 * Published by Amazon (owner alias `amazon`); the newest of the right architecture is used.
 */
export const DLAMI_NAME_PATTERN = 'Deep Learning *Base OSS Nvidia Driver GPU AMI (Ubuntu *) *';
export const DLAMI_OWNER = 'amazon';
/** The login user of Ubuntu's cloud images (and of images baked from them, and of the Ubuntu DLAMI). */
export const UBUNTU_USER = 'ubuntu';
/** Where the caller's public IPv4 address is asked by default: AWS's own, plain-text answer. */
export const DEFAULT_IP_LOOKUP_URL = 'https://checkip.amazonaws.com';
/** @default 10_000 */
export const IP_LOOKUP_TIMEOUT_MS = 10_000;

export type StsSdk = typeof import('@aws-sdk/client-sts');

/** Loads `@aws-sdk/client-sts` once, lazily (see clients.ts for why). */
export const loadStsSdk: () => Promise<StsSdk> = lazySdk(() => import('@aws-sdk/client-sts'));

// --- who we are -------------------------------------------------------------------------------

/** The caller's ARN (STS GetCallerIdentity): the `spotctl:owner` tag. Also the credentials check. */
export async function callerArn(options: { region: string; sts?: STSClient; signal?: AbortSignal }): Promise<string> {
  const { STSClient, GetCallerIdentityCommand } = await loadStsSdk();
  const sts = options.sts ?? new STSClient({ region: options.region });
  try {
    const r = await sts.send(new GetCallerIdentityCommand({}), sendOptions(options.signal));
    if (!r.Arn)
      throw new UserError('SPOTCTL_AWS_CREDENTIALS', 'AWS did not say who the credentials belong to (GetCallerIdentity returned no ARN)');
    return r.Arn;
  } catch (error) {
    if (error instanceof UserError || options.signal?.aborted) throw error;
    throw awsUserError(error, { action: 'sts:GetCallerIdentity', region: options.region });
  } finally {
    if (!options.sts) sts.destroy();
  }
}

// --- where we are (the SSH CIDR) --------------------------------------------------------------

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/**
 * Validates `--ssh-cidr`: an IPv4 address (taken as /32) or a CIDR whose host bits are zero.
 * `0.0.0.0/0` is accepted only spelled exactly so.
 */
export function parseSshCidr(value: string): string {
  const bad = (why: string, hint = 'e.g. --ssh-cidr 203.0.113.7/32 (your address), or --ssh-cidr 203.0.113.0/24'): UserError =>
    new UserError('SPOTCTL_USAGE', `--ssh-cidr '${value}': ${why}`, { remediation: hint, exitCode: 2 });
  const trimmed = value.trim();
  if (trimmed === '0.0.0.0/0') return trimmed;
  const [ip, prefixText, ...rest] = trimmed.split('/');
  if (rest.length > 0 || ip === undefined || !IPV4.test(ip)) throw bad('not an IPv4 address or CIDR');
  if (prefixText === undefined) return `${ip}/32`;
  if (!/^\d{1,2}$/.test(prefixText) || Number(prefixText) > 32) throw bad('the prefix length must be 0 to 32');
  const prefix = Number(prefixText);
  if (prefix === 0) throw bad('a /0 opens SSH to the whole internet', "if you really want that, pass exactly '--ssh-cidr 0.0.0.0/0'");
  const size = 2 ** (32 - prefix);
  const network = Math.floor(ipv4ToInt(ip) / size) * size;
  if (network !== ipv4ToInt(ip)) throw bad(`host bits are set`, `did you mean --ssh-cidr ${intToIpv4(network)}/${prefix}?`);
  return `${ip}/${prefix}`;
}

export interface SshCidrOptions {
  /** `--ssh-cidr`, used as given (validated) instead of the lookup. */
  sshCidr?: string;
  /** @default process.env.SPOTCTL_IP_LOOKUP_URL ?? DEFAULT_IP_LOOKUP_URL */
  lookupUrl?: string;
  signal?: AbortSignal;
  /** @default IP_LOOKUP_TIMEOUT_MS */
  timeoutMs?: number;
}

/** The one CIDR the security group lets in: `--ssh-cidr`, else the caller's public IPv4 as /32. */
export async function resolveSshCidr(options: SshCidrOptions = {}): Promise<{ cidr: string; source: string }> {
  if (options.sshCidr !== undefined) return { cidr: parseSshCidr(options.sshCidr), source: '--ssh-cidr' };
  const url = options.lookupUrl ?? process.env.SPOTCTL_IP_LOOKUP_URL ?? DEFAULT_IP_LOOKUP_URL;
  using timeout = deadline(options.timeoutMs ?? IP_LOOKUP_TIMEOUT_MS, options.signal);
  const signal = timeout.signal;
  const remediation = `pass the address SSH should be allowed from: --ssh-cidr <your public IPv4>/32 (or set SPOTCTL_IP_LOOKUP_URL to a service that prints it)`;
  let text: string;
  try {
    const res = await fetch(url, { signal, headers: { accept: 'text/plain' } });
    text = (await res.text()).trim();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw new UserError(
      'SPOTCTL_CONFIG',
      `could not find this machine's public address at ${url}: ${error instanceof Error ? error.message : String(error)}`,
      { remediation, cause: error },
    );
  }
  if (!IPV4.test(text)) {
    throw new UserError('SPOTCTL_CONFIG', `${url} answered '${text.slice(0, 60)}', not an IPv4 address`, { remediation });
  }
  return { cidr: `${text}/32`, source: url };
}

// --- the SSH key ------------------------------------------------------------------------------

export interface LocalKey {
  /** The key pair's name in every region: `spotctl-<12 hex of the public key's SHA-256>`. */
  name: string;
  privateKeyPath: string;
  /** `ssh-ed25519 AAAA… comment` */
  publicKey: string;
}

/** `ssh-ed25519 AAAA…` without the comment: what two copies of the same key agree on. */
export function publicKeyBody(line: string): string {
  return line.trim().split(/\s+/).slice(0, 2).join(' ');
}

export function keyPairName(publicKey: string): string {
  const blob = publicKey.trim().split(/\s+/)[1] ?? publicKey;
  return `spotctl-${createHash('sha256').update(Buffer.from(blob, 'base64')).digest('hex').slice(0, 12)}`;
}

/** `<dir>/spotctl-*` with its `.pub`, mode 0600: the oldest such key, so every run agrees. */
function findLocalKey(keysDir: string): LocalKey | undefined {
  if (!existsSync(keysDir)) return undefined;
  const found = readdirSync(keysDir)
    .filter((f) => /^spotctl-[0-9a-f]{12}$/.test(f) && existsSync(path.join(keysDir, `${f}.pub`)))
    .map((f) => ({ f, mtime: statSync(path.join(keysDir, f)).mtimeMs }))
    .sort((a, b) => a.mtime - b.mtime || a.f.localeCompare(b.f));
  for (const { f } of found) {
    const privateKeyPath = path.join(keysDir, f);
    const publicKey = readFileSync(`${privateKeyPath}.pub`, 'utf8').trim();
    // A file renamed by hand would no longer match its name: skip it rather than import a mismatch.
    if (keyPairName(publicKey) !== f) continue;
    // ssh refuses a private key others can read; keep it 0600 even if someone loosened it.
    if ((statSync(privateKeyPath).mode & 0o077) !== 0) chmodSync(privateKeyPath, 0o600);
    return { name: f, privateKeyPath, publicKey };
  }
  return undefined;
}

/** This machine's spotctl SSH key, generated with ssh-keygen (ed25519, no passphrase) on first use. */
export async function ensureLocalKey(keysDir: string): Promise<LocalKey> {
  const existing = findLocalKey(keysDir);
  if (existing) return existing;
  mkdirSync(keysDir, { recursive: true, mode: 0o700 });
  const tmp = path.join(keysDir, `.new-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'spotctl', '-f', tmp], { timeout: 30_000 });
  } catch (error) {
    rmSync(tmp, { force: true });
    rmSync(`${tmp}.pub`, { force: true });
    throw new UserError('SPOTCTL_HOST_REQUIREMENT', `ssh-keygen failed: ${error instanceof Error ? error.message : String(error)}`, {
      remediation: 'install the OpenSSH client (sudo apt-get install openssh-client)',
      cause: error,
    });
  }
  chmodSync(tmp, 0o600);
  const publicKey = readFileSync(`${tmp}.pub`, 'utf8').trim();
  const name = keyPairName(publicKey);
  const privateKeyPath = path.join(keysDir, name);
  // Public half first: findLocalKey only considers a private key whose .pub exists.
  renameSync(`${tmp}.pub`, `${privateKeyPath}.pub`);
  renameSync(tmp, privateKeyPath);
  debug('generated local key %s', privateKeyPath);
  return { name, privateKeyPath, publicKey };
}

export interface InfraContext {
  ec2: EC2Client;
  region: string;
  /** `spotctl:owner`. */
  owner: string;
  now?: () => Date;
  signal?: AbortSignal;
}

/** The key pair named after the local key in this region, imported when missing. */
export async function ensureKeyPair(ctx: InfraContext, key: LocalKey): Promise<string> {
  const { DescribeKeyPairsCommand, ImportKeyPairCommand } = await loadEc2Sdk();
  const describe = async () =>
    (
      await ctx.ec2.send(
        new DescribeKeyPairsCommand({ Filters: [{ Name: 'key-name', Values: [key.name] }], IncludePublicKey: true }),
        sendOptions(ctx.signal),
      )
    ).KeyPairs ?? [];
  const check = (pairs: Awaited<ReturnType<typeof describe>>): boolean => {
    const pair = pairs.find((p) => p.KeyName === key.name);
    if (!pair) return false;
    if (pair.PublicKey && publicKeyBody(pair.PublicKey) !== publicKeyBody(key.publicKey)) {
      throw new UserError(
        'SPOTCTL_CONFIG',
        `the key pair ${key.name} in ${ctx.region} holds a different public key than ${key.privateKeyPath}.pub`,
        {
          remediation: `move ${key.privateKeyPath} aside so spotctl makes a new key, or check the key pair with: aws ec2 describe-key-pairs --key-names ${key.name} --include-public-key --region ${ctx.region}`,
        },
      );
    }
    return true;
  };
  try {
    if (check(await describe())) return key.name;
    debug('importing key pair %s into %s', key.name, ctx.region);
    await ctx.ec2.send(
      new ImportKeyPairCommand({
        KeyName: key.name,
        PublicKeyMaterial: Buffer.from(`${publicKeyBody(key.publicKey)}\n`),
        TagSpecifications: tagSpecifications(['key-pair'], baseTags(ctx.owner, (ctx.now ?? (() => new Date()))(), 'key-pair')),
      }),
      sendOptions(ctx.signal),
    );
    return key.name;
  } catch (error) {
    // A parallel run imported the same key a moment ago: that is the pair we wanted.
    if (awsErrorName(error) === 'InvalidKeyPair.Duplicate' && check(await describe())) return key.name;
    if (error instanceof UserError || ctx.signal?.aborted) throw error;
    throw awsUserError(error, { region: ctx.region, action: 'ImportKeyPair' });
  }
}

// --- network ----------------------------------------------------------------------------------

export async function defaultVpcId(ctx: Pick<InfraContext, 'ec2' | 'region' | 'signal'>): Promise<string> {
  const { DescribeVpcsCommand } = await loadEc2Sdk();
  const r = await ctx.ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'is-default', Values: ['true'] }] }), sendOptions(ctx.signal));
  const id = r.Vpcs?.[0]?.VpcId;
  if (!id) {
    throw new UserError('SPOTCTL_CONFIG', `${ctx.region} has no default VPC`, {
      remediation: `create one with: aws ec2 create-default-vpc --region ${ctx.region} — or leave the region out (--regions)`,
    });
  }
  return id;
}

/** The default VPC's subnet in `az` (each AZ has exactly one default subnet). */
export async function defaultSubnetId(ctx: Pick<InfraContext, 'ec2' | 'region' | 'signal'>, vpcId: string, az: string): Promise<string> {
  const { DescribeSubnetsCommand } = await loadEc2Sdk();
  const r = await ctx.ec2.send(
    new DescribeSubnetsCommand({
      Filters: [
        { Name: 'vpc-id', Values: [vpcId] },
        { Name: 'availability-zone', Values: [az] },
        { Name: 'default-for-az', Values: ['true'] },
      ],
    }),
    sendOptions(ctx.signal),
  );
  const id = r.Subnets?.[0]?.SubnetId;
  if (!id) {
    throw new UserError('SPOTCTL_CONFIG', `the default VPC of ${ctx.region} has no default subnet in ${az}`, {
      remediation: `create it with: aws ec2 create-default-subnet --availability-zone ${az} --region ${ctx.region}`,
    });
  }
  return id;
}

/** `spotctl-ssh-203-0-113-7-32`: one group per CIDR, so a group's single rule never changes. */
export function securityGroupName(cidr: string): string {
  return `spotctl-ssh-${cidr.replace(/[./]/g, '-')}`;
}

function allowsSsh(group: SecurityGroup, cidr: string): boolean {
  return (group.IpPermissions ?? []).some(
    (p) => p.IpProtocol === 'tcp' && p.FromPort === 22 && p.ToPort === 22 && (p.IpRanges ?? []).some((r) => r.CidrIp === cidr),
  );
}

/** The spotctl security group for `cidr` in the VPC, created (and its one rule added) when missing. */
export async function ensureSecurityGroup(ctx: InfraContext, vpcId: string, cidr: string): Promise<string> {
  const sdk = await loadEc2Sdk();
  const name = securityGroupName(cidr);
  const describe = async (): Promise<SecurityGroup | undefined> =>
    (
      await ctx.ec2.send(
        new sdk.DescribeSecurityGroupsCommand({
          Filters: [
            { Name: 'vpc-id', Values: [vpcId] },
            { Name: 'group-name', Values: [name] },
          ],
        }),
        sendOptions(ctx.signal),
      )
    ).SecurityGroups?.[0];
  const authorize = async (groupId: string): Promise<void> => {
    try {
      await ctx.ec2.send(
        new sdk.AuthorizeSecurityGroupIngressCommand({
          GroupId: groupId,
          IpPermissions: [
            {
              IpProtocol: 'tcp',
              FromPort: 22,
              ToPort: 22,
              IpRanges: [{ CidrIp: cidr, Description: 'spotctl: SSH from the launching machine' }],
            },
          ],
          TagSpecifications: tagSpecifications(['security-group-rule'], baseTags(ctx.owner, now(), 'ssh-access')),
        }),
        sendOptions(ctx.signal),
      );
    } catch (error) {
      if (awsErrorName(error) !== 'InvalidPermission.Duplicate') throw error;
    }
  };
  const now = ctx.now ?? (() => new Date());
  const use = async (group: SecurityGroup): Promise<string> => {
    if (!isManaged(group.Tags)) {
      throw new UserError('SPOTCTL_CONFIG', `a security group named ${name} exists in ${ctx.region} but spotctl did not create it`, {
        remediation: `rename or delete it (aws ec2 describe-security-groups --group-names ${name} --region ${ctx.region}), or pass another --ssh-cidr`,
      });
    }
    if (!allowsSsh(group, cidr)) await authorize(group.GroupId!);
    return group.GroupId!;
  };
  try {
    const existing = await describe();
    if (existing) return await use(existing);
    debug('creating security group %s in %s', name, ctx.region);
    const created = await ctx.ec2.send(
      new sdk.CreateSecurityGroupCommand({
        GroupName: name,
        Description: `spotctl: SSH (22/tcp) from ${cidr} only`,
        VpcId: vpcId,
        TagSpecifications: tagSpecifications(['security-group'], {
          ...baseTags(ctx.owner, now(), 'ssh-access'),
          [TAG.sshCidr]: cidr,
          Name: name,
        }),
      }),
      sendOptions(ctx.signal),
    );
    await authorize(created.GroupId!);
    return created.GroupId!;
  } catch (error) {
    if (awsErrorName(error) === 'InvalidGroup.Duplicate') {
      const raced = await describe();
      if (raced) return await use(raced);
    }
    if (error instanceof UserError || ctx.signal?.aborted) throw error;
    throw awsUserError(error, { region: ctx.region, action: 'CreateSecurityGroup' });
  }
}

// --- the image --------------------------------------------------------------------------------

export interface ResolvedImage {
  imageId: string;
  name: string;
  /** A spotctl-baked image (tag `spotctl:ami`) rather than stock Ubuntu. */
  baked: boolean;
  /** Carries the NVIDIA driver (the Deep Learning Base image, or a bake from it). */
  gpu?: boolean;
  rootDeviceName: string;
  /** Size of the image's root snapshot, GiB (the launch volume may not be smaller). */
  rootSnapshotGiB?: number;
}

/** Newest first; same creation time (moto gives every image one) → the name, which carries the build date. */
export function newestImage(images: readonly Image[]): Image | undefined {
  return [...images]
    .filter((i) => i.ImageId && i.State !== 'deregistered')
    .sort((a, b) => (b.CreationDate ?? '').localeCompare(a.CreationDate ?? '') || (b.Name ?? '').localeCompare(a.Name ?? ''))[0];
}

function toResolved(image: Image, baked: boolean, gpu = false): ResolvedImage {
  const root = image.BlockDeviceMappings?.find((m) => m.DeviceName === image.RootDeviceName)?.Ebs?.VolumeSize;
  return {
    imageId: image.ImageId!,
    name: image.Name ?? image.ImageId!,
    baked,
    ...(gpu ? { gpu } : {}),
    rootDeviceName: image.RootDeviceName ?? '/dev/sda1',
    ...(root ? { rootSnapshotGiB: root } : {}),
  };
}

/** Whether a baked image was baked for GPUs (tag `spotctl:gpu=true`). */
const isGpuBake = (image: Image): boolean => (image.Tags ?? []).some((t) => t.Key === TAG.gpu && t.Value === 'true');

/**
 * A spotctl-baked image of this account (tag `spotctl:ami=true`) for the architecture when one
 * exists, else the newest stock Ubuntu 24.04 from Canonical's account. With `gpu` (an NVIDIA type),
 * only a GPU bake counts, else the newest Deep Learning Base image: stock Ubuntu has no NVIDIA
 * driver. CPU runs skip GPU bakes (tens of GiB of CUDA they would boot for nothing).
 */
export async function resolveImage(
  ctx: Pick<InfraContext, 'ec2' | 'region' | 'signal'>,
  architecture: Architecture,
  options: { stockOnly?: boolean; gpu?: boolean } = {},
): Promise<ResolvedImage> {
  const { DescribeImagesCommand } = await loadEc2Sdk();
  const gpu = options.gpu === true;
  try {
    const baked = options.stockOnly
      ? { Images: [] }
      : await ctx.ec2.send(
          new DescribeImagesCommand({
            Owners: ['self'],
            Filters: [
              { Name: `tag:${TAG.ami}`, Values: ['true'] },
              { Name: 'architecture', Values: [architecture] },
              { Name: 'state', Values: ['available'] },
            ],
          }),
          sendOptions(ctx.signal),
        );
    const mine = newestImage((baked.Images ?? []).filter((i) => isGpuBake(i) === gpu));
    if (mine) return toResolved(mine, true, gpu);
    if (gpu) return await deepLearningImage(ctx, architecture);
    const stock = await ctx.ec2.send(
      new DescribeImagesCommand({
        Owners: [CANONICAL_OWNER_ID],
        Filters: [
          { Name: 'name', Values: [UBUNTU_NAME_PATTERN] },
          { Name: 'architecture', Values: [architecture] },
          { Name: 'state', Values: ['available'] },
        ],
      }),
      sendOptions(ctx.signal),
    );
    // Belt and braces: an image is only Canonical's if its owner says so, whatever the filter did.
    const ubuntu = newestImage((stock.Images ?? []).filter((i) => i.OwnerId === CANONICAL_OWNER_ID));
    if (ubuntu) return toResolved(ubuntu, false);
  } catch (error) {
    if (ctx.signal?.aborted || error instanceof UserError) throw error;
    throw awsUserError(error, { region: ctx.region, action: 'DescribeImages' });
  }
  throw new UserError('SPOTCTL_CONFIG', `no Ubuntu 24.04 (${architecture}) image from Canonical found in ${ctx.region}`, {
    remediation: `check with: aws ec2 describe-images --owners ${CANONICAL_OWNER_ID} --filters 'Name=name,Values=${UBUNTU_NAME_PATTERN}' --region ${ctx.region}`,
  });
}

/** The newest Deep Learning Base (NVIDIA driver, Ubuntu) image for the architecture. */
async function deepLearningImage(ctx: Pick<InfraContext, 'ec2' | 'region' | 'signal'>, architecture: Architecture): Promise<ResolvedImage> {
  const { DescribeImagesCommand } = await loadEc2Sdk();
  const response = await ctx.ec2.send(
    new DescribeImagesCommand({
      Owners: [DLAMI_OWNER],
      Filters: [
        { Name: 'name', Values: [DLAMI_NAME_PATTERN] },
        { Name: 'architecture', Values: [architecture] },
        { Name: 'state', Values: ['available'] },
      ],
    }),
    sendOptions(ctx.signal),
  );
  const image = newestImage(response.Images ?? []);
  if (image) return toResolved(image, false, true);
  throw new UserError(
    'SPOTCTL_CONFIG',
    `no Deep Learning Base image with the NVIDIA driver (Ubuntu, ${architecture}) found in ${ctx.region}`,
    {
      remediation: `check with: aws ec2 describe-images --owners ${DLAMI_OWNER} --filters 'Name=name,Values=${DLAMI_NAME_PATTERN}' 'Name=architecture,Values=${architecture}' --region ${ctx.region}; or leave the region out with --regions`,
    },
  );
}

// --- everything -------------------------------------------------------------------------------

export interface RegionInfra {
  region: string;
  vpcId: string;
  keyName: string;
  privateKeyPath: string;
  securityGroupId: string;
  sshCidr: string;
  image: ResolvedImage;
}

/** Key pair, security group and image for one region (the subnet is per AZ: `defaultSubnetId`). */
export async function ensureRegionInfra(
  ctx: InfraContext & { key: LocalKey; sshCidr: string; architecture: Architecture; stockImage?: boolean; gpu?: boolean },
): Promise<RegionInfra> {
  const vpcId = await defaultVpcId(ctx);
  const [keyName, securityGroupId, image] = await Promise.all([
    ensureKeyPair(ctx, ctx.key),
    ensureSecurityGroup(ctx, vpcId, ctx.sshCidr),
    // A bake starts from stock Ubuntu, never from an earlier bake.
    resolveImage(ctx, ctx.architecture, { stockOnly: ctx.stockImage === true, gpu: ctx.gpu === true }),
  ]);
  return { region: ctx.region, vpcId, keyName, privateKeyPath: ctx.key.privateKeyPath, securityGroupId, sshCidr: ctx.sshCidr, image };
}
