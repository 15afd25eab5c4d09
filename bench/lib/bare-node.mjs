// @ts-check
/** The floor for any Node.js daemon: a bare `node -e "setInterval(()=>{},1000)"`. */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { memoryOf } from './proc.mjs';

export function spawnBareNode() {
  const child = spawn(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' });
  if (child.pid === undefined) throw new Error(`could not start ${process.execPath}`);
  return {
    pid: child.pid,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

/** RSS in bytes of a bare idle node after `settleMs`. */
export async function bareNodeRss(settleMs = 2_000) {
  const bare = spawnBareNode();
  try {
    await sleep(settleMs);
    return memoryOf(bare.pid)?.rss ?? NaN;
  } finally {
    await bare.stop();
  }
}
