/**
 * The `spotctl:*` tags: the cloud's copy of what spotctl launched and why. Every resource spotctl
 * creates carries `spotctl:managed=true`; `gc`, `ls` and `teardown` only ever look at (and touch)
 * resources that carry it. Instances also carry enough to rebuild their run's record (run id,
 * command, price, market, owner, deadlines), so a lost local state file loses nothing and
 * parallel runs never share a record.
 */
import type { Tag, TagSpecification, ResourceType } from '@aws-sdk/client-ec2';

export const TAG = {
  managed: 'spotctl:managed',
  runId: 'spotctl:run-id',
  owner: 'spotctl:owner',
  created: 'spotctl:created',
  /** ISO 8601, or `never` for a run without --max-runtime once its agent is up (the agent's watchdog owns it). */
  expiresAt: 'spotctl:expires-at',
  command: 'spotctl:command',
  /** USD per hour we ranked the placement by (the spot price in effect at launch). */
  price: 'spotctl:price',
  market: 'spotctl:market',
  /** The login user on the instance. */
  sshUser: 'spotctl:ssh-user',
  /** `os.hostname()` of the machine that launched it, so `ls` can say whose it is. */
  launchedFrom: 'spotctl:launched-from',
  /** `true` on run instances that were started with --detach. */
  detached: 'spotctl:detached',
  /** The instance's SSH host public key (`ssh-ed25519 AAAA…`), so another machine can pin it too. */
  hostKey: 'spotctl:host-key',
  /** `--remote-dir` of the run (where its agent state lives on the instance). */
  remoteDir: 'spotctl:remote-dir',
  /** What a resource is for: `run`, `ssh-access`, `key-pair`, `ami-builder`. */
  role: 'spotctl:role',
  /** On a security group: the one CIDR it lets in on port 22. */
  sshCidr: 'spotctl:ssh-cidr',
  /** On a baked image: `true`. */
  ami: 'spotctl:ami',
  /** On a baked image: `true` when it was baked from the Deep Learning Base image (NVIDIA driver). */
  gpu: 'spotctl:gpu',
  /** On a baked image: the agent build it carries. */
  agentBuild: 'spotctl:agent-build',
} as const;

export const NEVER = 'never';

/** EC2 allows 256 characters in a tag value (and 128 in a key). */
export const MAX_TAG_VALUE = 256;

export function clipTagValue(value: string): string {
  // Count code points, not UTF-16 units, as AWS does.
  const chars = [...value];
  return chars.length <= MAX_TAG_VALUE ? value : `${chars.slice(0, MAX_TAG_VALUE - 1).join('')}…`;
}

export function toTags(values: Record<string, string | undefined>): Tag[] {
  return Object.entries(values)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([Key, Value]) => ({ Key, Value: clipTagValue(Value) }));
}

export function tagSpecifications(types: readonly ResourceType[], values: Record<string, string | undefined>): TagSpecification[] {
  const Tags = toTags(values);
  return types.map((ResourceType) => ({ ResourceType, Tags }));
}

export function tagMap(tags: readonly Tag[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of tags ?? []) if (t.Key !== undefined) out[t.Key] = t.Value ?? '';
  return out;
}

export function isManaged(tags: readonly Tag[] | undefined): boolean {
  return tagMap(tags)[TAG.managed] === 'true';
}

/** The tags every spotctl-created resource carries. */
export function baseTags(owner: string, now: Date, role: string): Record<string, string> {
  return { [TAG.managed]: 'true', [TAG.owner]: owner, [TAG.created]: now.toISOString(), [TAG.role]: role };
}

/** The filter that selects only spotctl's resources in Describe* calls. */
export const MANAGED_FILTER = { Name: `tag:${TAG.managed}`, Values: ['true'] };

/** `spotctl:expires-at` as a time, undefined for `never` or a value we can't read (never treated as expired). */
export function parseExpiresAt(value: string | undefined): Date | undefined {
  if (value === undefined || value === NEVER) return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : new Date(t);
}

/** A command as one line for the `spotctl:command` tag (display only). */
export function commandTag(argv: readonly string[]): string {
  return clipTagValue(argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' '));
}
