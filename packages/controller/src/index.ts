/** The controller's programmatic API. */
export { main, buildProgram, VERSION } from './cli/main.ts';
export { AgentConnection, endpointUrl, type AgentEndpoint } from './transport/agent-client.ts';
export { CredentialForwarder } from './session/credential-forwarder.ts';
export { followLogs, type FollowOptions, type FollowResult } from './session/follow.ts';
export { RunStore, newRunId, newToken, spotctlHome, type RunRecord } from './runs/run-store.ts';
export { parseDuration } from './cli/durations.ts';
export { jobArgv } from './commands/run.ts';
export { SshConnection, parseHostSpec, type SshTarget } from './transport/ssh.ts';
export { rsyncTo } from './transport/rsync.ts';
export { listCheckpointSets, pullCheckpointSet } from './checkpoints/index.ts';
// The AWS building blocks `run --provider aws` is made of; tests drive them against moto.
export { Ec2Clients, loadEc2Sdk, type Ec2Sdk } from './aws/clients.ts';
// What sizing and pricing take (EC2's own type), for fixtures.
export type { InstanceTypeInfo } from '@aws-sdk/client-ec2';
export { createRunRole, deleteRunRole, listRunRoles, loadIamSdk, runRolePolicy } from './aws/iam.ts';
export { cloudConfig, generateHostKey, hostKeyFromCloudConfig } from './aws/ami-user-data.ts';
export { CANONICAL_OWNER_ID, ensureLocalKey, ensureRegionInfra, securityGroupName } from './aws/infra.ts';
export { launchInstance, terminateRun, waitForRunning, type RunTags } from './aws/launch.ts';
export type { PlacementCandidate } from './aws/placement.ts';
export { TAG, tagMap } from './aws/tags.ts';
