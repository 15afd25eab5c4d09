/** The controller's programmatic API. */
export { main, buildProgram, VERSION } from './cli/main.ts';
export { AgentConnection, endpointUrl, type AgentEndpoint } from './transport/agent-client.ts';
export { followLogs, type FollowOptions, type FollowResult } from './session/follow.ts';
export { RunStore, newRunId, newToken, spotctlHome, type RunRecord } from './runs/run-store.ts';
export { parseDuration } from './cli/durations.ts';
export { jobArgv } from './commands/run.ts';
export { SshConnection, parseHostSpec, type SshTarget } from './transport/ssh.ts';
export { rsyncTo } from './transport/rsync.ts';
