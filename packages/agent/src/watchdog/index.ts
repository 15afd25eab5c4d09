export { IdleWatchdog, type IdleWatchdogOptions, type ShutdownReason } from './idle-watchdog.ts';
export { systemClock, type Clock } from './clock.ts';
export { runShutdownCommand, type RunCommandOptions } from './shutdown-action.ts';
