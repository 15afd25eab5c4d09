export { LogArchiver, type ArchiveResult, type LogArchiverOptions, type SegmentSink } from './log-archiver.ts';
