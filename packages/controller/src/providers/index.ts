import type { RunRecord, RunStore } from '../runs/run-store.ts';
import { AwsSession } from './aws.ts';
import { LocalSession } from './local.ts';
import type { ProviderSession } from './provider.ts';
import { SshSession } from './ssh.ts';

/** A session to an existing run, for attach, logs, stop and ps. */
export function openSession(record: RunRecord, store: RunStore): ProviderSession {
  switch (record.provider) {
    case 'local':
      return new LocalSession(record);
    case 'ssh':
      return new SshSession(record, store.runDir(record.runId));
    case 'aws':
      // An SSH run whose host spotctl launched (and terminates when the agent is let go).
      return new AwsSession(new SshSession(record, store.runDir(record.runId)), store);
    default: {
      const never: never = record.provider;
      throw new Error(`unknown provider ${String(never)}`);
    }
  }
}
