/**
 * Read-only access to a checkpoint target, S3 or a directory. The agent has its own (read-write)
 * store; the controller must not import the agent, so this is the small read half again. The AWS
 * SDK is imported on first use, so `spotctl --help` never loads it.
 */
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import createDebug from 'debug';
import type { CheckpointTarget } from '@spotctl/shared';

const debug = createDebug('spotctl:checkpoints');

export interface CheckpointReader {
  /** `s3://bucket/prefix/` or the directory. */
  readonly location: string;
  /** Keys under `prefix`, relative to the target's root (its S3 prefix, or its directory). */
  list(prefix: string, signal?: AbortSignal): Promise<string[]>;
  get(key: string, signal?: AbortSignal): Promise<Readable>;
  close(): void;
}

function trimSlashes(s: string): string {
  return s.replace(/^\/+|\/+$/g, '');
}

async function openS3Reader(target: Extract<CheckpointTarget, { kind: 's3' }>): Promise<CheckpointReader> {
  const { S3Client, ListObjectsV2Command, GetObjectCommand } = await import('@aws-sdk/client-s3');
  const prefix = trimSlashes(target.prefix);
  const full = (key: string): string => (prefix === '' ? key : `${prefix}/${key}`);
  const endpoint = target.endpoint || process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL || undefined;
  const client = new S3Client({
    region: target.region || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1',
    // Custom endpoints (moto, MinIO) rarely have wildcard DNS for virtual-hosted buckets.
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    // The bucket may live in another region than AWS_REGION: follow S3's redirect.
    followRegionRedirects: true,
    maxAttempts: 8,
    retryMode: 'standard',
  });
  debug('s3 reader for s3://%s/%s (endpoint %s)', target.bucket, prefix, endpoint ?? 'aws');
  return {
    location: `s3://${target.bucket}/${prefix === '' ? '' : `${prefix}/`}`,
    async list(keyPrefix, signal) {
      const keys: string[] = [];
      const strip = prefix === '' ? 0 : prefix.length + 1;
      let token: string | undefined;
      // Bounded: 100 000 pages of 1000 keys.
      for (let page = 0; page < 100_000; page++) {
        const out = await client.send(
          new ListObjectsV2Command({ Bucket: target.bucket, Prefix: full(keyPrefix), ContinuationToken: token }),
          signal ? { abortSignal: signal } : {},
        );
        for (const o of out.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key.slice(strip));
        if (!out.IsTruncated || !out.NextContinuationToken) return keys;
        token = out.NextContinuationToken;
      }
      throw new Error(`listing ${full(keyPrefix)} did not end`);
    },
    async get(key, signal) {
      const out = await client.send(new GetObjectCommand({ Bucket: target.bucket, Key: full(key) }), signal ? { abortSignal: signal } : {});
      if (!(out.Body instanceof Readable)) throw new Error(`GetObject ${key}: no body stream`);
      return out.Body;
    },
    close() {
      client.destroy();
    },
  };
}

function openDirReader(root: string): CheckpointReader {
  const abs = path.resolve(root);
  const fileOf = (key: string): string => {
    const parts = key.split('/').filter((p) => p !== '');
    if (parts.some((p) => p === '.' || p === '..')) throw new Error(`invalid key: ${key}`);
    return path.join(abs, ...parts);
  };
  return {
    location: abs,
    async list(prefix) {
      const dirKey = prefix.endsWith('/') ? prefix : prefix.slice(0, prefix.lastIndexOf('/') + 1);
      const keys: string[] = [];
      const walk = async (relDir: string, depth: number): Promise<void> => {
        if (depth > 64) return;
        const entries = await readdir(fileOf(relDir), { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return [];
          throw err;
        });
        for (const entry of entries) {
          // Dot names are the writer's temp files.
          if (entry.name.startsWith('.')) continue;
          const key = `${relDir}${entry.name}`;
          if (entry.isDirectory()) await walk(`${key}/`, depth + 1);
          else if (entry.isFile() && key.startsWith(prefix)) keys.push(key);
        }
      };
      await walk(dirKey, 0);
      return keys;
    },
    async get(key) {
      // Open first, so a missing key rejects here rather than on the stream.
      const handle = await open(fileOf(key), 'r');
      return handle.createReadStream();
    },
    close() {},
  };
}

export async function openCheckpointReader(target: CheckpointTarget): Promise<CheckpointReader> {
  switch (target.kind) {
    case 's3':
      return await openS3Reader(target);
    case 'dir':
      return openDirReader(target.path);
    default: {
      const exhaustive: never = target;
      throw new Error(`unknown checkpoint target ${JSON.stringify(exhaustive)}`);
    }
  }
}
