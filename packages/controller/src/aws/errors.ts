/**
 * The one table that turns AWS error names into what spotctl does next (fail over, skip a region,
 * stop) and what the user should do (remediation with the exact command).
 */
import { UserError, type ErrorCode } from '@spotctl/shared';

/**
 * What a failed launch says about the other placements:
 * - `pool`: this instance type in this AZ (a capacity pool) is out; other pools may work.
 * - `az`: this AZ is out for every type (its subnet is full).
 * - `region-vcpus`: the region's vCPU quota is too small for this size; smaller sizes may fit.
 * - `region`: nothing more will launch in this region (count quota, throttling, outage).
 * - `fatal`: retrying elsewhere won't help (permissions, credentials, bad parameters).
 */
export type FailureScope = 'pool' | 'az' | 'region-vcpus' | 'region' | 'fatal';

export type Market = 'spot' | 'on-demand';

/** Where the error happened; remediation text names it. */
export interface AwsErrorContext {
  region?: string;
  az?: string;
  instanceType?: string;
  vcpus?: number;
  market?: Market;
  /** The EC2 action that failed, e.g. `RunInstances`. */
  action?: string;
}

interface AwsErrorRule {
  scope: FailureScope;
  /** The spotctl code a resulting UserError carries. */
  code: ErrorCode;
  /** One line: what happened, in words. */
  summary: (ctx: AwsErrorContext) => string;
  /** What to do next, with the exact command where there is one. */
  remediation: (ctx: AwsErrorContext) => string;
}

/** The stable code each kind of AWS failure surfaces with (documented in the README's table). */
export const AWS_ERROR_CODES = {
  credentials: 'SPOTCTL_AWS_CREDENTIALS',
  permission: 'SPOTCTL_AWS_PERMISSION',
  request: 'SPOTCTL_AWS_REQUEST',
  quota: 'SPOTCTL_AWS_QUOTA',
  capacity: 'SPOTCTL_NO_CAPACITY',
  network: 'SPOTCTL_AWS_NETWORK',
  aws: 'SPOTCTL_AWS_REQUEST',
} as const satisfies Record<string, ErrorCode>;
const CODE = AWS_ERROR_CODES;

/**
 * EC2's vCPU quotas are per bucket of families. The CPU families spotctl picks fall in "Standard
 * (A, C, D, H, I, M, R, T, Z)"; GPU types count against the G/VT or P bucket, which is 0 on a new
 * account, so a GPU run's quota error must name that bucket or the user raises the wrong one.
 */
interface QuotaBucket {
  name: Record<Market, string>;
  code: Record<Market, string>;
}
const STANDARD_QUOTA: QuotaBucket = {
  name: {
    spot: 'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests',
    'on-demand': 'Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances',
  },
  code: { spot: 'L-34B43A08', 'on-demand': 'L-1216C47A' },
};
const G_QUOTA: QuotaBucket = {
  name: { spot: 'All G and VT Spot Instance Requests', 'on-demand': 'Running On-Demand G and VT instances' },
  code: { spot: 'L-3819A6DF', 'on-demand': 'L-DB2E81BA' },
};
const P_QUOTA: QuotaBucket = {
  name: { spot: 'All P Spot Instance Requests', 'on-demand': 'Running On-Demand P instances' },
  code: { spot: 'L-7212CCBC', 'on-demand': 'L-417A185B' },
};

/** The vCPU quota bucket an instance type counts against (by the family's first letter, as AWS groups them). */
function quotaBucketOf(instanceType: string | undefined): QuotaBucket {
  const letter = instanceType?.[0];
  return letter === 'g' || letter === 'v' ? G_QUOTA : letter === 'p' ? P_QUOTA : STANDARD_QUOTA;
}

const where = (ctx: AwsErrorContext): string => [ctx.instanceType, ctx.az ?? ctx.region].filter(Boolean).join(' in ');
const regionFlag = (ctx: AwsErrorContext): string => (ctx.region ? ` --region ${ctx.region}` : '');

const widen = 'spotctl tries the next placement by itself; to widen the search pass more --regions, other --families, or --on-demand';

function quotaRemediation(ctx: AwsErrorContext): string {
  const market = ctx.market ?? 'spot';
  const desired = Math.max(32, (ctx.vcpus ?? 16) * 2);
  const bucket = quotaBucketOf(ctx.instanceType);
  const named = bucket === STANDARD_QUOTA ? '' : ` ("${bucket.name[market]}", 0 on new accounts)`;
  return (
    `ask for a larger ${market} vCPU quota${named}: aws service-quotas request-service-quota-increase --service-code ec2 ` +
    `--quota-code ${bucket.code[market]} --desired-value ${desired}${regionFlag(ctx)} (current value: aws service-quotas get-service-quota ` +
    `--service-code ec2 --quota-code ${bucket.code[market]}${regionFlag(ctx)}); meanwhile ${widen}`
  );
}

const credentials: AwsErrorRule = {
  scope: 'fatal',
  code: CODE.credentials,
  summary: () => 'AWS did not accept the credentials',
  remediation: () =>
    'check which identity the CLI sees with: aws sts get-caller-identity — then log in again (aws sso login, or aws configure) or pick a profile with AWS_PROFILE=<name>',
};

const badRequest: AwsErrorRule = {
  scope: 'fatal',
  code: CODE.request,
  summary: (ctx) => `AWS rejected the ${ctx.action ?? 'request'} parameters${ctx.instanceType ? ` for ${where(ctx)}` : ''}`,
  remediation: () =>
    'check --instance-type, --families and --no-ht (aws ec2 describe-instance-types --instance-types <type> shows what a type supports); if they are fine this looks like a bug, re-run with DEBUG=spotctl:* and report the output',
};

const transient: AwsErrorRule = {
  scope: 'region',
  code: CODE.aws,
  summary: (ctx) => `EC2${ctx.region ? ` in ${ctx.region}` : ''} failed or throttled the request even after retries`,
  remediation: () => `wait a minute and re-run; ${widen}`,
};

/**
 * The request never reached AWS (DNS, refused or timed-out connection): a network or setup problem
 * on this side, not a bug, and not AWS's verdict. Other regions' endpoints may still answer.
 */
const network: AwsErrorRule = {
  scope: 'region',
  code: CODE.network,
  summary: (ctx) => `could not reach the AWS endpoint${ctx.region ? ` of ${ctx.region}` : ''} over the network`,
  remediation: (ctx) =>
    `check this machine's internet connection and proxy settings (HTTPS_PROXY), that AWS_ENDPOINT_URL is unset or points at a live endpoint, ` +
    `and that the region name${ctx.region ? ` ${ctx.region}` : ''} is right (aws ec2 describe-regions lists them); then re-run`,
};

/** AWS error name → rule. Names are the `Code` EC2 returns (the SDK's `error.name`). */
export const AWS_ERRORS: Readonly<Record<string, AwsErrorRule>> = {
  InsufficientInstanceCapacity: {
    scope: 'pool',
    code: CODE.capacity,
    summary: (ctx) => `AWS has no spare ${where(ctx)} capacity right now`,
    remediation: () => widen,
  },
  InsufficientCapacity: {
    scope: 'pool',
    code: CODE.capacity,
    summary: (ctx) => `AWS has no spare ${where(ctx)} capacity right now`,
    remediation: () => widen,
  },
  SpotMaxPriceTooLow: {
    scope: 'pool',
    code: CODE.capacity,
    summary: (ctx) => `the spot price of ${where(ctx)} rose above the maximum price`,
    remediation: () => `spotctl sets no maximum (it defaults to the on-demand price), so the spot price is above on-demand: ${widen}`,
  },
  Unsupported: {
    scope: 'pool',
    code: CODE.capacity,
    summary: (ctx) => `${ctx.instanceType ?? 'the instance type'} is not offered in ${ctx.az ?? 'that Availability Zone'}`,
    remediation: () => widen,
  },
  InsufficientFreeAddressesInSubnet: {
    scope: 'az',
    code: CODE.capacity,
    summary: (ctx) => `the subnet in ${ctx.az ?? 'that Availability Zone'} has no free IP addresses`,
    remediation: (ctx) =>
      `free addresses in the default subnet of ${ctx.az ?? 'that zone'} (aws ec2 describe-subnets${regionFlag(ctx)}); ${widen}`,
  },
  VcpuLimitExceeded: {
    scope: 'region-vcpus',
    code: CODE.quota,
    summary: (ctx) =>
      `the ${ctx.market ?? 'spot'} vCPU quota${ctx.region ? ` of ${ctx.region}` : ''} is too small for ${ctx.instanceType ?? 'this size'}`,
    remediation: quotaRemediation,
  },
  MaxSpotInstanceCountExceeded: {
    scope: 'region',
    code: CODE.quota,
    summary: (ctx) => `the spot instance quota${ctx.region ? ` of ${ctx.region}` : ''} is used up`,
    remediation: (ctx) => `stop unused spot instances (spotctl ps, spotctl stop <run>) or ${quotaRemediation({ ...ctx, market: 'spot' })}`,
  },
  InstanceLimitExceeded: {
    scope: 'region',
    code: CODE.quota,
    summary: (ctx) => `the instance quota${ctx.region ? ` of ${ctx.region}` : ''} is used up`,
    remediation: (ctx) => `stop unused instances (spotctl ps, spotctl stop <run>) or ${quotaRemediation(ctx)}`,
  },
  RequestLimitExceeded: transient,
  Throttling: transient,
  ThrottlingException: transient,
  InternalError: transient,
  InternalFailure: transient,
  ServiceUnavailable: transient,
  Unavailable: transient,
  UnauthorizedOperation: {
    scope: 'fatal',
    code: CODE.permission,
    summary: (ctx) => `the AWS identity may not call ec2:${ctx.action ?? '<action>'}`,
    remediation: (ctx) =>
      `grant ec2:${ctx.action ?? '<action>'} to the identity shown by: aws sts get-caller-identity (spotctl needs ec2:DescribeInstanceTypes, ` +
      'ec2:DescribeSpotPriceHistory, ec2:DescribeAvailabilityZones, ec2:RunInstances, ec2:CreateTags, ec2:TerminateInstances); ' +
      'an encoded message in the error decodes with: aws sts decode-authorization-message --encoded-message <message>',
  },
  OptInRequired: {
    scope: 'fatal',
    code: CODE.permission,
    summary: (ctx) => `${ctx.region ?? 'the region'} is not enabled for this account (or the AMI needs a subscription)`,
    remediation: (ctx) =>
      `enable the region with: aws account enable-region --region-name ${ctx.region ?? '<region>'} — or leave it out: spotctl prices --regions <others>`,
  },
  PendingVerification: {
    scope: 'fatal',
    code: CODE.permission,
    summary: () => 'AWS is still verifying this account',
    remediation: () => 'wait for the verification e-mail from AWS (usually minutes, up to 4 hours), then re-run',
  },
  Blocked: {
    scope: 'fatal',
    code: CODE.permission,
    summary: () => 'AWS has blocked this account',
    remediation: () => 'contact AWS Support (https://console.aws.amazon.com/support/home)',
  },
  AuthFailure: {
    ...credentials,
    remediation: (ctx) =>
      `${credentials.remediation(ctx)}; if other regions work, ${ctx.region ?? 'this region'} is probably an opt-in region not enabled for the account: aws account enable-region --region-name ${ctx.region ?? '<region>'}`,
  },
  InvalidClientTokenId: credentials,
  UnrecognizedClientException: credentials,
  SignatureDoesNotMatch: credentials,
  InvalidAccessKeyId: credentials,
  ExpiredToken: credentials,
  ExpiredTokenException: credentials,
  CredentialsProviderError: credentials,
  RequestExpired: {
    scope: 'fatal',
    code: CODE.credentials,
    summary: () => "AWS rejected the request's timestamp",
    remediation: () => "this machine's clock is off; sync it (sudo timedatectl set-ntp true, or sudo chronyc makestep) and re-run",
  },
  InvalidInstanceType: {
    scope: 'fatal',
    code: CODE.request,
    summary: (ctx) => `${ctx.instanceType ?? 'an instance type'} is not a known EC2 instance type`,
    remediation: () => 'check the name with: aws ec2 describe-instance-types --instance-types <type>',
  },
  InvalidParameterValue: badRequest,
  InvalidParameterCombination: badRequest,
  InvalidParameter: badRequest,
  MissingParameter: badRequest,
  UnknownParameter: badRequest,
  InvalidRequest: badRequest,
  ValidationError: badRequest,
  'InvalidAMIID.NotFound': {
    scope: 'fatal',
    code: CODE.request,
    summary: (ctx) => `the machine image was not found${ctx.region ? ` in ${ctx.region}` : ''}`,
    remediation: () =>
      're-run so spotctl looks the image up again; if you passed an image id, it must exist in the region being launched in',
  },
  'InvalidAMIID.Malformed': badRequest,
  // Node.js socket and DNS errors (`error.code`), which the SDK passes on after its retries.
  ENOTFOUND: network,
  EAI_AGAIN: network,
  ECONNREFUSED: network,
  ECONNRESET: network,
  ETIMEDOUT: network,
  EHOSTUNREACH: network,
  ENETUNREACH: network,
  ENETDOWN: network,
  EPROTO: network,
  UND_ERR_CONNECT_TIMEOUT: network,
  'InvalidAMIID.Unavailable': badRequest,
};

/** The AWS error name of an SDK error (`name`, or `Code` on older shapes). */
export function awsErrorName(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const e = error as { name?: unknown; Code?: unknown; code?: unknown };
  for (const candidate of [e.Code, e.name, e.code]) if (typeof candidate === 'string' && candidate !== 'Error') return candidate;
  return undefined;
}

/** True for errors of the network path to AWS (DNS, connection), as opposed to AWS's answers. */
export function isNetworkError(error: unknown): boolean {
  const name = awsErrorName(error);
  return name !== undefined && AWS_ERRORS[name] === network;
}

/** True for errors AWS (not the network, not our code) sent back. */
export function isAwsServiceError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && '$metadata' in error && '$fault' in error;
}

/** True when the error is a cancellation (our signal or a timeout), which is never AWS's verdict. */
export function isAbort(error: unknown): boolean {
  const name = error instanceof Error ? error.name : undefined;
  return name === 'AbortError' || name === 'TimeoutError';
}

/** How a failure bounds the rest of the search; unknown AWS errors are fatal. */
export function failureScope(error: unknown): FailureScope {
  const name = awsErrorName(error);
  return (name !== undefined ? AWS_ERRORS[name]?.scope : undefined) ?? 'fatal';
}

/** AWS's message on one line (SDK deserialization errors span several). */
function rawMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** One line for progress output and region reports: "Name: what happened (AWS: message)". */
export function describeAwsError(error: unknown, ctx: AwsErrorContext = {}): string {
  const name = awsErrorName(error) ?? 'Error';
  const rule = AWS_ERRORS[name];
  return rule ? `${name}: ${rule.summary(ctx)} (${rule === network ? '' : 'AWS: '}${rawMessage(error)})` : `${name}: ${rawMessage(error)}`;
}

/** The remediation text for an AWS error, or undefined when the table has none. */
export function awsRemediation(error: unknown, ctx: AwsErrorContext = {}): string | undefined {
  const name = awsErrorName(error);
  return name !== undefined ? AWS_ERRORS[name]?.remediation(ctx) : undefined;
}

/** Wraps an AWS error into a UserError with the table's message and remediation. */
export function awsUserError(error: unknown, ctx: AwsErrorContext = {}): UserError {
  const name = awsErrorName(error) ?? 'Error';
  const rule = AWS_ERRORS[name];
  const place =
    ctx.instanceType || ctx.az || ctx.region ? ` (${[ctx.instanceType, ctx.az ?? ctx.region].filter(Boolean).join(' in ')})` : '';
  const message = rule
    ? `${rule.summary(ctx)} (${name}: ${rawMessage(error)})`
    : `EC2 ${ctx.action ?? 'request'} failed${place}: ${name}: ${rawMessage(error)}`;
  return new UserError(rule?.code ?? CODE.aws, message, {
    cause: error,
    remediation: rule?.remediation(ctx) ?? 'if it persists, re-run with DEBUG=spotctl:* and report the output',
  });
}
