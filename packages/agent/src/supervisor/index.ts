export { Supervisor, type JobProcessStatus, type OutputStream, type StopOptions, type SupervisorOptions } from './supervisor.ts';
export { LineSplitter, type LineBlock } from './line-splitter.ts';
export { buildJobLaunch, type JobEnvOptions, type JobLaunch } from './job-env.ts';
