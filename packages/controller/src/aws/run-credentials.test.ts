import {
  AssumeRoleCommand,
  GetCallerIdentityCommand,
  GetFederationTokenCommand,
  STSClient,
  STSServiceException,
} from '@aws-sdk/client-sts';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { mintRunCredentials, roleArnOfSession } from './run-credentials.ts';

const sts = mockClient(STSClient);
afterEach(() => sts.reset());

const CREDS = {
  AccessKeyId: 'ASIAEXAMPLE',
  SecretAccessKey: 'secret',
  SessionToken: 'token',
  Expiration: new Date('2026-12-06T12:00:00Z'),
};
const refused = (name: string, message: string) =>
  new STSServiceException({ name, $fault: 'client', $metadata: { httpStatusCode: 403 }, message });

const input = {
  runId: 'r20261206-abc',
  checkpoints: { bucket: 'ckpt', prefix: 'team' },
  restoreFrom: { bucket: 'old', prefix: '', runId: 'r-old' },
  durationS: 3600,
};

describe('mintRunCredentials', () => {
  it('an IAM user gets a federation token whose inline policy is the run role policy', async () => {
    sts.on(GetCallerIdentityCommand).resolves({ Arn: 'arn:aws:iam::123456789012:user/alice' });
    sts.on(GetFederationTokenCommand).resolves({ Credentials: CREDS });
    const r = await mintRunCredentials({ ...input, sts: new STSClient({ region: 'us-east-1' }) });
    expect(r).toEqual({
      ok: true,
      via: 'GetFederationToken',
      credentials: { accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'secret', sessionToken: 'token', expiresAt: CREDS.Expiration.getTime() },
    });
    const call = sts.commandCalls(GetFederationTokenCommand)[0]?.args[0].input;
    expect(call?.Name).toBe('spotctl-r20261206-abc');
    expect(call?.DurationSeconds).toBe(3600);
    const policy = JSON.parse(call?.Policy ?? '{}') as { Statement: Array<{ Resource: string[]; Condition?: unknown }> };
    expect(policy.Statement.flatMap((s) => s.Resource)).toEqual([
      'arn:aws:s3:::ckpt/team/r20261206-abc/*',
      'arn:aws:s3:::ckpt',
      'arn:aws:s3:::old/r-old/*',
      'arn:aws:s3:::old',
    ]);
    expect(policy.Statement[1]?.Condition).toEqual({ StringLike: { 's3:prefix': ['team/r20261206-abc/*'] } });
  });

  it('a role session assumes its role again with the policy as session policy, capped at one hour', async () => {
    sts.on(GetCallerIdentityCommand).resolves({ Arn: 'arn:aws:sts::123456789012:assumed-role/Dev/alice@example.com' });
    sts.on(AssumeRoleCommand).resolves({ Credentials: CREDS });
    const r = await mintRunCredentials({ ...input, durationS: 129_600, sts: new STSClient({ region: 'us-east-1' }) });
    expect(r).toMatchObject({ ok: true, via: 'AssumeRole' });
    const call = sts.commandCalls(AssumeRoleCommand)[0]?.args[0].input;
    expect(call).toMatchObject({ RoleArn: 'arn:aws:iam::123456789012:role/Dev', DurationSeconds: 3600 });
    expect(call?.Policy).toContain('ckpt/team/r20261206-abc/*');
    expect(sts.commandCalls(GetFederationTokenCommand)).toHaveLength(0);
  });

  it('says why when STS refuses, instead of throwing', async () => {
    sts.on(GetCallerIdentityCommand).resolves({ Arn: 'arn:aws:sts::123456789012:assumed-role/Dev/alice' });
    sts.on(AssumeRoleCommand).rejects(refused('AccessDenied', 'User is not authorized to perform: sts:AssumeRole'));
    const r = await mintRunCredentials({ ...input, sts: new STSClient({ region: 'us-east-1' }) });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/role session and could not assume arn:aws:iam::123456789012:role\/Dev .*AccessDenied/);

    sts.reset();
    sts.on(GetCallerIdentityCommand).resolves({ Arn: 'arn:aws:iam::123456789012:user/bob' });
    sts.on(GetFederationTokenCommand).rejects(refused('AccessDenied', 'not authorized to perform: sts:GetFederationToken'));
    const u = await mintRunCredentials({ ...input, sts: new STSClient({ region: 'us-east-1' }) });
    expect(!u.ok && u.reason).toMatch(/user\/bob cannot mint run-scoped credentials \(sts:GetFederationToken: AccessDenied/);
  });

  it('reads the role out of a session ARN', () => {
    expect(roleArnOfSession('arn:aws-cn:sts::123456789012:assumed-role/R/s')).toBe('arn:aws-cn:iam::123456789012:role/R');
    expect(roleArnOfSession('arn:aws:iam::123456789012:user/u')).toBeUndefined();
  });
});
