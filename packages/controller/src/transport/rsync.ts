/**
 * Copies the user's project to the host with rsync, riding the SSH master connection (`rsync -e`),
 * so a re-sync sends only what changed and the host sees no extra login.
 */
import { spawn } from 'node:child_process';
import { mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import createDebug from 'debug';
import { UserError } from '@spotctl/shared';
import { shellQuote } from './shell.ts';
import type { SshConnection } from './ssh.ts';

const debug = createDebug('spotctl:rsync');

/**
 * Never worth sending: VCS data, virtualenvs and caches that belong to this machine (a venv holds
 * absolute paths and platform binaries), and spotctl's own state. Listed before the .gitignore
 * rules so a project cannot opt them back in.
 */
export const ALWAYS_EXCLUDED = ['.git', '.venv/', 'venv/', '__pycache__/', 'node_modules/', '.spotctl/'] as const;

export interface RsyncProgress {
  /** Bytes transferred so far in this run. */
  bytes: number;
  /** rsync's own estimate of overall completion, 0–100. */
  percent: number;
  /** Current rate as rsync prints it, e.g. "1.23MB/s". */
  rate: string;
}

export interface RsyncOptions {
  signal?: AbortSignal;
  /**
   * Delete files in `remoteDir` that no longer exist locally. Excluded paths (a remote `.venv`,
   * ignored outputs) are never deleted. @default false
   */
  deleteExtraneous?: boolean;
  /** Called as rsync reports overall progress (`--info=progress2`). @default no progress reporting */
  onProgress?: (progress: RsyncProgress) => void;
  /**
   * An absolute directory on the receiving side holding an earlier copy (the previous run's
   * workdir): unchanged files are hard-linked from it instead of sent (`--link-dest`).
   * @default none: every file is sent
   */
  linkDest?: string;
}

export interface RsyncResult {
  /** Files whose content was sent (new or changed), relative to `remoteDir`. */
  files: string[];
}

/** Marks rsync's per-file lines in its stdout, apart from progress output. */
const ITEM_PREFIX = 'spotctl-item:';

/**
 * rsync splits `-e` on spaces itself, honouring single and double quotes (no backslashes), so each
 * argument is wrapped in whichever quote it does not contain.
 */
function rsyncShellWord(arg: string): string {
  if (/^[A-Za-z0-9_./=%:@,+-]+$/.test(arg)) return arg;
  if (!arg.includes("'")) return `'${arg}'`;
  if (!arg.includes('"')) return `"${arg}"`;
  throw new UserError('SPOTCTL_USAGE', `cannot pass an ssh argument containing both quote characters to rsync: ${arg}`, {
    remediation: 'rename the file or directory so its path has no quotes',
    exitCode: 2,
  });
}

/** The most telling stderr line: rsync ends with a generic "rsync error: ... (code N)" summary. */
function telling(stderr: string): string {
  const lines = stderr
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return lines.filter((l) => !/^rsync error:/.test(l)).at(-1) ?? lines.at(-1) ?? '';
}

/**
 * Syncs `localPaths` into `remoteDir` on the host (or into a local directory when `conn` is null,
 * for the local provider). A directory sends its contents, as `dir/` does for rsync; a file is
 * sent into `remoteDir` by its name. `.gitignore` files are honoured (with rsync's reading of
 * them: a `!pattern` clears the list instead of re-including).
 */
export async function rsyncTo(
  conn: SshConnection | null,
  localPaths: string[],
  remoteDir: string,
  opts: RsyncOptions = {},
): Promise<RsyncResult> {
  const { signal, deleteExtraneous = false, onProgress, linkDest } = opts;
  signal?.throwIfAborted();
  if (localPaths.length === 0) {
    throw new UserError('SPOTCTL_USAGE', 'nothing to sync: no local paths given', {
      remediation: 'pass the project directory to sync, e.g. --sync .',
      exitCode: 2,
    });
  }
  const sources: string[] = [];
  for (const p of localPaths) {
    const abs = path.resolve(p);
    const st = await stat(abs).catch(() => undefined);
    if (!st) {
      throw new UserError('SPOTCTL_USAGE', `path to sync not found: ${p}`, {
        remediation: 'check the path, or run spotctl from your project directory',
        exitCode: 2,
      });
    }
    sources.push(st.isDirectory() ? `${abs}/` : abs);
  }

  const args = [
    '-a',
    // Owners and groups of this machine mean nothing on the host; files belong to the login user.
    '--no-owner',
    '--no-group',
    '--partial',
    `--out-format=${ITEM_PREFIX}%i %n`,
    ...ALWAYS_EXCLUDED.map((p) => `--exclude=${p}`),
    '--filter=:- .gitignore',
  ];
  if (deleteExtraneous) args.push('--delete');
  if (onProgress) args.push('--info=progress2');
  if (linkDest) args.push(`--link-dest=${linkDest}`);

  let destination: string;
  if (conn) {
    // Compression pays off over a network, not for a local copy.
    // --protect-args: the remote path reaches the host's rsync as is, never through its shell
    // (spaces and quotes in --remote-dir or the home directory stay literal).
    args.push('--compress', '--protect-args', '-e', conn.sshCommandArgs().map(rsyncShellWord).join(' '));
    // rsync creates only the last path component; older remote rsyncs lack --mkpath.
    const mk = await conn.exec(`mkdir -p -- ${shellQuote(remoteDir)}`, { signal, timeoutMs: 30_000 });
    if (mk.code !== 0) {
      throw new UserError('SPOTCTL_SYNC_FAILED', `could not create ${remoteDir} on the host: ${telling(mk.stderr)}`, {
        remediation: 'check the disk space and permissions on the host',
      });
    }
    const host = conn.target.host.includes(':') ? `[${conn.target.host}]` : conn.target.host;
    destination = `${host}:${remoteDir.replace(/\/+$/, '')}/`;
  } else {
    try {
      await mkdir(remoteDir, { recursive: true });
    } catch (e) {
      throw new UserError('SPOTCTL_SYNC_FAILED', `could not create ${remoteDir}: ${(e as Error).message}`, {
        remediation: 'check that the path is a writable directory',
        cause: e,
      });
    }
    destination = `${path.resolve(remoteDir)}/`;
  }
  args.push('--', ...sources, destination);

  const result = await runRsync(args, { signal, onProgress });
  if (result.code === 0 || result.code === 24) {
    // 24: files vanished while rsync ran (an editor's temp file); the sync is still good.
    if (result.code === 24) debug('some files vanished during the transfer: %s', telling(result.stderr));
    return { files: result.files };
  }
  if (/rsync: (command )?not found|rsync: No such file or directory/.test(result.stderr)) {
    throw new UserError('SPOTCTL_HOST_REQUIREMENT', 'rsync is not installed on the host', {
      remediation: 'install it on the host: sudo apt-get install -y rsync',
    });
  }
  if (conn && !(await conn.check())) {
    throw new UserError('SPOTCTL_SSH_UNREACHABLE', `lost the SSH connection to ${conn.target.host} while syncing`, {
      remediation: 'check that the host is still running and reachable, then retry',
      cause: new Error(result.stderr.trim()),
    });
  }
  throw new UserError('SPOTCTL_SYNC_FAILED', `rsync failed (exit ${result.code}): ${telling(result.stderr) || 'no message'}`, {
    remediation: 'fix the cause above and retry; DEBUG=spotctl:rsync shows the full command',
    cause: new Error(result.stderr.trim()),
  });
}

/**
 * Copies `relPaths` (relative to `remoteDir` on the host, or to a local directory when `conn` is
 * null) into `localDir`, keeping their relative paths (`results/a.csv` lands in
 * `localDir/results/a.csv`); directories come whole. Files already there with the same checksum
 * are skipped; every transferred file is verified by rsync's whole-file checksum.
 */
export async function rsyncFrom(
  conn: SshConnection | null,
  remoteDir: string,
  relPaths: string[],
  localDir: string,
  opts: Pick<RsyncOptions, 'signal' | 'onProgress'> = {},
): Promise<RsyncResult> {
  const { signal, onProgress } = opts;
  signal?.throwIfAborted();
  try {
    await mkdir(localDir, { recursive: true });
  } catch (e) {
    throw new UserError('SPOTCTL_SYNC_FAILED', `could not create ${localDir}: ${(e as Error).message}`, {
      remediation: 'check that the path is a writable directory',
      cause: e,
    });
  }
  // The list goes on stdin, NUL-separated: any file name survives, none reaches a shell.
  const args = [
    '-a',
    '-r',
    '--no-owner',
    '--no-group',
    '--checksum',
    '--partial',
    '--from0',
    '--files-from=-',
    `--out-format=${ITEM_PREFIX}%i %n`,
  ];
  if (onProgress) args.push('--info=progress2');
  let source: string;
  if (conn) {
    args.push('--compress', '--protect-args', '-e', conn.sshCommandArgs().map(rsyncShellWord).join(' '));
    const host = conn.target.host.includes(':') ? `[${conn.target.host}]` : conn.target.host;
    source = `${host}:${remoteDir.replace(/\/+$/, '')}/`;
  } else {
    source = `${path.resolve(remoteDir)}/`;
  }
  args.push('--', source, `${path.resolve(localDir)}/`);
  const result = await runRsync(args, { signal, onProgress, input: Buffer.from(relPaths.map((p) => `${p}\0`).join('')) });
  if (result.code === 0 || result.code === 24) return { files: result.files };
  if (conn && !(await conn.check())) {
    throw new UserError('SPOTCTL_SSH_UNREACHABLE', `lost the SSH connection to ${conn.target.host} while copying files back`, {
      remediation: 'check that the host is still running and reachable, then retry with: spotctl pull RUN PATH',
      cause: new Error(result.stderr.trim()),
    });
  }
  throw new UserError(
    'SPOTCTL_SYNC_FAILED',
    `copying files back failed (rsync exit ${result.code}): ${telling(result.stderr) || 'no message'}`,
    {
      remediation: 'fix the cause above and retry with: spotctl pull RUN PATH; DEBUG=spotctl:rsync shows the full command',
      cause: new Error(result.stderr.trim()),
    },
  );
}

interface RunRsyncResult {
  code: number | null;
  stderr: string;
  files: string[];
}

function runRsync(
  args: string[],
  options: { signal?: AbortSignal; onProgress?: (p: RsyncProgress) => void; input?: Buffer },
): Promise<RunRsyncResult> {
  const { signal, onProgress, input } = options;
  return new Promise((resolve, reject) => {
    debug('rsync %s', args.join(' '));
    const child = spawn('rsync', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    // rsync that fails before reading its file list must not crash us with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    const files: string[] = [];
    let stderr = '';
    let pending = '';
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = (): void => {
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 2_000);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const handleLine = (line: string): void => {
      if (line.startsWith(ITEM_PREFIX)) {
        const [item = '', ...name] = line.slice(ITEM_PREFIX.length).split(' ');
        // "<f" sent to a remote host, ">f" received by a local copy: a file whose data moved.
        if (/^[<>]f/.test(item)) files.push(name.join(' '));
        return;
      }
      const m = /^\s*([\d,]+)\s+(\d+)%\s+(\S+)/.exec(line);
      if (m && onProgress) onProgress({ bytes: Number(m[1]!.replace(/,/g, '')), percent: Number(m[2]), rate: m[3]! });
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      // Progress lines end in \r, item lines in \n.
      const parts = (pending + s).split(/[\r\n]/);
      pending = parts.pop() ?? '';
      for (const line of parts) if (line) handleLine(line);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => {
      stderr += s;
      if (stderr.length > 64 * 1024) stderr = stderr.slice(-32 * 1024);
    });
    child.once('error', (e: NodeJS.ErrnoException) => {
      signal?.removeEventListener('abort', onAbort);
      clearTimeout(killTimer);
      if (e.code === 'ENOENT') {
        reject(
          new UserError('SPOTCTL_HOST_REQUIREMENT', 'rsync is not installed on this machine', {
            remediation: 'install rsync: apt-get install rsync (macOS: brew install rsync)',
            cause: e,
          }),
        );
      } else reject(e);
    });
    child.once('close', (code) => {
      signal?.removeEventListener('abort', onAbort);
      clearTimeout(killTimer);
      if (pending) handleLine(pending);
      if (signal?.aborted) reject(signal.reason);
      else resolve({ code, stderr, files });
    });
  });
}
