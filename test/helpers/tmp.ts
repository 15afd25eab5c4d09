import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface TmpDir extends AsyncDisposable {
  /** Absolute path of the fresh directory. */
  readonly path: string;
}

/**
 * A fresh directory under the OS temp dir, removed with everything in it on dispose.
 * Paths stay short on purpose: unix sockets (ssh ControlPath, tunnels) created inside must fit in
 * 108 bytes.
 */
export async function tmpDir(prefix = 'spotctl-test-'): Promise<TmpDir> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return {
    path: dir,
    async [Symbol.asyncDispose]() {
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}
