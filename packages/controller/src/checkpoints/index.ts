export {
  listCheckpointSets,
  pullCheckpointSet,
  type CheckpointReadOptions,
  type CheckpointSetSummary,
  type PullResult,
} from './checkpoints.ts';
export { openCheckpointReader, type CheckpointReader } from './reader.ts';
