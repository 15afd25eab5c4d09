/**
 * Short-lived S3 credentials for one run's agent on an SSH host (or this machine), minted from the
 * caller's own identity and scoped with a session policy to what the run may touch: the same
 * statements as the aws provider's per-run role (`runRolePolicy`), i.e. read/write under
 * `<prefix>/<run id>/`, list with that prefix, read under the restored run's prefix.
 *
 * - An IAM user (or root): `sts:GetFederationToken` with the policy inline. The result can never
 *   do more than both the user and the policy allow.
 * - A role session (SSO, `aws sts assume-role`, an instance profile): GetFederationToken refuses
 *   session credentials, so `sts:AssumeRole` of the same role with the policy as session `Policy`
 *   (needs a trust policy that lets the role assume itself; role chaining caps it at 1 h).
 *
 * When neither works, the caller gets the reason and the agent keeps using the host's own chain.
 */
import type { STSClient } from '@aws-sdk/client-sts';
import type { CredentialsParams } from '@spotctl/shared';
import createDebug from 'debug';
import { lazySdk, sendOptions } from './clients.ts';
import { describeAwsError } from './errors.ts';
import { partitionOf, runRolePolicy, type S3Prefix } from './iam.ts';

const debug = createDebug('spotctl:sts');

export const loadStsSdk = lazySdk(() => import('@aws-sdk/client-sts'));

export interface MintRunCredentialsOptions {
  runId: string;
  /** Where the run's checkpoints go (read and write). */
  checkpoints: S3Prefix;
  /** The run a restore reads from (read only). */
  restoreFrom?: S3Prefix & { runId: string };
  /** Asked-for lifetime; STS may cap it (1 h for role chaining, 36 h for federation). */
  durationS: number;
  /** A client to use (tests); otherwise one for `AWS_REGION` (endpoint from `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`). */
  sts?: STSClient;
  signal?: AbortSignal;
}

export type MintResult =
  { ok: true; credentials: CredentialsParams; via: 'GetFederationToken' | 'AssumeRole' } | { ok: false; reason: string };

/** STS names: 2–32 characters of `[\w+=,.@-]` (federation), up to 64 for a role session. */
function stsName(runId: string, max: number): string {
  return `spotctl-${runId}`.replace(/[^\w+=,.@-]/g, '-').slice(0, max);
}

/** `arn:aws:sts::123:assumed-role/Name/session` → `arn:aws:iam::123:role/Name` (path-less: STS omits it). */
export function roleArnOfSession(arn: string): string | undefined {
  const m = /^arn:([a-z-]+):sts::(\d{12}):assumed-role\/([^/]+)\/.+$/.exec(arn);
  return m ? `arn:${m[1]}:iam::${m[2]}:role/${m[3]}` : undefined;
}

function toParams(
  c: { AccessKeyId?: string; SecretAccessKey?: string; SessionToken?: string; Expiration?: Date } | undefined,
): CredentialsParams {
  if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !c.Expiration)
    throw new Error('STS answered without complete credentials');
  return {
    accessKeyId: c.AccessKeyId,
    secretAccessKey: c.SecretAccessKey,
    sessionToken: c.SessionToken,
    expiresAt: c.Expiration.getTime(),
  };
}

/** Mints the run's credentials; never throws for an STS refusal (`ok: false` with the reason). */
export async function mintRunCredentials(options: MintRunCredentialsOptions): Promise<MintResult> {
  const { STSClient, GetCallerIdentityCommand, GetFederationTokenCommand, AssumeRoleCommand } = await loadStsSdk();
  const own = options.sts === undefined;
  const sts = options.sts ?? new STSClient({ region: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1' });
  const send = sendOptions(options.signal);
  try {
    let arn: string;
    try {
      arn = (await sts.send(new GetCallerIdentityCommand({}), send)).Arn ?? '';
    } catch (error) {
      if (options.signal?.aborted) throw error;
      return { ok: false, reason: `could not tell who this machine acts as (sts:GetCallerIdentity: ${describeAwsError(error)})` };
    }
    const policy = JSON.stringify(
      runRolePolicy({
        partition: partitionOf(arn),
        runId: options.runId,
        checkpoints: options.checkpoints,
        ...(options.restoreFrom ? { restoreFrom: options.restoreFrom } : {}),
      }),
    );
    const roleArn = roleArnOfSession(arn);
    if (roleArn === undefined) {
      try {
        const out = await sts.send(
          new GetFederationTokenCommand({
            Name: stsName(options.runId, 32),
            Policy: policy,
            DurationSeconds: Math.min(Math.max(options.durationS, 900), 129_600),
          }),
          send,
        );
        debug('federation token for %s until %s', arn, out.Credentials?.Expiration?.toISOString());
        return { ok: true, credentials: toParams(out.Credentials), via: 'GetFederationToken' };
      } catch (error) {
        if (options.signal?.aborted) throw error;
        return { ok: false, reason: `${arn} cannot mint run-scoped credentials (sts:GetFederationToken: ${describeAwsError(error)})` };
      }
    }
    try {
      const out = await sts.send(
        new AssumeRoleCommand({
          RoleArn: roleArn,
          RoleSessionName: stsName(options.runId, 64),
          Policy: policy,
          // Role chaining is capped at one hour whatever the role's maximum.
          DurationSeconds: Math.min(Math.max(options.durationS, 900), 3600),
        }),
        send,
      );
      debug('assumed %s for %s until %s', roleArn, arn, out.Credentials?.Expiration?.toISOString());
      return { ok: true, credentials: toParams(out.Credentials), via: 'AssumeRole' };
    } catch (error) {
      if (options.signal?.aborted) throw error;
      return {
        ok: false,
        reason: `${arn} is a role session and could not assume ${roleArn} with a session policy (sts:AssumeRole: ${describeAwsError(error)})`,
      };
    }
  } finally {
    if (own) sts.destroy();
  }
}
