/** Small files in the state directory that other processes read: written atomically. */
import fs from 'node:fs';

/**
 * Writes JSON via a temp file and rename, so a reader (the controller over ssh, `start` polling
 * for agent.json) sees the old content or the new, never half a file.
 */
export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(value)}\n`);
  fs.renameSync(tmp, file);
}

/** True when a process with this pid exists and is not a zombie. */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // A zombie still answers kill(0); its parent may never reap it (PID 1 in some containers).
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    // No /proc (macOS): kill(0) is all we know.
    return true;
  }
}

/**
 * True when `pid` is alive and looks like an agent (`... run --config ...`): after a reboot an old
 * agent.json can name a pid that now belongs to something else.
 */
export function isAgentProcess(pid: number): boolean {
  if (!isProcessAlive(pid)) return false;
  let cmdline: string;
  try {
    cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    // No /proc: trust the pid.
    return true;
  }
  const args = cmdline.split('\0');
  return args.includes('run') && args.includes('--config');
}
