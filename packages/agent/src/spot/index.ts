export {
  ImdsClient,
  ImdsError,
  resolveImdsEndpoint,
  DEFAULT_IMDS_ENDPOINT,
  IMDS_ENDPOINT_ENV,
  IMDS_DISABLED_ENV,
  IMDS_TOKEN_HEADER,
  IMDS_TOKEN_TTL_HEADER,
  IMDS_TOKEN_PATH,
  IMDS_MAX_TOKEN_TTL_S,
  TOKEN_REFRESH_MARGIN_MS,
  type ImdsClientOptions,
  type ImdsErrorKind,
  type ImdsGetter,
  type ImdsRequestOptions,
  type ImdsResponse,
} from './imds-client.ts';
export {
  SpotPoller,
  INSTANCE_ACTION_PATH,
  REBALANCE_PATH,
  parseInstanceAction,
  parseRebalanceRecommendation,
  type SpotLogger,
  type SpotPollerOptions,
  type SpotPollerStats,
} from './spot-poller.ts';
export {
  interruptionGraceMs,
  estimateUploadMs,
  deadlineFromNotice,
  parseIsoTime,
  DEFAULT_NOTICE_LEAD_MS,
  DEFAULT_SAFETY_MARGIN_MS,
  DEFAULT_UPLOAD_BYTES_PER_SECOND,
  MIN_UPLOAD_MS,
  type InterruptionGraceInput,
} from './grace.ts';
export {
  ImdsEmulator,
  imdsErrorPage,
  imdsTime,
  type ImdsEmulatorOptions,
  type ListenOptions,
  type ScheduleInterruptionOptions,
  type ScheduledInterruption,
  type SpotAction,
} from './imds-emulator.ts';
export { systemPollClock, type PollClock } from './clock.ts';
export { InterruptionHandler, type InterruptionCheckpoints, type InterruptionHandlerOptions } from './interruption.ts';
