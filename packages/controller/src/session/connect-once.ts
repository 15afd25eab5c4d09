import type { ProviderSession } from '../providers/provider.ts';
import type { AgentConnection } from '../transport/agent-client.ts';

/** One attempt to reach the agent, bounded; undefined when it is not there. */
export async function tryConnect(session: ProviderSession, timeoutMs = 15_000): Promise<AgentConnection | undefined> {
  try {
    return await session.connect(AbortSignal.timeout(timeoutMs));
  } catch {
    return undefined;
  }
}
