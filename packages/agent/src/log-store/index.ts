export {
  LogStore,
  LogCursor,
  type AppendedRecord,
  type LogChunk,
  type LogStoreOptions,
  type NewLogLine,
  type ReadOptions,
} from './log-store.ts';
