import type { Output } from '../output/output.ts';
import type { ProviderKind, RunStore } from '../runs/run-store.ts';
import { AwsProvider } from './aws.ts';
import type { AwsLaunchOptions } from './aws-options.ts';
import { LocalProvider } from './local.ts';
import type { Provider } from './provider.ts';
import { SshProvider } from './ssh.ts';
import type { TestOverrides } from './test-overrides.ts';

export interface ProviderDeps {
  store: RunStore;
  out: Output;
  testOverrides: TestOverrides;
}

/** The one place that chooses a provider; everything after it speaks the Provider interface. */
export function providerFor(kind: ProviderKind, deps: ProviderDeps, launch?: { aws?: AwsLaunchOptions }): Provider {
  switch (kind) {
    case 'local':
      return new LocalProvider();
    case 'ssh':
      return new SshProvider(deps.store);
    case 'aws':
      return new AwsProvider(deps, launch?.aws);
    default: {
      const never: never = kind;
      throw new Error(`unknown provider ${String(never)}`);
    }
  }
}
