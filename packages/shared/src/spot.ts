/**
 * Spot interruptions and checkpoints: what the agent tells the controller, and the checkpoint
 * layout in S3 (or a directory), shared so the controller can list and pull what the agent wrote.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Parsed } from './protocol.ts';
import { lazyCompile } from './lazy-check.ts';

const EpochMs = Type.Integer({ minimum: 0 });

/** Body of `GET /latest/meta-data/spot/instance-action` (200 once an interruption is scheduled). */
export const InstanceAction = Type.Object({
  action: Type.Union([Type.Literal('terminate'), Type.Literal('stop'), Type.Literal('hibernate')]),
  time: Type.String(),
});
export type InstanceAction = Static<typeof InstanceAction>;

/** Body of `GET /latest/meta-data/events/recommendations/rebalance`. */
export const RebalanceRecommendation = Type.Object({ noticeTime: Type.String() });
export type RebalanceRecommendation = Static<typeof RebalanceRecommendation>;

export const InterruptionNotice = Type.Object(
  {
    action: Type.String(),
    /** The notice's `time`, as served. */
    time: Type.String(),
    /** When the agent saw the notice. */
    noticedAt: EpochMs,
    /** `time` parsed: when AWS takes the instance. */
    deadlineAt: EpochMs,
    /** Grace granted between SIGTERM and SIGKILL, budgeted against the deadline. */
    graceMs: Type.Integer({ minimum: 0 }),
    /** Bytes of the checkpoint dir not yet uploaded when the notice came. */
    pendingBytes: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);
export type InterruptionNotice = Static<typeof InterruptionNotice>;

export const FlushResult = Type.Object(
  {
    /** Seq of the manifest committed by the final flush (null when nothing could be committed). */
    committedSeq: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
    files: Type.Integer({ minimum: 0 }),
    bytes: Type.Integer({ minimum: 0 }),
    /** Bytes actually sent by this flush (unchanged files are not sent again). */
    uploadedBytes: Type.Integer({ minimum: 0 }),
    durationMs: Type.Integer({ minimum: 0 }),
    error: Type.Union([Type.String(), Type.Null()]),
    /**
     * True when the flush wrote no new set because nothing changed since `committedSeq` (which is
     * then an earlier set, not this flush's).
     */
    unchanged: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type FlushResult = Static<typeof FlushResult>;

/** Whether checkpoints are getting through: in the job's status (status.json, `ps`) while a run has checkpointing. */
export const CheckpointHealth = Type.Object(
  {
    /** Some upload or commit is failing right now (it is retried). */
    failing: Type.Boolean(),
    /** Failed attempts since checkpoints last got through completely. */
    failures: Type.Integer({ minimum: 0 }),
    /** When the current run of failures began. */
    failingSince: Type.Union([EpochMs, Type.Null()]),
    lastError: Type.Union([Type.String(), Type.Null()]),
    /** The newest set this run committed. */
    lastCommittedSeq: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
    /** The flush after the job ended, once it is done. */
    finalFlush: Type.Optional(FlushResult),
  },
  { additionalProperties: false },
);
export type CheckpointHealth = Static<typeof CheckpointHealth>;

export const InterruptionReport = Type.Object(
  {
    notice: InterruptionNotice,
    sigtermAt: EpochMs,
    jobEndedAt: Type.Union([EpochMs, Type.Null()]),
    /** True when the grace ran out and the job got SIGKILL. */
    killed: Type.Boolean(),
    flush: Type.Union([FlushResult, Type.Null()]),
    /** Where the checkpoints went: `s3://bucket/prefix/run-id/` or a directory. */
    target: Type.Union([Type.String(), Type.Null()]),
    simulated: Type.Boolean(),
  },
  { additionalProperties: false },
);
export type InterruptionReport = Static<typeof InterruptionReport>;

export const InterruptionEvent = Type.Object(
  { type: Type.Literal('event'), event: Type.Literal('interruption'), notice: InterruptionNotice },
  { additionalProperties: false },
);
export const RebalanceEvent = Type.Object(
  { type: Type.Literal('event'), event: Type.Literal('rebalance'), noticeTime: Type.String(), action: Type.String() },
  { additionalProperties: false },
);
export const CheckpointEvent = Type.Object(
  {
    type: Type.Literal('event'),
    event: Type.Literal('checkpoint'),
    seq: Type.Integer({ minimum: 1 }),
    files: Type.Integer({ minimum: 0 }),
    bytes: Type.Integer({ minimum: 0 }),
    uploadedBytes: Type.Integer({ minimum: 0 }),
    reason: Type.String(),
    durationMs: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);
/** An upload or a commit failed (each failure; the controller decides how often to show them). */
export const CheckpointFailedEvent = Type.Object(
  {
    type: Type.Literal('event'),
    event: Type.Literal('checkpoint-failed'),
    /** `upload` of one file, or `commit` of a set's manifest. */
    what: Type.Union([Type.Literal('upload'), Type.Literal('commit')]),
    /** The file, for an upload. */
    file: Type.Union([Type.String(), Type.Null()]),
    /** The error (not named `error`: that field marks a failed response). */
    message: Type.String(),
    /** Failed attempts since checkpoints last got through (this one included). */
    failures: Type.Integer({ minimum: 1 }),
    failingSince: EpochMs,
    /** Where the sets go (`s3://bucket/prefix/run/`), for the remediation. */
    target: Type.String(),
  },
  { additionalProperties: false },
);
export type CheckpointFailedEvent = Static<typeof CheckpointFailedEvent>;
export const InterruptionReportEvent = Type.Object(
  { type: Type.Literal('event'), event: Type.Literal('interruption-report'), report: InterruptionReport },
  { additionalProperties: false },
);

// ---------------------------------------------------------------------------------------------
// Checkpoint layout (same under an S3 prefix and under a directory):
//   <prefix>/<run-id>/objects/<sha256>            file contents, content-addressed
//   <prefix>/<run-id>/manifests/<seq:010>.json     a committed set; written last
// A set exists only once its manifest exists; the highest seq is "latest".

export const ManifestFile = Type.Object(
  {
    /** Path relative to the checkpoint dir, with forward slashes. */
    path: Type.String({ minLength: 1 }),
    size: Type.Integer({ minimum: 0 }),
    sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    mtimeMs: Type.Number(),
  },
  { additionalProperties: false },
);
export type ManifestFile = Static<typeof ManifestFile>;

export const CheckpointManifest = Type.Object(
  {
    version: Type.Literal(1),
    runId: Type.String(),
    seq: Type.Integer({ minimum: 1 }),
    createdAt: EpochMs,
    reason: Type.String(),
    files: Type.Array(ManifestFile),
  },
  { additionalProperties: false },
);
export type CheckpointManifest = Static<typeof CheckpointManifest>;

const manifestCheck = lazyCompile(CheckpointManifest);

export function parseManifest(raw: string): Parsed<CheckpointManifest> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { ok: false, error: 'manifest is not valid JSON' };
  }
  if (manifestCheck().Check(value)) return { ok: true, value };
  const e = manifestCheck().Errors(value).First();
  return { ok: false, error: e ? `${e.path || '/'}: ${e.message}` : 'invalid manifest' };
}

function join(...parts: string[]): string {
  return parts
    .filter((p) => p !== '')
    .map((p) => p.replace(/^\/+|\/+$/g, ''))
    .filter((p) => p !== '')
    .join('/');
}

export const checkpointKeys = {
  runPrefix: (prefix: string, runId: string) => `${join(prefix, runId)}/`,
  object: (prefix: string, runId: string, sha256: string) => join(prefix, runId, 'objects', sha256),
  /** A `--pull` output of an interrupted run, by its workdir-relative path. */
  output: (prefix: string, runId: string, relPath: string) => join(prefix, runId, 'outputs', relPath),
  manifestsPrefix: (prefix: string, runId: string) => `${join(prefix, runId, 'manifests')}/`,
  manifest: (prefix: string, runId: string, seq: number) => join(prefix, runId, 'manifests', `${String(seq).padStart(10, '0')}.json`),
  /** The seq of a manifest key, or undefined for anything else under the prefix. */
  seqOf: (key: string): number | undefined => {
    const m = /\/manifests\/(\d{10})\.json$/.exec(key);
    return m ? Number(m[1]) : undefined;
  },
};

/**
 * The run's log archived next to its checkpoint sets: append-only segments of the agent's log file
 * (log-frames.ts records), each named by the byte range of the file it holds. Concatenated in
 * offset order they are the log file's prefix, so a reader needs no record boundaries in the keys.
 */
export const logArchiveKeys = {
  prefix: (prefix: string, runId: string) => `${join(prefix, runId, 'log')}/`,
  segment: (prefix: string, runId: string, startOffset: number, endOffset: number) =>
    join(prefix, runId, 'log', `${String(startOffset).padStart(16, '0')}-${String(endOffset).padStart(16, '0')}.records`),
  /** The byte range of a segment key, or undefined for anything else under the prefix. */
  rangeOf: (key: string): { startOffset: number; endOffset: number } | undefined => {
    const m = /\/log\/(\d{16})-(\d{16})\.records$/.exec(key);
    if (!m) return undefined;
    const startOffset = Number(m[1]);
    const endOffset = Number(m[2]);
    return endOffset > startOffset ? { startOffset, endOffset } : undefined;
  },
};

/** `s3://bucket/some/prefix` → { bucket, prefix }. */
export function parseS3Url(url: string): { bucket: string; prefix: string } | undefined {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) return undefined;
  return { bucket: m[1] as string, prefix: (m[2] ?? '').replace(/\/+$/, '') };
}
