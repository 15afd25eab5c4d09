import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { parseDuration } from '../cli/durations.ts';
import { table } from '../output/output.ts';
import { spotctlHome, type RunRecord } from '../runs/run-store.ts';
import { shellQuote } from '../transport/shell.ts';
import { SshConnection, type SshTarget } from '../transport/ssh.ts';

const DEFAULT_OLDER_THAN = '7d';
/** A run with no agent yet and no recorded end may still be in its setup (syncing, installing). */
const SETUP_MAY_RUN_MS = 3_600_000;
const HOST_TIMEOUT_MS = 120_000;

interface PruneOptions extends Record<string, unknown> {
  olderThan?: string;
  keep?: string;
  dryRun?: boolean;
  json?: boolean;
}

interface PruneAction {
  where: string;
  kind: 'run' | 'venv';
  id: string;
  result: 'removed' | 'would remove' | 'kept';
  why: string;
}

/**
 * One script for this machine and for SSH hosts: removes the given run folders unless their agent
 * is alive, then the cached venvs no live run links to and none used for `minutes` (when given).
 * Prints `removed|live|gone DIR` and `venv KEY` lines.
 */
export function pruneScript(base: string, runDirs: string[], options: { dryRun: boolean; venvMinutes: number | undefined }): string {
  const rm = options.dryRun ? ':' : 'rm -rf --';
  return [
    `base=${shellQuote(base)}`,
    // An agent is alive when the pid in its agent.json answers: its run folder is never removed.
    'alive() { f="$1/agent/agent.json"; [ -f "$f" ] || return 1; pid=$(sed -n \'s/.*"pid":[[:space:]]*\\([0-9][0-9]*\\).*/\\1/p\' "$f"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }',
    ...runDirs.map(
      (d) =>
        `d=${shellQuote(d)}; if [ ! -e "$d" ]; then echo "gone $d"; elif alive "$d"; then echo "live $d"; else ${rm} "$d"; echo "removed $d"; fi`,
    ),
    ...(options.venvMinutes === undefined
      ? []
      : [
          // Venvs a live run (from any machine) links to stay, whatever their age.
          'inuse=""',
          'for r in "$base"/runs/*/; do r=$(dirname "$r/."); if alive "$r" && [ -L "$r/work/.venv" ]; then inuse="$inuse $(readlink "$r/work/.venv")"; fi; done',
          'if [ -d "$base/venvs" ]; then for v in "$base"/venvs/*; do [ -d "$v" ] || continue',
          '  case " $inuse " in *" $v "*) continue;; esac',
          '  mark="$v/.spotctl-used"; [ -e "$mark" ] || mark="$v"',
          `  if [ -n "$(find "$mark" -maxdepth 0 -mmin +${options.venvMinutes} 2>/dev/null)" ]; then ${rm} "$v"; echo "venv $(basename "$v")"; fi`,
          'done; fi',
        ]),
  ].join('\n');
}

function runLocalScript(script: string, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(stderr.trim() || `exit ${code}`))));
  });
}

function hostKey(record: RunRecord): string {
  const t = record.target as SshTarget;
  return `${t.user ?? ''}@${t.host}:${t.port ?? 22} ${path.posix.dirname(path.posix.dirname(record.layout.runDir))}`;
}

/** A run folder spotctl made (`…/runs/<run-id>`): never anything else is removed. */
function ownRunDir(record: RunRecord): boolean {
  const dir = record.layout.runDir;
  return path.isAbsolute(dir) && path.basename(dir) === record.runId && path.basename(path.dirname(dir)) === 'runs';
}

export default defineCommand<PruneOptions>({
  name: 'prune',
  description: "Remove old run folders here and on reachable SSH hosts (never a live run's), and cached venvs no run used lately",
  examples: [
    'spotctl prune --dry-run',
    'spotctl prune --older-than 7d',
    'spotctl prune --keep 20',
    'spotctl prune --older-than 2d --keep 5 --json',
  ],
  configure: (cmd) =>
    cmd
      .option(
        '--older-than <duration>',
        `remove runs started longer ago than this, and cached venvs no run used for this long (default: ${DEFAULT_OLDER_THAN} when --keep is not given)`,
      )
      .option('--keep <n>', 'always keep the newest N runs (alone: remove all but the newest N)')
      .option('--dry-run', 'say what would go, change nothing')
      .option('--json', 'one JSON object on stdout'),
  run: async (_args, options, { out, store }) => {
    let keep = 0;
    if (options.keep !== undefined) {
      if (!/^\d+$/.test(options.keep.trim()))
        throw new UserError('SPOTCTL_USAGE', `--keep wants a whole number, got '${options.keep}'`, {
          remediation: 'for example: spotctl prune --keep 10',
          exitCode: 2,
        });
      keep = Number(options.keep.trim());
    }
    const olderThan = options.olderThan ?? (options.keep === undefined ? DEFAULT_OLDER_THAN : undefined);
    const olderThanMs = olderThan !== undefined ? parseDuration(olderThan, '--older-than', { timer: false }) : undefined;
    const dryRun = options.dryRun === true;
    const venvMinutes = olderThanMs !== undefined ? Math.max(1, Math.floor(olderThanMs / 60_000)) : undefined;
    const now = Date.now();
    const actions: PruneAction[] = [];
    const kept = (r: RunRecord, why: string) =>
      actions.push({ where: r.provider === 'ssh' ? (r.target?.host ?? '?') : 'here', kind: 'run', id: r.runId, result: 'kept', why });

    // Newest first: the first `keep` stay whatever their age.
    const candidates: RunRecord[] = [];
    for (const [i, r] of store.list().entries()) {
      if (i < keep || (olderThanMs !== undefined && r.createdAt > now - olderThanMs)) continue;
      if (!r.agent && !r.setup && r.createdAt > now - SETUP_MAY_RUN_MS) kept(r, 'its setup may still be running');
      else if (r.provider === 'aws' && r.agent && !r.aws?.terminatedAt)
        kept(r, 'its instance may still be running (spotctl teardown ends it)');
      else if (!ownRunDir(r) && r.agent) kept(r, `unexpected run folder ${r.layout.runDir}`);
      else candidates.push(r);
    }

    const signal = AbortSignal.timeout(HOST_TIMEOUT_MS);
    const removeHere = (r: RunRecord, why: string) => {
      if (!dryRun) rmSync(store.runDir(r.runId), { recursive: true, force: true });
      actions.push({ where: 'here', kind: 'run', id: r.runId, result: dryRun ? 'would remove' : 'removed', why });
    };
    const apply = (where: string, records: RunRecord[], stdout: string) => {
      const byDir = new Map(records.map((r) => [r.layout.runDir, r]));
      for (const line of stdout.split('\n')) {
        const [verb, ...rest] = line.split(' ');
        const arg = rest.join(' ');
        if (verb === 'venv')
          actions.push({ where, kind: 'venv', id: arg, result: dryRun ? 'would remove' : 'removed', why: 'no run used it lately' });
        const r = byDir.get(arg);
        if (!r) continue;
        if (verb === 'live') kept(r, 'its agent is running');
        else if (verb === 'removed' || verb === 'gone') {
          if (where === 'here')
            actions.push({ where, kind: 'run', id: r.runId, result: dryRun ? 'would remove' : 'removed', why: 'ended' });
          else {
            actions.push({
              where,
              kind: 'run',
              id: r.runId,
              result: dryRun ? 'would remove' : 'removed',
              why: verb === 'gone' ? 'already gone there' : 'ended',
            });
            // Its folder here goes only once the host's copy is gone, so a later prune can still find it.
            removeHere(r, 'ended');
          }
        }
      }
    };

    // This machine: local runs' folders (their agents run here), and the cached venvs here.
    const home = spotctlHome();
    const local = candidates.filter(
      (r) => r.provider === 'local' && r.agent && path.resolve(r.layout.runDir) === path.resolve(store.runDir(r.runId)),
    );
    apply(
      'here',
      local,
      await runLocalScript(
        pruneScript(
          home,
          local.map((r) => r.layout.runDir),
          { dryRun, venvMinutes },
        ),
        signal,
      ),
    );
    // Runs that never got an agent, and aws runs whose instance was terminated: only a folder here.
    for (const r of candidates) if (!r.agent || r.provider === 'aws') removeHere(r, r.agent ? 'instance terminated' : 'its setup ended');

    // SSH hosts, one connection each; an unreachable host keeps its runs (and their records here).
    const groups = new Map<string, RunRecord[]>();
    for (const r of candidates)
      if (r.provider === 'ssh' && r.agent && r.target) groups.set(hostKey(r), [...(groups.get(hostKey(r)) ?? []), r]);
    let unreachable = 0;
    for (const records of groups.values()) {
      const first = records[0]!;
      const target = first.target as SshTarget;
      const controlDir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-prune-'));
      try {
        await using conn = await SshConnection.open(target, { controlDir, signal });
        const base = path.posix.dirname(path.posix.dirname(first.layout.runDir));
        const r = await conn.exec(
          pruneScript(
            base,
            records.map((x) => x.layout.runDir),
            { dryRun, venvMinutes },
          ),
          { signal, timeoutMs: HOST_TIMEOUT_MS },
        );
        if (r.code !== 0) throw new Error(r.stderr.trim() || `exit ${r.code}`);
        apply(target.host, records, r.stdout);
      } catch (error) {
        unreachable++;
        out.warn(`${target.host}: skipped ${records.length} run(s): ${(error as Error).message.split('\n')[0]}`);
        for (const r of records) kept(r, 'host not reachable');
      } finally {
        rmSync(controlDir, { recursive: true, force: true });
      }
    }

    const removed = actions.filter((a) => a.result !== 'kept');
    out.data(
      { dryRun, olderThanMs: olderThanMs ?? null, keep, actions },
      actions.length === 0
        ? 'nothing to prune'
        : `${table(
            ['WHERE', 'KIND', 'ID', 'RESULT', 'WHY'],
            actions.map((a) => [a.where, a.kind, a.id, a.result, a.why]),
          )}\n\n${dryRun ? 'would remove' : 'removed'} ${removed.length}`,
    );
    return unreachable > 0 ? 1 : 0;
  },
});
