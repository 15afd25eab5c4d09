/**
 * A run's workdir seen from here: copying paths out of it (`run --pull`, `spotctl pull`) and the
 * shell line that enters it (`spotctl ssh`). The same scripts run on an SSH host and locally, so
 * the providers cannot drift apart.
 */
import { spawn } from 'node:child_process';
import { lstat, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '@spotctl/shared';
import { rsyncFrom, type RsyncProgress } from './rsync.ts';
import { lastLine, shellQuote } from './shell.ts';
import type { SshConnection } from './ssh.ts';

export interface PullResult {
  /** Regular files now under `dir` for the matched paths (copied now, or already identical). */
  files: number;
  bytes: number;
  dir: string;
  /** Workdir-relative paths the patterns matched. */
  matched: string[];
  /** Patterns that matched nothing. */
  missing: string[];
}

export interface PullOptions {
  signal?: AbortSignal;
  onProgress?: (progress: RsyncProgress) => void;
}

const BRACKET = /^\[!?[A-Za-z0-9_.-]+\]/;

/**
 * Checks a `--pull` / `spotctl pull` path: relative to the workdir, never above it. sh-style
 * globs (`*`, `?`, `[abc]`) match within one path segment.
 */
export function checkPullPattern(pattern: string, flag: string): void {
  const bad = (why: string): never => {
    throw new UserError('SPOTCTL_USAGE', `${flag} ${JSON.stringify(pattern)}: ${why}`, {
      remediation: `give a path relative to the run's workdir, e.g. ${flag} results or ${flag} 'outputs/*.pt'`,
      exitCode: 2,
    });
  };
  if (pattern.trim() === '') bad('empty path');
  if (pattern.startsWith('/') || pattern.startsWith('~')) bad('must be relative to the workdir');
  if (pattern.split('/').includes('..')) bad('must not leave the workdir (..)');
  if (/[\0\n]/.test(pattern)) bad('contains a NUL or newline');
}

/** The pattern as sh words: literal text quoted, `*`, `?` and simple `[...]` left to the shell. */
export function globWord(pattern: string): string {
  let word = '';
  let literal = '';
  const flush = (): void => {
    if (literal) word += `'${literal.replace(/'/g, `'\\''`)}'`;
    literal = '';
  };
  for (let i = 0; i < pattern.length;) {
    const ch = pattern[i]!;
    const bracket = ch === '[' ? BRACKET.exec(pattern.slice(i)) : null;
    if (ch === '*' || ch === '?') {
      flush();
      word += ch;
      i++;
    } else if (bracket) {
      flush();
      word += bracket[0];
      i += bracket[0].length;
    } else {
      literal += ch;
      i++;
    }
  }
  flush();
  return word;
}

/** Prints `M<path>\0` for each match and `N<pattern>\0` for a pattern that matched nothing. */
export function globScript(workdir: string, patterns: string[]): string {
  const lines = [`cd ${shellQuote(workdir)} || exit 3`];
  for (const pattern of patterns) {
    const quoted = `'${pattern.replace(/'/g, `'\\''`)}'`;
    lines.push(
      `found=; for p in ${globWord(pattern)}; do if [ -e "$p" ] || [ -L "$p" ]; then found=1; printf 'M%s\\0' "$p"; fi; done; [ -n "$found" ] || printf 'N%s\\0' ${quoted}`,
    );
  }
  return lines.join('\n');
}

function runLocalShell(script: string, signal?: AbortSignal): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function countLocal(root: string, rel: string): Promise<{ files: number; bytes: number }> {
  const abs = path.join(root, rel);
  const st = await lstat(abs).catch(() => undefined);
  if (!st) return { files: 0, bytes: 0 };
  if (st.isFile()) return { files: 1, bytes: st.size };
  if (!st.isDirectory()) return { files: 0, bytes: 0 };
  let files = 0;
  let bytes = 0;
  for (const entry of await readdir(abs)) {
    const sub = await countLocal(root, path.join(rel, entry));
    files += sub.files;
    bytes += sub.bytes;
  }
  return { files, bytes };
}

/**
 * Copies what `patterns` match in the run's workdir (on the host through `conn`'s master, or
 * locally when `conn` is null) into `localDir`, keeping workdir-relative paths.
 */
export async function pullFromWorkdir(
  conn: SshConnection | null,
  workdir: string,
  patterns: string[],
  localDir: string,
  opts: PullOptions = {},
): Promise<PullResult> {
  const script = globScript(workdir, patterns);
  const listed = conn ? await conn.exec(script, { signal: opts.signal, timeoutMs: 60_000 }) : await runLocalShell(script, opts.signal);
  if (listed.code !== 0) {
    throw new UserError(
      'SPOTCTL_SYNC_FAILED',
      `could not read the run's workdir ${workdir}: ${lastLine(listed.stderr) || `exit ${listed.code}`}`,
      {
        remediation: 'check that the run still has its workdir (spotctl ps), then retry',
      },
    );
  }
  const matched: string[] = [];
  const missing: string[] = [];
  for (const item of listed.stdout.split('\0')) {
    if (item.startsWith('M')) matched.push(item.slice(1).replace(/^\.\//, ''));
    else if (item.startsWith('N')) missing.push(item.slice(1));
  }
  const dir = path.resolve(localDir);
  if (matched.length === 0) return { files: 0, bytes: 0, dir, matched, missing };
  await rsyncFrom(conn, workdir, matched, dir, opts);
  let files = 0;
  let bytes = 0;
  for (const rel of new Set(matched)) {
    const counted = await countLocal(dir, rel);
    files += counted.files;
    bytes += counted.bytes;
  }
  return { files, bytes, dir, matched, missing };
}

const ACTIVATE_VENV = 'if [ -d .venv/bin ]; then VIRTUAL_ENV="$PWD/.venv"; PATH="$VIRTUAL_ENV/bin:$PATH"; export VIRTUAL_ENV PATH; fi';

/**
 * The shell script that enters a run's workdir with its venv active, then runs `commandLine` (as
 * ssh does: one shell command line) or an interactive shell. The interactive shell gets an rc
 * file that activates the venv after the user's own rc (~/.bashrc often puts pyenv or conda first
 * on the PATH); the file removes itself once read.
 */
/* eslint-disable no-template-curly-in-string -- shell parameter expansions (${TMPDIR:-/tmp}), not JS templates */
export function workdirShellScript(workdir: string, commandLine: string | undefined): string {
  const cd = `cd ${shellQuote(workdir)} || exit 1`;
  if (commandLine !== undefined) return [cd, ACTIVATE_VENV, commandLine].join('\n');
  return [
    cd,
    ACTIVATE_VENV,
    'SPOTCTL_RC=$(mktemp "${TMPDIR:-/tmp}/spotctl-rc.XXXXXX") || exit 1',
    'export SPOTCTL_RC',
    'cat > "$SPOTCTL_RC" <<\'SPOTCTL_RC_END\'',
    'case "$0" in *bash) [ -f ~/.bashrc ] && . ~/.bashrc ;; esac',
    cd,
    ACTIVATE_VENV,
    'rm -f "$SPOTCTL_RC"; unset SPOTCTL_RC',
    'SPOTCTL_RC_END',
    'case "${SHELL:-/bin/sh}" in',
    '  *bash) exec "$SHELL" --rcfile "$SPOTCTL_RC" -i ;;',
    '  *) export ENV="$SPOTCTL_RC"; exec "${SHELL:-/bin/sh}" -i ;;',
    'esac',
  ].join('\n');
}
/* eslint-enable no-template-curly-in-string */

/**
 * Runs `argv` on this terminal (stdio inherited) and resolves with its exit code. Ctrl-C belongs
 * to the child while it runs (a remote shell reads it as a key): this process ignores SIGINT.
 */
export function runOnTerminal(argv: string[], options: { cwd?: string } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv as [string, ...string[]];
    const ignore = (): void => undefined;
    process.on('SIGINT', ignore);
    const child = spawn(cmd, args, { stdio: 'inherit', cwd: options.cwd });
    child.once('error', (e) => {
      process.off('SIGINT', ignore);
      reject(e);
    });
    child.once('close', (code, signal) => {
      process.off('SIGINT', ignore);
      resolve(code ?? 128 + (signal ? ((os.constants.signals as Record<string, number>)[signal] ?? 0) : 0));
    });
  });
}
