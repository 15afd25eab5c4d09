export { Agent, SHUTDOWN_FILE, isLoopback, type AgentExit, type AgentStartOptions } from './agent.ts';
export { main, AGENT_OUT_FILE, type CliIo } from './cli.ts';
export { ENV_OVERRIDES, loadAgentConfig, resolveAgentConfig, type LogLevel, type ResolvedAgentConfig } from './config.ts';
export { AGENT_VERSION, buildId, versionInfo, type VersionInfo } from './version.ts';
export { LogStore, LogCursor, type LogChunk, type NewLogLine } from './log-store/index.ts';
export { Supervisor, LineSplitter, buildJobLaunch, type JobProcessStatus, type StopOptions } from './supervisor/index.ts';
export { AgentServer, MAX_IN_FLIGHT_BYTES } from './server/index.ts';
export { IdleWatchdog, type ShutdownReason } from './watchdog/index.ts';
export { systemClock, type Clock } from './clock.ts';
