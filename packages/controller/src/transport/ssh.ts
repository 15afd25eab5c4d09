/**
 * SSH transport over the system OpenSSH client, with ONE multiplexed master connection per host.
 *
 * Why the system client and not a JS implementation: it honours the user's ~/.ssh/config, agents,
 * ProxyJump, hardware keys and known_hosts exactly as `ssh` on the command line does, and rsync
 * can ride the same master connection (`rsync -e`), so the host sees one login.
 *
 * Every later command (exec, forwards, rsync) goes through the master's control socket only: a
 * dead master makes them fail fast instead of quietly opening new connections, and `reopen()`
 * brings it (and the forwards) back.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { lstat, mkdir, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import createDebug from 'debug';
import { SpotctlError, UserError } from '@spotctl/shared';
import { lastLine } from './shell.ts';

const debug = createDebug('spotctl:ssh');

const SSH = 'ssh';
/** `ssh -O check|exit|forward` talk to a local socket; anything slower than this means a stuck master. */
const CONTROL_TIMEOUT_MS = 5_000;
/** After SIGTERM, how long a child gets before SIGKILL. */
const KILL_GRACE_MS = 2_000;
/**
 * sun_path holds 108 bytes including the NUL. ssh first binds `<ControlPath>.<16 random chars>` and
 * then renames it, and `%C` expands to 40 hex digits: the directory may use what is left, minus a margin.
 */
const MAX_CONTROL_DIR_BYTES = 107 - '/cm-'.length - 40 - 17 - 4;
const MAX_UNIX_SOCKET_PATH_BYTES = 104;

export interface SshTarget {
  /** @default ssh's default (the config file's `User`, else the local user name) */
  user?: string;
  /** Host name or address; an alias from the ssh config works too. */
  host: string;
  /** @default ssh's default (the config file's `Port`, else 22) */
  port?: number;
  /** Private key to use, and only that one (`IdentitiesOnly=yes`). */
  identityFile?: string;
  /**
   * Pins the host key: only keys in this file are trusted (`StrictHostKeyChecking=yes`). Without
   * it, an unknown host key is accepted and remembered on first contact (`accept-new`, TOFU), a
   * changed one is always refused.
   */
  knownHostsFile?: string;
  /** An ssh client config file used instead of ~/.ssh/config (`ssh -F`). */
  configFile?: string;
}

export interface SshOpenOptions {
  /**
   * Directory for the master's control socket. A path too long for a unix socket is replaced by
   * `/tmp/spotctl-<uid>/<hash of the path>`.
   */
  controlDir: string;
  signal?: AbortSignal;
  /** TCP connect and handshake timeout. @default 10 */
  connectTimeoutS?: number;
  /** Seconds of silence before the master probes the server. @default 5 */
  serverAliveIntervalS?: number;
  /**
   * Unanswered probes before the master gives up, so a dead link is noticed after about
   * interval × (countMax + 1) seconds. @default 3
   */
  serverAliveCountMax?: number;
  /**
   * A master with no open channel (no command, no forwarded connection) for this long exits by
   * itself (ssh's ControlPersist). `close()` stops ours at once; this bounds the life of one left
   * behind by a controller that was killed, or adopted by a later one that leaves it running.
   * @default MASTER_IDLE_EXIT_S
   */
  masterIdleExitS?: number;
}

/** @default 900 (15 min): longer than any gap between a follower's reconnects. */
export const MASTER_IDLE_EXIT_S = 900;

export interface SshExecOptions {
  /** Written to the remote command's stdin, which is then closed. @default stdin is /dev/null */
  input?: string | Buffer;
  signal?: AbortSignal;
  /** Kill the local ssh client after this long and throw SPOTCTL_SSH_FAILED. @default no limit */
  timeoutMs?: number;
  /** Streams stdout here instead of collecting it (the result's `stdout` is then empty): for output too big to hold. */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

export interface SshExecResult {
  /** The remote command's exit code (255 may also mean the remote command was killed by a signal). */
  code: number;
  stdout: string;
  stderr: string;
}

interface UnixForward {
  localSocketPath: string;
  remoteHost: string;
  remotePort: number;
}

/**
 * Parses `user@host[:port]`, `host`, `host:port`, `[v6addr]:port` or a bare IPv6 address.
 * The user may itself contain `@` (directory accounts); the last `@` separates it from the host.
 */
export function parseHostSpec(spec: string): SshTarget {
  const bad = (why: string): UserError =>
    new UserError('SPOTCTL_USAGE', `invalid SSH host "${spec}": ${why}`, {
      remediation: 'use the form user@host[:port], e.g. ubuntu@203.0.113.7, ubuntu@host.example:2222 or root@[2001:db8::1]:22',
      exitCode: 2,
    });
  const trimmed = spec.trim();
  if (trimmed === '') throw bad('it is empty');
  const at = trimmed.lastIndexOf('@');
  const user = at >= 0 ? trimmed.slice(0, at) : undefined;
  const rest = at >= 0 ? trimmed.slice(at + 1) : trimmed;
  if (user !== undefined && !/^[^\s:/'"\\-][^\s:/'"\\]*$/.test(user)) throw bad('the user name is not valid');

  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::([^:]*))?$/.exec(rest);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
    if (!/^[0-9A-Fa-f:.]+(%[\w.-]+)?$/.test(host) || !host.includes(':')) throw bad('brackets hold an IPv6 address');
  } else if ((rest.match(/:/g) ?? []).length > 1) {
    // A bare IPv6 address: without brackets a port cannot be told apart from the last group.
    host = rest;
    if (!/^[0-9A-Fa-f:.]+(%[\w.-]+)?$/.test(host)) throw bad('the host is not valid');
  } else {
    const colon = rest.indexOf(':');
    host = colon >= 0 ? rest.slice(0, colon) : rest;
    portText = colon >= 0 ? rest.slice(colon + 1) : undefined;
    // A leading '-' would be read by ssh as an option.
    if (!/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(host)) throw bad('the host is not valid');
  }
  const target: SshTarget = { host };
  if (user !== undefined) target.user = user;
  if (portText !== undefined) {
    const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) throw bad('the port must be a number from 1 to 65535');
    target.port = port;
  }
  return target;
}

/** `user@host:port` for messages. */
function describeTarget(t: SshTarget): string {
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `${t.user ? `${t.user}@` : ''}${host}${t.port ? `:${t.port}` : ''}`;
}

/** The command a user can paste to reproduce the connection attempt by hand. */
function manualSshCommand(t: SshTarget): string {
  const parts = ['ssh'];
  if (t.configFile) parts.push('-F', t.configFile);
  if (t.port) parts.push('-p', String(t.port));
  if (t.identityFile) parts.push('-i', t.identityFile);
  if (t.knownHostsFile) parts.push('-o', `UserKnownHostsFile=${t.knownHostsFile}`);
  parts.push(`${t.user ? `${t.user}@` : ''}${t.host}`, 'true');
  return parts.join(' ');
}

/** Value of an `-o Key=value` argument; ssh splits option values on spaces unless quoted. */
function optionValue(value: string): string {
  return /[\s"']/.test(value) ? `"${value.replace(/["\\]/g, '\\$&')}"` : value;
}

/** Turns what ssh printed on a failed connection attempt into one line and what to do about it. */
export function translateSshFailure(stderr: string, target: SshTarget): UserError {
  const who = describeTarget(target);
  const manual = manualSshCommand(target);
  const port = target.port ?? 22;
  const known = target.knownHostsFile ?? '~/.ssh/known_hosts';
  const keyName = port === 22 ? target.host : `[${target.host}]:${port}`;
  const make = (message: string, remediation: string): UserError =>
    new UserError('SPOTCTL_SSH_UNREACHABLE', `cannot connect to SSH host ${who}: ${message}`, {
      remediation,
      cause: stderr.trim() === '' ? undefined : new Error(stderr.trim()),
    });
  if (/Could not resolve hostname/i.test(stderr)) {
    return make('the host name does not resolve', `check the spelling of "${target.host}" and your DNS, or use an IP address`);
  }
  if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for \S+ has changed/i.test(stderr)) {
    return make(
      `its host key does not match the one in ${known} (refused: this may be a different machine or an attack)`,
      `if the host was legitimately reinstalled, remove the old key and retry: ssh-keygen -R '${keyName}' -f ${known}`,
    );
  }
  if (/No \S+ host key is known for|Host key verification failed/i.test(stderr)) {
    return make(
      `its host key is not in ${known}`,
      `verify the host's key fingerprint out of band, then add it: ssh-keyscan -p ${port} ${target.host} >> ${known}`,
    );
  }
  if (/Permission denied \(/i.test(stderr) || /Too many authentication failures/i.test(stderr)) {
    return make(
      'the host refused the login (permission denied)',
      target.identityFile
        ? `check that the public key of ${target.identityFile} is in ~${target.user ?? ''}/.ssh/authorized_keys on the host and the user name is right; try: ${manual}`
        : `pass the right private key with --identity FILE and check the user name; try: ${manual}`,
    );
  }
  if (/Connection refused/i.test(stderr)) {
    return make(`connection refused on port ${port}`, `check that sshd is running on the host and listens on port ${port}; try: ${manual}`);
  }
  if (/timed out|Connection timed out/i.test(stderr)) {
    return make(
      'the connection timed out',
      `check that the host is up and that a firewall or security group allows TCP port ${port} from this machine; try: ${manual}`,
    );
  }
  if (/No route to host|Network is unreachable/i.test(stderr)) {
    return make('no route to the host', `check the address and this machine's network connection; try: ${manual}`);
  }
  if (/kex_exchange_identification|Connection closed by|Connection reset by/i.test(stderr)) {
    return make(
      'the host closed the connection during the SSH handshake',
      `check that port ${port} is an SSH server and that sshd accepts connections (MaxStartups, fail2ban); try: ${manual}`,
    );
  }
  const line = lastLine(stderr);
  return make(line || 'ssh failed without a message', `try: ${manual}`);
}

interface RunOptions {
  input?: string | Buffer;
  signal?: AbortSignal;
  timeoutMs?: number;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

/**
 * Runs a local ssh process to completion. Rejects with `signal.reason` once aborted (the process
 * is killed first) and with SPOTCTL_HOST_REQUIREMENT when ssh is not installed.
 */
function runSsh(args: string[], options: RunOptions = {}): Promise<RunResult> {
  const { input, signal, timeoutMs, onStdout, onStderr } = options;
  return new Promise<RunResult>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    debug('run: ssh %s', args.join(' '));
    // stdin is always a pipe, closed at once when there is no input: the remote side reads EOF.
    const child = spawn(SSH, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let aborted = false;
    let killTimer: NodeJS.Timeout | undefined;
    let closeTimer: NodeJS.Timeout | undefined;
    const kill = (): void => {
      child.kill('SIGTERM');
      killTimer ??= setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    };
    const onAbort = (): void => {
      aborted = true;
      kill();
    };
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            kill();
          }, timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = (): void => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      clearTimeout(closeTimer);
      signal?.removeEventListener('abort', onAbort);
    };
    child.stdout.on('data', (c: Buffer) => {
      if (onStdout) onStdout(c);
      else out.push(c);
    });
    child.stderr.on('data', (c: Buffer) => {
      err.push(c);
      onStderr?.(c);
    });
    // The remote side may exit without reading its input; that EPIPE is not our failure.
    child.stdin.on('error', () => undefined);
    if (input === undefined) child.stdin.end();
    else child.stdin.end(input);
    child.once('error', (e: NodeJS.ErrnoException) => {
      cleanup();
      if (e.code === 'ENOENT') {
        reject(
          new UserError('SPOTCTL_HOST_REQUIREMENT', 'the OpenSSH client (ssh) is not installed on this machine', {
            remediation: 'install it: apt-get install openssh-client (macOS ships it)',
            cause: e,
          }),
        );
      } else reject(e);
    });
    child.once('exit', () => {
      // A mux client hands its stdio to the master, so after we kill the client our pipes stay
      // open until the remote command ends; do not wait for that. (A normal exit is waited out to
      // the last byte.)
      if (!aborted && !timedOut) return;
      closeTimer = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
      }, 200);
    });
    child.once('close', (code, sig) => {
      cleanup();
      if (aborted && signal) {
        reject(signal.reason);
        return;
      }
      resolve({ code, signal: sig, stdout: Buffer.concat(out), stderr: Buffer.concat(err), timedOut });
    });
  });
}

/** Control-socket paths must stay short and must not be writable by anyone else. */
async function resolveControlDir(controlDir: string): Promise<string> {
  const abs = path.resolve(controlDir);
  if (Buffer.byteLength(abs) <= MAX_CONTROL_DIR_BYTES && /^[A-Za-z0-9_./-]+$/.test(abs)) {
    await mkdir(abs, { recursive: true, mode: 0o700 });
    return abs;
  }
  // Fixed /tmp rather than os.tmpdir(): $TMPDIR may itself be long (macOS: /var/folders/...).
  const uid = process.getuid?.() ?? 0;
  const base = `/tmp/spotctl-${uid}`;
  await mkdir(base, { recursive: true, mode: 0o700 });
  const st = await lstat(base);
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) {
    throw new UserError('SPOTCTL_HOST_REQUIREMENT', `${base} is not a private directory owned by this user`, {
      remediation: `remove it and retry: rm -rf ${base}`,
    });
  }
  const dir = path.join(base, createHash('sha256').update(abs).digest('hex').slice(0, 16));
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return dir;
}

function validateTarget(target: SshTarget): void {
  if (!/^[^\s-][^\s]*$/.test(target.host)) {
    throw new UserError('SPOTCTL_USAGE', `invalid SSH host "${target.host}"`, {
      remediation: 'use the form user@host[:port]',
      exitCode: 2,
    });
  }
  if (target.port !== undefined && !(Number.isInteger(target.port) && target.port >= 1 && target.port <= 65535)) {
    throw new UserError('SPOTCTL_USAGE', `invalid SSH port ${target.port}`, {
      remediation: 'use a port from 1 to 65535',
      exitCode: 2,
    });
  }
}

async function requireFile(file: string, what: string, flag: string): Promise<void> {
  try {
    if ((await stat(file)).isFile()) return;
  } catch {
    // Reported below.
  }
  throw new UserError('SPOTCTL_USAGE', `${what} not found: ${file}`, {
    remediation: `check the path given to ${flag}`,
    exitCode: 2,
  });
}

/** Lines ssh itself prints when a multiplexed client cannot get through its master. */
const MUX_FAILURE = /^(mux_client_\w+|muxclient|Control ?socket|kex_exchange_identification|Connection to \S+ closed|client_loop)/im;

export class SshConnection implements AsyncDisposable {
  readonly target: SshTarget;
  /** The expanded control socket path of the master. */
  readonly controlPath: string;
  private readonly commonArgs: string[];
  private readonly masterArgs: string[];
  private readonly clientArgs: string[];
  private readonly connectTimeoutS: number;
  /** The control directory was replaced by a hashed one under /tmp, which close() tidies up. */
  private readonly controlDirIsHashed: boolean;
  private readonly forwards = new Map<string, UnixForward>();
  private reopening: Promise<void> | undefined;
  /**
   * The master was already running when we opened (another spotctl process follows the same run,
   * e.g. `spotctl ps` while `spotctl run` tails). It is not ours to stop: close() leaves it be.
   */
  private adopted = false;
  private closing: Promise<void> | undefined;

  private constructor(init: {
    target: SshTarget;
    controlPath: string;
    controlDirIsHashed: boolean;
    args: { common: string[]; master: string[]; client: string[] };
    connectTimeoutS: number;
  }) {
    this.target = init.target;
    this.controlPath = init.controlPath;
    this.controlDirIsHashed = init.controlDirIsHashed;
    this.commonArgs = init.args.common;
    this.masterArgs = init.args.master;
    this.clientArgs = init.args.client;
    this.connectTimeoutS = init.connectTimeoutS;
  }

  /**
   * Connects (or adopts a live master already on the same control socket) and returns once the
   * login succeeded. Fails with a one-line SPOTCTL_SSH_UNREACHABLE naming the cause.
   */
  static async open(target: SshTarget, opts: SshOpenOptions): Promise<SshConnection> {
    validateTarget(target);
    if (target.identityFile) await requireFile(target.identityFile, 'identity file', '--identity');
    if (target.configFile) await requireFile(target.configFile, 'ssh config file', '--ssh-config');
    opts.signal?.throwIfAborted();
    const connectTimeoutS = opts.connectTimeoutS ?? 10;
    const dir = await resolveControlDir(opts.controlDir);
    // %% keeps a literal % in the directory from being read as an ssh token.
    const controlPathPattern = `${dir.replace(/%/g, '%%')}/cm-%C`;

    const common: string[] = [];
    if (target.configFile) common.push('-F', target.configFile);
    common.push(
      // Never wait for a password or passphrase prompt nobody will answer.
      '-o',
      'BatchMode=yes',
      '-o',
      `ControlPath=${controlPathPattern}`,
      '-o',
      `ConnectTimeout=${connectTimeoutS}`,
      '-o',
      `ServerAliveInterval=${opts.serverAliveIntervalS ?? 5}`,
      '-o',
      `ServerAliveCountMax=${opts.serverAliveCountMax ?? 3}`,
      // A forward's socket left behind by a dead master would otherwise block its replacement.
      '-o',
      'StreamLocalBindUnlink=yes',
    );
    if (target.knownHostsFile) {
      // The given file is the only trust anchor: no fallback to the global file, no key rotation into it.
      common.push(
        '-o',
        `UserKnownHostsFile=${optionValue(target.knownHostsFile)}`,
        '-o',
        'GlobalKnownHostsFile=/dev/null',
        '-o',
        'StrictHostKeyChecking=yes',
        '-o',
        'UpdateHostKeys=no',
      );
    } else {
      // Trust on first use for a user's own host, like a first `ssh` by hand; a changed key is still refused.
      common.push('-o', 'StrictHostKeyChecking=accept-new');
    }
    if (target.identityFile) common.push('-i', target.identityFile, '-o', 'IdentitiesOnly=yes');
    if (target.port !== undefined) common.push('-p', String(target.port));
    if (target.user !== undefined) common.push('-l', target.user);

    const master = [
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPersist=${Math.max(1, Math.round(opts.masterIdleExitS ?? MASTER_IDLE_EXIT_S))}s`,
      '-o',
      'ExitOnForwardFailure=yes',
    ];
    const client = [
      '-o',
      'ControlMaster=no',
      // If the master is gone, ssh would silently open a second, direct connection; a proxy
      // command that fails at once turns that into a fast, detectable error instead.
      '-o',
      'ProxyCommand=false',
      // Keeps ssh's own chatter out of the remote command's stderr.
      '-o',
      'LogLevel=ERROR',
    ];

    // ssh -G prints the configuration with ControlPath expanded: the real socket path, needed to
    // clear a stale socket left by a killed master.
    const g = await runSsh([...common, '-G', '--', target.host], { signal: opts.signal, timeoutMs: CONTROL_TIMEOUT_MS });
    const controlPath = /^controlpath (.+)$/m.exec(g.stdout.toString())?.[1]?.trim();
    if (g.code !== 0 || !controlPath) {
      throw new UserError(
        'SPOTCTL_SSH_FAILED',
        `ssh rejected the options for ${describeTarget(target)}: ${lastLine(g.stderr.toString())}`,
        {
          remediation: target.configFile ? `check ${target.configFile}` : 'check ~/.ssh/config',
        },
      );
    }
    const conn = new SshConnection({
      target,
      controlPath,
      controlDirIsHashed: dir !== path.resolve(opts.controlDir),
      args: { common, master, client },
      connectTimeoutS,
    });
    await conn.startMaster(opts.signal);
    return conn;
  }

  /** The argv prefix of a client that goes through the master; append the host and a command. */
  sshCommandArgs(): string[] {
    return [SSH, ...this.commonArgs, ...this.clientArgs];
  }

  /**
   * Runs `remoteCommand` (a shell command line, run by the login shell) on the host through the
   * master. Never throws for a non-zero remote exit; throws SPOTCTL_SSH_UNREACHABLE when ssh
   * itself fails. Abort and `timeoutMs` stop the local client only: without a tty the remote
   * command is not signalled, so long-running remote work belongs under the agent.
   */
  async exec(remoteCommand: string, opts: SshExecOptions = {}): Promise<SshExecResult> {
    this.assertOpen();
    const r = await runSsh([...this.commonArgs, ...this.clientArgs, '-T', '--', this.target.host, remoteCommand], opts);
    const stderr = r.stderr.toString();
    if (r.timedOut) {
      throw new UserError(
        'SPOTCTL_SSH_FAILED',
        `remote command timed out after ${opts.timeoutMs} ms on ${describeTarget(this.target)}: ${remoteCommand.slice(0, 80)}`,
        {
          remediation: 'check that the host is responsive, or allow more time',
        },
      );
    }
    if (r.code === null) {
      throw new UserError('SPOTCTL_SSH_FAILED', `ssh was killed by ${r.signal} while running: ${remoteCommand.slice(0, 80)}`);
    }
    // 255 is both "ssh failed" and "the remote command exited 255 or died of a signal": a dead
    // master or ssh's own error lines tell them apart.
    if (r.code === 255 && (MUX_FAILURE.test(stderr) || !(await this.check()))) {
      throw this.lostConnectionError(stderr);
    }
    return { code: r.code, stdout: r.stdout.toString(), stderr };
  }

  /** Is the master alive and answering on its control socket? */
  async check(): Promise<boolean> {
    return (await this.masterPid()) !== undefined;
  }

  /** The master's pid as it reports it (`ssh -O check`), undefined when it is not running. */
  async masterPid(): Promise<number | undefined> {
    const r = await runSsh([...this.commonArgs, '-O', 'check', '--', this.target.host], { timeoutMs: CONTROL_TIMEOUT_MS });
    const m = /Master running \(pid=(\d+)\)/.exec(r.stderr.toString());
    return r.code === 0 && m ? Number(m[1]) : undefined;
  }

  /**
   * Restarts the master if it is dead and re-adds every forward registered so far. A live master
   * is left alone. Concurrent calls share one attempt.
   */
  reopen(signal?: AbortSignal): Promise<void> {
    this.assertOpen();
    this.reopening ??= (async () => {
      try {
        if (await this.check()) return;
        debug('master of %s is gone; reconnecting', describeTarget(this.target));
        await this.startMaster(signal);
        for (const fwd of this.forwards.values()) await this.addForward(fwd);
      } finally {
        this.reopening = undefined;
      }
    })();
    return this.reopening;
  }

  /**
   * Forwards a local unix socket to `remoteHost:remotePort` as seen from the host, through the
   * master. Remembered, so `reopen()` restores it.
   */
  async forwardUnixSocket(localSocketPath: string, remoteHost: string, remotePort: number): Promise<void> {
    this.assertOpen();
    const socketPath = path.resolve(localSocketPath);
    if (Buffer.byteLength(socketPath) > MAX_UNIX_SOCKET_PATH_BYTES || socketPath.includes(':')) {
      throw new SpotctlError('SPOTCTL_INTERNAL', `unix socket path is too long or contains ':' (${socketPath})`);
    }
    const fwd: UnixForward = { localSocketPath: socketPath, remoteHost, remotePort };
    await this.addForward(fwd);
    this.forwards.set(socketPath, fwd);
  }

  /** Removes a forward added by `forwardUnixSocket` (and forgets it for `reopen()`). */
  async cancelForward(localSocketPath: string): Promise<void> {
    const socketPath = path.resolve(localSocketPath);
    const fwd = this.forwards.get(socketPath);
    if (!fwd) return;
    this.forwards.delete(socketPath);
    await runSsh([...this.commonArgs, '-O', 'cancel', '-L', forwardSpec(fwd), '--', this.target.host], { timeoutMs: CONTROL_TIMEOUT_MS });
    await unlink(socketPath).catch(() => undefined);
  }

  /** Stops the master (`ssh -O exit`, then SIGTERM if it lingers). Idempotent, bounded by a few seconds. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // A reconnect still under way would otherwise leave a fresh master behind.
      await this.reopening?.catch(() => undefined);
      if (this.adopted) {
        debug('leaving the adopted master of %s running', describeTarget(this.target));
        return;
      }
      await this.stopMaster();
      for (const socketPath of this.forwards.keys()) await unlink(socketPath).catch(() => undefined);
      await unlink(this.controlPath).catch(() => undefined);
      // Only removes the directory when it is empty: another connection may share it.
      if (this.controlDirIsHashed) await rmdir(path.dirname(this.controlPath)).catch(() => undefined);
      debug('closed connection to %s', describeTarget(this.target));
    })();
    return this.closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private assertOpen(): void {
    if (this.closing) throw new SpotctlError('SPOTCTL_INTERNAL', `the SSH connection to ${describeTarget(this.target)} is closed`);
  }

  private lostConnectionError(stderr: string): UserError {
    return new UserError('SPOTCTL_SSH_UNREACHABLE', `lost the SSH connection to ${describeTarget(this.target)}`, {
      remediation: `check that the host is still running and reachable; try: ${manualSshCommand(this.target)}`,
      cause: stderr.trim() === '' ? undefined : new Error(stderr.trim()),
    });
  }

  private async startMaster(signal?: AbortSignal): Promise<void> {
    const existing = await this.masterPid();
    if (existing !== undefined) {
      debug('adopting running master pid %d on %s', existing, this.controlPath);
      this.adopted = true;
      return;
    }
    this.adopted = false;
    // A master killed with SIGKILL leaves its socket behind, and a new master finding it would
    // run with multiplexing disabled.
    await unlink(this.controlPath).catch(() => undefined);
    // -f: ssh backgrounds itself (and detaches from our pipes) only after the login succeeded,
    // so its exit status is the login result. The master then lives on its own until `-O exit`.
    // No -M: after `-o ControlMaster=yes` it would flip the mode to "ask", and an ask-master
    // refuses every session when no one can confirm (BatchMode).
    const args = [...this.commonArgs, ...this.masterArgs, '-N', '-f', '--', this.target.host];
    // ConnectTimeout bounds the TCP connect and the banner exchange; the rest of the login gets as long again.
    const timeoutMs = (this.connectTimeoutS * 2 + 10) * 1000;
    let r: RunResult;
    try {
      r = await runSsh(args, { signal, timeoutMs });
    } catch (e) {
      // Aborted in the instant after the login succeeded, a master may already run in the background.
      if (signal?.aborted) await this.stopMaster();
      throw e;
    }
    const stderr = r.stderr.toString();
    if (stderr.trim()) debug('master stderr: %s', stderr.trim());
    if (r.timedOut) {
      throw new UserError(
        'SPOTCTL_SSH_UNREACHABLE',
        `cannot connect to SSH host ${describeTarget(this.target)}: the login did not finish within ${timeoutMs / 1000} s`,
        {
          remediation: `check that the host is responsive; try: ${manualSshCommand(this.target)}`,
        },
      );
    }
    if (r.code !== 0) throw translateSshFailure(stderr, this.target);
    const pid = await this.masterPid();
    if (pid === undefined) {
      throw new UserError('SPOTCTL_SSH_FAILED', `ssh connected to ${describeTarget(this.target)} but its control socket does not answer`, {
        remediation: `check that ${path.dirname(this.controlPath)} is writable and not shared with another user; ssh said: ${lastLine(stderr) || 'nothing'}`,
      });
    }
    debug('master pid %d up for %s', pid, describeTarget(this.target));
  }

  /** `-O exit`, then signals if the master lingers. Never throws. */
  private async stopMaster(): Promise<void> {
    const pid = await this.masterPid().catch(() => undefined);
    if (pid === undefined) return;
    await runSsh([...this.commonArgs, '-O', 'exit', '--', this.target.host], { timeoutMs: CONTROL_TIMEOUT_MS }).catch(() => undefined);
    if (await exitedWithin(pid, CONTROL_TIMEOUT_MS)) return;
    debug('master %d ignored -O exit; sending SIGTERM', pid);
    signalPid(pid, 'SIGTERM');
    if (!(await exitedWithin(pid, KILL_GRACE_MS))) signalPid(pid, 'SIGKILL');
  }

  private async addForward(fwd: UnixForward): Promise<void> {
    const r = await runSsh([...this.commonArgs, '-O', 'forward', '-L', forwardSpec(fwd), '--', this.target.host], {
      timeoutMs: CONTROL_TIMEOUT_MS,
    });
    if (r.code === 0) {
      debug('forward %s -> %s:%d', fwd.localSocketPath, fwd.remoteHost, fwd.remotePort);
      return;
    }
    const stderr = r.stderr.toString();
    if (!(await this.check())) throw this.lostConnectionError(stderr);
    throw new UserError(
      'SPOTCTL_SSH_FAILED',
      `could not forward ${fwd.localSocketPath} to ${fwd.remoteHost}:${fwd.remotePort} on ${describeTarget(this.target)}: ${lastLine(stderr) || 'ssh gave no reason'}`,
      {
        remediation: 'check that sshd on the host allows forwarding (AllowTcpForwarding yes) and that the local directory is writable',
      },
    );
  }
}

function forwardSpec(fwd: UnixForward): string {
  const host = fwd.remoteHost.includes(':') ? `[${fwd.remoteHost}]` : fwd.remoteHost;
  return `${fwd.localSocketPath}:${host}:${fwd.remotePort}`;
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/** Alive and not a zombie: a daemonized master is re-parented to pid 1, which may never reap it. */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    // No procfs (macOS): kill(0) succeeding is the best we know.
    return true;
  }
}

async function exitedWithin(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (isRunning(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
