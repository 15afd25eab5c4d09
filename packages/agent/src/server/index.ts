export { AgentServer, type AgentServerOptions } from './server.ts';
export { MAX_IN_FLIGHT_BYTES } from './connection.ts';
export type { JobControl, LogLinesChunk, LogReader, LogSource } from './types.ts';
