export { IdleWatchdog, type IdleWatchdogOptions, type ShutdownReason, type WatchdogClock } from './idle-watchdog.ts';
export { runShutdownCommand, type RunCommandOptions } from './shutdown-action.ts';
