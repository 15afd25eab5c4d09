export { Agent, SHUTDOWN_FILE, isLoopback, type AgentExit, type AgentStartOptions } from './agent.ts';
export { main, AGENT_OUT_FILE, type CliIo } from './cli.ts';
export { ENV_OVERRIDES, loadAgentConfig, resolveAgentConfig, type LogLevel, type ResolvedAgentConfig } from './config.ts';
export { AGENT_VERSION, buildId, versionInfo, type VersionInfo } from './version.ts';
export { LogStore, LogCursor, type LogChunk, type NewLogLine } from './log-store/index.ts';
export { Supervisor, LineSplitter, buildJobLaunch, type JobProcessStatus, type StopOptions } from './supervisor/index.ts';
export { AgentServer, MAX_IN_FLIGHT_BYTES } from './server/index.ts';
export { IdleWatchdog, type ShutdownReason } from './watchdog/index.ts';
export { systemClock, type Clock } from './clock.ts';
// The interruption poller and the rehearsal's metadata emulator (tests extend it in test/helpers).
export {
  DEFAULT_IMDS_ENDPOINT,
  IMDS_TOKEN_PATH,
  INSTANCE_ACTION_PATH,
  REBALANCE_PATH,
  ImdsClient,
  ImdsEmulator,
  ImdsError,
  SpotPoller,
  imdsErrorPage,
  imdsTime,
  resolveImdsEndpoint,
  type ImdsEmulatorOptions,
  type ImdsGetter,
  type ListenOptions,
  type PollClock,
  type ScheduleInterruptionOptions,
  type ScheduledInterruption,
  type SpotAction,
  type SpotLogger,
  type SpotPollerOptions,
} from './spot/index.ts';
export {
  CheckpointSync,
  DirObjectStore,
  S3ObjectStore,
  createObjectStore,
  hashFile,
  restoreLatest,
  type CheckpointCommittedEvent,
  type ObjectStore,
} from './checkpoint/index.ts';
