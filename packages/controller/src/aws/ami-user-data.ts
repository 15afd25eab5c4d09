/**
 * What a fresh instance is told at boot (EC2 user-data, read by cloud-init):
 *   - its SSH host key, generated here by the controller, so the controller can pin it in the
 *     run's known_hosts before the first connection: no trust on first use and never
 *     `StrictHostKeyChecking=no`. cloud-init's `ssh_keys` writes it and `ssh_deletekeys` drops any
 *     other host key before sshd starts.
 *   - on stock Ubuntu: ami/install.sh (Node.js 20+, python3-venv, rsync, build-essential). A baked
 *     spotctl image has all of that already and gets the host key only.
 *   - on an image with the NVIDIA driver (the Deep Learning Base image or a bake from it): no
 *     package upgrade, and the kernel and NVIDIA packages held before anything else runs, so neither
 *     our install nor unattended-upgrades can swap the kernel the driver was built for.
 *
 * The host key's private half travels in user-data, which anyone allowed
 * ec2:DescribeInstanceAttribute in the account (and any process on the instance) can read: it
 * proves "this is the instance our account launched", which is what pinning needs here.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { UserError } from '@spotctl/shared';
import { INSTALL_SH } from './ami-scripts.ts';

const execFileAsync = promisify(execFile);

/** EC2 refuses user-data above 16 KiB (before base64). */
export const MAX_USER_DATA_BYTES = 16 * 1024;
/** Where user-data puts the install script on the instance. */
export const INSTALL_SCRIPT_PATH = '/usr/local/lib/spotctl/install.sh';

export interface HostKey {
  /** OpenSSH private key (PEM-like block). */
  privateKey: string;
  /** `ssh-ed25519 AAAA… comment` */
  publicKey: string;
}

/** A fresh ed25519 host key from ssh-keygen; nothing of it stays on disk here. */
export async function generateHostKey(comment: string): Promise<HostKey> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'spotctl-hostkey-'));
  try {
    const file = path.join(dir, 'key');
    await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { timeout: 30_000 });
    return { privateKey: await readFile(file, 'utf8'), publicKey: (await readFile(`${file}.pub`, 'utf8')).trim() };
  } catch (error) {
    throw new UserError('SPOTCTL_HOST_REQUIREMENT', `ssh-keygen failed: ${error instanceof Error ? error.message : String(error)}`, {
      remediation: 'install the OpenSSH client (sudo apt-get install openssh-client)',
      cause: error,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The known_hosts line that pins `publicKey` for `host` (and `port` when it is not 22). */
export function knownHostsLine(host: string, port: number | undefined, publicKey: string): string {
  const h = host.includes(':') ? `[${host}]` : host;
  const pattern = port === undefined || port === 22 ? h : `[${host}]:${port}`;
  const [type, key] = publicKey.trim().split(/\s+/);
  return `${pattern} ${type} ${key}\n`;
}

/** Writes the run's known_hosts (0600): the one key the run trusts for its host. */
export async function writeKnownHosts(file: string, host: string, port: number | undefined, publicKey: string): Promise<void> {
  await writeFile(file, knownHostsLine(host, port, publicKey), { mode: 0o600 });
}

function indent(text: string, spaces: number): string {
  const pad = ' '.repeat(spaces);
  return text
    .trimEnd()
    .split('\n')
    .map((line) => `${pad}${line}`)
    .join('\n');
}

export interface UserDataOptions {
  hostKey: HostKey;
  /** Install Node.js, python3-venv and rsync (stock Ubuntu); false on a baked image. */
  install: boolean;
  /** Goes into a comment, for whoever reads the user-data later. */
  runId: string;
  /** The image carries the NVIDIA driver: keep it working (see the file comment). @default false */
  gpu?: boolean;
}

/**
 * bootcmd (runs first, every boot): hold the kernel and the NVIDIA driver packages. A held package
 * is never upgraded by apt-get install/upgrade or unattended-upgrades.
 */
export const HOLD_DRIVER_COMMAND =
  // `${…}` is dpkg-query's own format syntax, not ours.
  // eslint-disable-next-line no-template-curly-in-string
  "dpkg-query -W -f='${binary:Package}\\n' 'linux-image-*' 'linux-headers-*' 'linux-modules-*' 'linux-aws*' 'nvidia-*' 'libnvidia-*' 'cuda-drivers*' 2>/dev/null | xargs -r apt-mark hold >/dev/null 2>&1 || true";

/** The cloud-config document (plain text; RunInstances wants it base64-encoded). */
export function cloudConfig(options: UserDataOptions): string {
  const { hostKey } = options;
  if (!/^ssh-ed25519 [A-Za-z0-9+/=]+/.test(hostKey.publicKey)) throw new Error('host key must be ed25519');
  const lines = [
    '#cloud-config',
    `# spotctl run ${options.runId}: pinned SSH host key${options.install ? ', host setup (ami/install.sh)' : ''}`,
    'ssh_deletekeys: true',
    'ssh_genkeytypes: []',
    'ssh_keys:',
    '  ed25519_private: |',
    indent(hostKey.privateKey, 4),
    `  ed25519_public: ${hostKey.publicKey.trim()}`,
  ];
  if (options.gpu)
    lines.push('package_update: false', 'package_upgrade: false', 'bootcmd:', `  - [sh, -c, ${JSON.stringify(HOLD_DRIVER_COMMAND)}]`);
  if (options.install) {
    lines.push(
      'write_files:',
      `  - path: ${INSTALL_SCRIPT_PATH}`,
      "    permissions: '0755'",
      '    encoding: b64',
      `    content: ${Buffer.from(INSTALL_SH).toString('base64')}`,
      'runcmd:',
      `  - [sh, ${INSTALL_SCRIPT_PATH}]`,
    );
  }
  const text = `${lines.join('\n')}\n`;
  if (Buffer.byteLength(text) > MAX_USER_DATA_BYTES)
    throw new Error(`user-data is ${Buffer.byteLength(text)} bytes; EC2 allows ${MAX_USER_DATA_BYTES}`);
  return text;
}

/** The host key cloud-init will install, read back from a cloud-config document (tests; `ami build`). */
export function hostKeyFromCloudConfig(text: string): HostKey | undefined {
  const priv = /^ {2}ed25519_private: \|\n((?: {4}.*\n)+)/m.exec(text)?.[1];
  const pub = /^ {2}ed25519_public: (.+)$/m.exec(text)?.[1];
  if (!priv || !pub) return undefined;
  return { privateKey: priv.replace(/^ {4}/gm, ''), publicKey: pub.trim() };
}

/**
 * Run over SSH once the host answers: waits (bounded) for cloud-init to finish its work. Hosts
 * without cloud-init (a test host) go on at once. Prints `cloud-init=<exit>`: 0 done, 2 done with
 * warnings, anything else failed (the host checks that follow say what is missing).
 */
export function cloudInitWaitScript(timeoutS: number): string {
  return [
    'if command -v cloud-init >/dev/null 2>&1; then',
    `  timeout ${Math.max(1, Math.round(timeoutS))} cloud-init status --wait >/dev/null 2>&1; echo "cloud-init=$?"`,
    'else echo cloud-init=absent; fi',
  ].join('\n');
}
