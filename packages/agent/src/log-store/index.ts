export { LogStore, LogCursor, type LogChunk, type LogStoreOptions, type NewLogLine, type ReadOptions } from './log-store.ts';
