/**
 * A real OpenSSH server for tests: its own host key, client key, authorized_keys and known_hosts in
 * a temp dir, listening on loopback (or on the address of a test network namespace).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { readUntil, waitFor } from './read-until.ts';
import { tmpDir, type TmpDir } from './tmp.ts';

const execFileAsync = promisify(execFile);

const SSHD = '/usr/sbin/sshd';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

export interface StartSshdOptions {
  /** Run sshd inside this network namespace (a name, or the object from `createNetns()`). */
  netns?: string | { name: string; nsAddress: string };
  /** Address to listen on. @default the namespace's address, else '127.0.0.1' */
  address?: string;
  /** @default a free port on loopback; 22 inside a namespace (it is fresh, so 22 is free) */
  port?: number;
  /**
   * An argv prefix sshd is run under (it must exec sshd in place, so the pid stays sshd's), e.g.
   * a shell that bind-mounts a disk of the host's own first.
   */
  wrap?: string[];
}

export interface Sshd extends AsyncDisposable {
  readonly host: string;
  readonly port: number;
  /** The account tests log in as: the current user, root in CI. */
  readonly user: string;
  readonly identityFile: string;
  /** Holds exactly this server's host key, so StrictHostKeyChecking=yes passes. */
  readonly knownHostsFile: string;
  /** A minimal client config, so the developer's ~/.ssh/config cannot change the tests. */
  readonly configFile: string;
  /** `user@host:port`, as a user would type it. */
  readonly hostSpec: string;
  readonly dir: string;
  /** sshd's pid, undefined while stopped. */
  readonly pid: number | undefined;
  /** Everything sshd wrote (LogLevel VERBOSE), for debugging failures. */
  log(): string;
  /**
   * Stops the listener and, unless `keepSessions`, every connection it accepted, so clients see a
   * dropped host. Idempotent.
   */
  stop(options?: { keepSessions?: boolean }): Promise<void>;
  /** Starts sshd again on the same address and port. */
  start(): Promise<void>;
  close(): Promise<void>;
}

async function freePort(address: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, address, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function keygen(file: string): Promise<string> {
  await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'spotctl-test', '-f', file]);
  return (await readFile(`${file}.pub`, 'utf8')).trim();
}

/** Pids whose parent is `pid`: sshd's per-connection children. */
async function childPids(pid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // The command name may contain spaces and parentheses; the fields after the last ')' do not.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) pids.push(Number(entry));
    } catch {
      // The process exited while we looked.
    }
  }
  return pids;
}

/** Alive and not a zombie: sessions orphaned by the listener are reaped by pid 1, which may be slow. */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** The `spotctl` flags that reach this test sshd: its host, key, pinned host key and client config. */
export function sshHostArgs(sshd: Pick<Sshd, 'hostSpec' | 'identityFile' | 'knownHostsFile' | 'configFile'>): string[] {
  return ['--host', sshd.hostSpec, '--identity', sshd.identityFile, '--known-hosts', sshd.knownHostsFile, '--ssh-config', sshd.configFile];
}

export async function startSshd(options: StartSshdOptions = {}): Promise<Sshd> {
  const netnsName = typeof options.netns === 'string' ? options.netns : options.netns?.name;
  const address = options.address ?? (typeof options.netns === 'object' ? options.netns.nsAddress : undefined) ?? '127.0.0.1';
  if (netnsName && address.startsWith('127.')) {
    throw new Error('startSshd: inside a namespace, listen on its veth address (pass address or a Netns object)');
  }
  const user = os.userInfo().username;
  const tmp: TmpDir = await tmpDir('spotctl-sshd-');
  const dir = tmp.path;
  let child: ChildProcess | undefined;
  let logText = '';
  let port = 0;

  const hostKey = path.join(dir, 'host_ed25519_key');
  const identityFile = path.join(dir, 'id_ed25519');
  const authorizedKeys = path.join(dir, 'authorized_keys');
  const knownHostsFile = path.join(dir, 'known_hosts');
  const configFile = path.join(dir, 'ssh_config');
  const sshdConfig = path.join(dir, 'sshd_config');
  const pidFile = path.join(dir, 'sshd.pid');

  const spawnOnce = async (): Promise<'ok' | 'in-use'> => {
    // sshd refuses relative paths; every path here is absolute.
    await writeFile(
      sshdConfig,
      [
        `ListenAddress ${address.includes(':') ? `[${address}]` : address}:${port}`,
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${authorizedKeys}`,
        `PidFile ${pidFile}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin prohibit-password',
        'UsePAM no',
        // The temp dir is world-readable /tmp; StrictModes would reject the key files in it.
        'StrictModes no',
        'AllowTcpForwarding yes',
        'AllowStreamLocalForwarding yes',
        'MaxSessions 50',
        'MaxStartups 50',
        'PrintMotd no',
        'LogLevel VERBOSE',
        'Subsystem sftp internal-sftp',
        // On loopback, agents on this test host must never reach for the real metadata service
        // (their AWS SDK would, looking for credentials): the machine running the tests may be an
        // EC2 instance. Inside a namespace 169.254.169.254 is the test's own emulator.
        ...(netnsName ? [] : ['SetEnv AWS_EC2_METADATA_DISABLED=true']),
        '',
      ].join('\n'),
    );
    const argv = [SSHD, '-D', '-e', '-f', sshdConfig];
    // `ip netns exec` execs sshd in place, so the child's pid is sshd's.
    const wrapped = [...(options.wrap ?? []), ...argv];
    const [file, ...args] = netnsName ? ['ip', 'netns', 'exec', netnsName, ...wrapped] : wrapped;
    const proc = spawn(file!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    const stderr = proc.stderr!;
    stderr.setEncoding('utf8');
    stderr.on('data', (s: string) => (logText += s));
    try {
      await readUntil(stderr, /Server listening on \S+ port \d+/, START_TIMEOUT_MS);
      return 'ok';
    } catch (e) {
      proc.kill('SIGKILL');
      await exited(proc);
      child = undefined;
      if (/Address already in use/.test(logText)) return 'in-use';
      throw new Error(`sshd did not start on ${address}:${port}: ${(e as Error).message}`, { cause: e });
    }
  };

  const start = async (): Promise<void> => {
    if (child) return;
    // sshd chroots its pre-auth child into /run/sshd and refuses to start without it.
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const fixed = port !== 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      if (!fixed) port = options.port ?? (netnsName ? 22 : await freePort(address));
      if ((await spawnOnce()) === 'ok') return;
      // Another process took the port between our probe and sshd's bind: pick another one.
      if (fixed || options.port !== undefined || netnsName) break;
      port = 0;
    }
    throw new Error(`sshd could not bind ${address}:${port}:\n${logText}`);
  };

  const stop = async ({ keepSessions = false } = {}): Promise<void> => {
    const proc = child;
    if (!proc?.pid) return;
    child = undefined;
    // Collected before the listener dies: afterwards the sessions are re-parented and untraceable.
    const sessions = keepSessions ? [] : await childPids(proc.pid);
    proc.kill('SIGTERM');
    for (const pid of sessions) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
    }
    const deadline = AbortSignal.timeout(STOP_TIMEOUT_MS);
    await Promise.race([exited(proc), new Promise((r) => deadline.addEventListener('abort', r))]);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited(proc);
    await waitFor(() => sessions.every((pid) => !isAlive(pid)), {
      timeoutMs: STOP_TIMEOUT_MS,
      what: `sshd sessions ${sessions.join(',')} to exit`,
    }).catch(() => {
      for (const pid of sessions) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    });
  };

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await stop();
      await tmp[Symbol.asyncDispose]();
    })());

  try {
    const hostPub = await keygen(hostKey);
    const clientPub = await keygen(identityFile);
    await writeFile(authorizedKeys, `${clientPub}\n`);
    await writeFile(configFile, '# Empty on purpose: keeps ~/.ssh/config and its defaults out of the tests.\n');
    await start();
    const [type, key] = hostPub.split(/\s+/);
    const hostPattern = port === 22 ? address : `[${address}]:${port}`;
    await writeFile(knownHostsFile, `${hostPattern} ${type} ${key}\n`);
  } catch (e) {
    await close();
    throw e;
  }

  const hostForSpec = address.includes(':') ? `[${address}]` : address;
  return {
    host: address,
    port,
    user,
    identityFile,
    knownHostsFile,
    configFile,
    hostSpec: `${user}@${hostForSpec}:${port}`,
    dir,
    get pid() {
      return child?.pid;
    },
    log: () => logText,
    stop,
    start,
    close,
    [Symbol.asyncDispose]: close,
  };
}
