export {
  CheckpointSync,
  DEFAULT_IGNORE_PATTERNS,
  type CheckpointCommittedEvent,
  type CheckpointFailure,
  type CheckpointClock,
  type CheckpointSyncOptions,
  type FlushOptions,
} from './checkpoint-sync.ts';
export {
  DirObjectStore,
  S3ObjectStore,
  createObjectStore,
  describeTarget,
  type CreateObjectStoreOptions,
  type DirObjectStoreOptions,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type S3ObjectStoreOptions,
  type StoreCallOptions,
} from './store.ts';
export {
  CheckpointIntegrityError,
  latestSeq,
  readManifest,
  restoreLatest,
  restoreMilestone,
  type RestoreOptions,
  type RestoreProgress,
  type RestoreResult,
} from './restore.ts';
export { ContentMismatchError, hashFile } from './hashing.ts';
export { isRetryableError, retryWithBackoff, type CheckpointLogger, type RetryOptions } from './retry.ts';
export {
  ForwardedCredentials,
  hostCredentialChain,
  type AwsCredentials,
  type CredentialProvider,
  type ForwardedCredentialsOptions,
} from './credentials.ts';
