/**
 * Every error spotctl raises on purpose has a stable code. The table is the documentation:
 * README's "Error codes" section is generated from the same words.
 */
export const ERROR_CODES = {
  SPOTCTL_USAGE: 'The command line is not valid (unknown flag, missing value, empty command).',
  SPOTCTL_CONFIG: 'A configuration value is out of range or malformed.',
  SPOTCTL_RUN_NOT_FOUND: 'No run with that id is known on this machine.',
  SPOTCTL_SSH_UNREACHABLE: 'The SSH host could not be reached or refused the login.',
  SPOTCTL_SSH_FAILED: 'A command over SSH failed on the host.',
  SPOTCTL_HOST_REQUIREMENT: 'The host lacks something spotctl needs (Node.js, python3, rsync).',
  SPOTCTL_SYNC_FAILED: 'Copying the project to the host failed.',
  SPOTCTL_DEPS_FAILED: 'Installing the Python dependencies failed.',
  SPOTCTL_SETUP_FAILED: 'The setup command (--setup, or setup in spotctl.toml) exited non-zero; the job did not start.',
  SPOTCTL_AGENT_START: 'The agent did not start on the host.',
  SPOTCTL_AGENT_UNREACHABLE: 'The agent could not be reached (it stopped, or the tunnel is down).',
  SPOTCTL_AGENT_VERSION: 'The agent speaks a different protocol version than this controller.',
  SPOTCTL_PROTOCOL: 'A message broke the protocol schema.',
  SPOTCTL_UNAUTHORIZED: 'The bearer token was missing or wrong.',
  SPOTCTL_BAD_REQUEST: 'A request was malformed or named an unknown method.',
  SPOTCTL_JOB_STATE: 'The job is not in a state that allows the request.',
  SPOTCTL_INTERRUPTED:
    'A spot interruption ended the run before its job finished, and it was not (or could no longer be) recovered; exit code 75.',
  SPOTCTL_CHECKPOINT_NOT_FOUND: 'The run has no (such) committed checkpoint set where this machine can read it.',
  SPOTCTL_CHECKPOINT_CORRUPT: 'A checkpoint file does not match the SHA-256 in its manifest.',
  SPOTCTL_AWS_CREDENTIALS: 'No usable AWS credentials were found.',
  SPOTCTL_AWS_PERMISSION: 'AWS refused an operation for lack of permission.',
  SPOTCTL_AWS_REQUEST: 'AWS rejected a request as invalid.',
  SPOTCTL_AWS_NETWORK: 'AWS could not be reached over the network (DNS failure, connection refused or timed out).',
  SPOTCTL_AWS_QUOTA: 'An AWS quota (vCPUs, spot instances) stopped the launch.',
  SPOTCTL_NO_CAPACITY: 'No candidate instance could be launched (no capacity at the price).',
  SPOTCTL_INTERNAL: 'An unexpected failure; this looks like a bug.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface SpotctlErrorOptions {
  cause?: unknown;
  /** What the user should do next, ideally with the exact command. */
  remediation?: string;
}

/** Base error of spotctl: a stable `code`, the standard `cause`, optional remediation. */
export class SpotctlError extends Error {
  readonly code: ErrorCode;
  readonly remediation: string | undefined;

  constructor(code: ErrorCode, message: string, options: SpotctlErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SpotctlError';
    this.code = code;
    this.remediation = options.remediation;
  }

  /** The shape errors take on the wire. */
  toWire(): WireError {
    return { code: this.code, message: this.message };
  }
}

/**
 * An expected failure: bad input, an unreachable host, a missing file. The CLI prints only its
 * message and remediation, never a stack trace.
 */
export class UserError extends SpotctlError {
  /** Process exit code the CLI uses for this error. @default 1 */
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, options: SpotctlErrorOptions & { exitCode?: number } = {}) {
    super(code, message, options);
    this.name = 'UserError';
    this.exitCode = options.exitCode ?? (code === 'SPOTCTL_USAGE' ? 2 : 1);
  }
}

export interface WireError {
  code: string;
  message: string;
}

/** Rebuilds an error that crossed the wire as `{ code, message }`. */
export function errorFromWire(wire: WireError): SpotctlError {
  const code: ErrorCode = wire.code in ERROR_CODES ? (wire.code as ErrorCode) : 'SPOTCTL_INTERNAL';
  return new SpotctlError(code, wire.message);
}

export function isErrorCode(value: string): value is ErrorCode {
  return value in ERROR_CODES;
}
