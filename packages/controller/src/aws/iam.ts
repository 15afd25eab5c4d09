/**
 * The run's S3 access: an IAM role and instance profile, one per run, that may only touch the
 * run's own checkpoint prefix (and read the prefix of the run it restores from). The instance gets
 * short-lived credentials through its metadata service; the user's own AWS credentials never
 * leave this machine.
 *
 * Both are created before RunInstances and deleted after the instance is terminated (teardown,
 * any launch failure); `spotctl gc` deletes the ones whose run has no live instance left. IAM is
 * global and eventually consistent: a profile created a moment ago can be unknown to EC2 for a
 * few seconds, which `launch.ts` waits out (`isProfilePropagationError`).
 *
 * Names: `spotctl-run-<run id>` for both, under the path `/spotctl/` so the user's policy can
 * grant `iam:PassRole` on exactly `arn:aws:iam::*:role/spotctl/*`.
 */
import type { IAMClient } from '@aws-sdk/client-iam';
import { UserError } from '@spotctl/shared';
import createDebug from 'debug';
import { lazySdk, sendOptions } from './clients.ts';
import { describeAwsError } from './errors.ts';
import { TAG } from './tags.ts';

const debug = createDebug('spotctl:iam');

export type IamSdk = typeof import('@aws-sdk/client-iam');

/** Loads `@aws-sdk/client-iam` once, lazily (see clients.ts for why). */
export const loadIamSdk: () => Promise<IamSdk> = lazySdk(() => import('@aws-sdk/client-iam'));

/** IAM is global; its endpoint lives in us-east-1 (AWS_ENDPOINT_URL_IAM / AWS_ENDPOINT_URL still apply). */
export async function iamClient(): Promise<IAMClient & Disposable> {
  const { IAMClient } = await loadIamSdk();
  const client = new IAMClient({ region: 'us-east-1' });
  return Object.assign(client, { [Symbol.dispose]: () => client.destroy() });
}

export const RUN_ROLE_PATH = '/spotctl/';

export function runRoleName(runId: string): string {
  return `spotctl-run-${runId}`;
}

/** An S3 prefix a run may use: `bucket`, and the key prefix the checkpoint layout puts first. */
export interface S3Prefix {
  bucket: string;
  /** Without leading or trailing slashes; '' for the bucket's root. */
  prefix: string;
}

export interface RunRolePolicyInput {
  /** `aws`, `aws-cn`, `aws-us-gov`: from the caller's ARN. */
  partition: string;
  runId: string;
  /** Where this run's checkpoints go (read and write). */
  checkpoints: S3Prefix;
  /** The run a restore reads from (read only). */
  restoreFrom?: S3Prefix & { runId: string };
}

function runPrefix(p: S3Prefix, runId: string): string {
  return p.prefix === '' ? `${runId}/` : `${p.prefix}/${runId}/`;
}

/** The partition of an ARN (`arn:aws-cn:…` → `aws-cn`); `aws` when it cannot tell. */
export function partitionOf(arn: string): string {
  return /^arn:([a-z-]+):/.exec(arn)?.[1] ?? 'aws';
}

/**
 * The role's only permissions. Objects: read and write under `<prefix>/<run id>/`, read under the
 * restored run's. Listing: only with an `s3:prefix` inside those (the uploader lists its
 * manifests to number the next set; restore lists the other run's).
 */
export function runRolePolicy(input: RunRolePolicyInput): Record<string, unknown> {
  const { partition, checkpoints, restoreFrom } = input;
  const own = runPrefix(checkpoints, input.runId);
  const arn = (bucket: string, key = ''): string => `arn:${partition}:s3:::${bucket}${key === '' ? '' : `/${key}`}`;
  const statements: Record<string, unknown>[] = [
    {
      Sid: 'RunCheckpointsReadWrite',
      Effect: 'Allow',
      Action: ['s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
      Resource: [arn(checkpoints.bucket, `${own}*`)],
    },
    {
      Sid: 'RunCheckpointsList',
      Effect: 'Allow',
      Action: ['s3:ListBucket'],
      Resource: [arn(checkpoints.bucket)],
      Condition: { StringLike: { 's3:prefix': [`${own}*`] } },
    },
  ];
  if (restoreFrom) {
    const theirs = runPrefix(restoreFrom, restoreFrom.runId);
    statements.push(
      { Sid: 'RestoreRead', Effect: 'Allow', Action: ['s3:GetObject'], Resource: [arn(restoreFrom.bucket, `${theirs}*`)] },
      {
        Sid: 'RestoreList',
        Effect: 'Allow',
        Action: ['s3:ListBucket'],
        Resource: [arn(restoreFrom.bucket)],
        Condition: { StringLike: { 's3:prefix': [`${theirs}*`] } },
      },
    );
  }
  return { Version: '2012-10-17', Statement: statements };
}

/** Who may assume the role: EC2, on behalf of the instance. */
export const EC2_TRUST_POLICY = {
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Principal: { Service: 'ec2.amazonaws.com' }, Action: 'sts:AssumeRole' }],
} as const;

export interface RunRole {
  roleName: string;
  instanceProfileName: string;
  instanceProfileArn: string;
}

export interface CreateRunRoleOptions {
  iam: IAMClient;
  runId: string;
  owner: string;
  policy: Record<string, unknown>;
  createdAt?: Date;
  signal?: AbortSignal;
}

function isNoSuchEntity(error: unknown): boolean {
  return (error as { name?: string }).name === 'NoSuchEntity' || (error as { name?: string }).name === 'NoSuchEntityException';
}

function iamUserError(action: string, error: unknown): UserError {
  const name = (error as { name?: string }).name ?? '';
  const denied = /AccessDenied|UnauthorizedOperation|NotAuthorized/i.test(name);
  return new UserError(denied ? 'SPOTCTL_AWS_PERMISSION' : 'SPOTCTL_AWS_REQUEST', `${action}: ${describeAwsError(error)}`, {
    remediation: denied
      ? 'S3 checkpoints on an aws run need iam:CreateRole, iam:PutRolePolicy, iam:CreateInstanceProfile, iam:AddRoleToInstanceProfile, iam:TagRole, iam:TagInstanceProfile and iam:PassRole on role/spotctl/* (README, "AWS"); or checkpoint to a directory on the instance'
      : 'try again; if it persists, run `spotctl gc` to clear half-made roles',
    cause: error,
  });
}

/**
 * Creates the run's role (with its policy) and instance profile. On any failure it removes what
 * it made, so a failed launch leaves no IAM behind.
 */
export async function createRunRole(options: CreateRunRoleOptions): Promise<RunRole> {
  const { iam, runId, signal } = options;
  const { CreateRoleCommand, PutRolePolicyCommand, CreateInstanceProfileCommand, AddRoleToInstanceProfileCommand } = await loadIamSdk();
  const name = runRoleName(runId);
  const Tags = [
    { Key: TAG.managed, Value: 'true' },
    { Key: TAG.role, Value: 'run-access' },
    { Key: TAG.runId, Value: runId },
    { Key: TAG.owner, Value: options.owner },
    { Key: TAG.created, Value: (options.createdAt ?? new Date()).toISOString() },
  ];
  let step = 'iam:CreateRole';
  try {
    await iam.send(
      new CreateRoleCommand({
        RoleName: name,
        Path: RUN_ROLE_PATH,
        AssumeRolePolicyDocument: JSON.stringify(EC2_TRUST_POLICY),
        Description: `spotctl run ${runId}: S3 checkpoints under its own prefix only`,
        MaxSessionDuration: 3600,
        Tags,
      }),
      sendOptions(signal),
    );
    step = 'iam:PutRolePolicy';
    await iam.send(
      new PutRolePolicyCommand({ RoleName: name, PolicyName: 'checkpoints', PolicyDocument: JSON.stringify(options.policy) }),
      sendOptions(signal),
    );
    step = 'iam:CreateInstanceProfile';
    const profile = await iam.send(
      new CreateInstanceProfileCommand({ InstanceProfileName: name, Path: RUN_ROLE_PATH, Tags }),
      sendOptions(signal),
    );
    step = 'iam:AddRoleToInstanceProfile';
    await iam.send(new AddRoleToInstanceProfileCommand({ InstanceProfileName: name, RoleName: name }), sendOptions(signal));
    const arn = profile.InstanceProfile?.Arn;
    if (!arn) throw new Error('CreateInstanceProfile answered without an ARN');
    debug('created role and instance profile %s', name);
    return { roleName: name, instanceProfileName: name, instanceProfileArn: arn };
  } catch (error) {
    await deleteRunRole(iam, runId).catch((e: unknown) => debug('cleanup of %s failed: %s', name, describeAwsError(e)));
    if (signal?.aborted) throw error;
    throw iamUserError(step, error);
  }
}

/**
 * Deletes the run's instance profile and role, whatever of them exists; idempotent. Call it after
 * the instance is terminated (a live instance would lose its credentials).
 */
export async function deleteRunRole(iam: IAMClient, runId: string, signal?: AbortSignal): Promise<void> {
  const { RemoveRoleFromInstanceProfileCommand, DeleteInstanceProfileCommand, DeleteRolePolicyCommand, DeleteRoleCommand } =
    await loadIamSdk();
  const name = runRoleName(runId);
  const tolerate = async (p: Promise<unknown>): Promise<void> => {
    try {
      await p;
    } catch (error) {
      if (!isNoSuchEntity(error)) throw error;
    }
  };
  await tolerate(iam.send(new RemoveRoleFromInstanceProfileCommand({ InstanceProfileName: name, RoleName: name }), sendOptions(signal)));
  await tolerate(iam.send(new DeleteInstanceProfileCommand({ InstanceProfileName: name }), sendOptions(signal)));
  await tolerate(iam.send(new DeleteRolePolicyCommand({ RoleName: name, PolicyName: 'checkpoints' }), sendOptions(signal)));
  await tolerate(iam.send(new DeleteRoleCommand({ RoleName: name }), sendOptions(signal)));
  debug('deleted role and instance profile %s', name);
}

/** Run ids of the spotctl run roles that exist (under /spotctl/, tagged managed). */
export async function listRunRoles(iam: IAMClient, signal?: AbortSignal): Promise<{ runId: string; roleName: string; created?: string }[]> {
  const { ListRolesCommand, ListRoleTagsCommand } = await loadIamSdk();
  const found: { runId: string; roleName: string; created?: string }[] = [];
  let marker: string | undefined;
  for (let page = 0; page < 100; page++) {
    const r = await iam.send(
      new ListRolesCommand({ PathPrefix: RUN_ROLE_PATH, ...(marker ? { Marker: marker } : {}) }),
      sendOptions(signal),
    );
    for (const role of r.Roles ?? []) {
      if (!role.RoleName?.startsWith('spotctl-run-')) continue;
      // ListRoles does not return tags reliably; ask for them, and only ever touch tagged ones.
      const tags = (await iam.send(new ListRoleTagsCommand({ RoleName: role.RoleName }), sendOptions(signal))).Tags ?? [];
      const tag = (key: string): string | undefined => tags.find((t) => t.Key === key)?.Value;
      const runId = tag(TAG.runId);
      if (tag(TAG.managed) !== 'true' || !runId) continue;
      const created = tag(TAG.created);
      found.push({ runId, roleName: role.RoleName, ...(created ? { created } : {}) });
    }
    if (!r.IsTruncated || !r.Marker) break;
    marker = r.Marker;
  }
  return found;
}

/** RunInstances refusing a profile IAM has not finished propagating (it resolves in seconds). */
export function isProfilePropagationError(error: unknown): boolean {
  const e = error as { name?: string; Code?: string; message?: string };
  const code = e.name ?? e.Code ?? '';
  return code === 'InvalidParameterValue' && /iamInstanceProfile/i.test(e.message ?? '');
}
