/**
 * Where checkpoint objects and manifests go: S3 (or an S3-compatible endpoint) or a directory with
 * the same layout. Keys are relative to the store's root (the S3 prefix, or the directory), so the
 * sync code builds them with `checkpointKeys.*('', runId, ...)`.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { deadline, downloadVerified, type CheckpointTarget } from '@spotctl/shared';
import type { CredentialProvider } from './credentials.ts';
import { ContentMismatchError, sha256Base64, sha256Hex } from './hashing.ts';
import { describeError, retryWithBackoff, silentLogger, type CheckpointLogger } from './retry.ts';

export interface PutOptions {
  /** Hex SHA-256 of the body. The put fails (and leaves nothing behind) if the bytes differ. */
  sha256: string;
  size: number;
  signal?: AbortSignal | undefined;
  /** Told of each failed attempt the store will retry (an outage shows before the retries end). */
  onRetry?: ((err: unknown, attempt: number) => void) | undefined;
}

export interface StoreCallOptions {
  signal?: AbortSignal | undefined;
}

export interface ObjectInfo {
  size: number;
  /** S3 only; a multipart object's ETag ends in `-<parts>`. */
  etag?: string;
}

export interface ObjectStore {
  /** Where the store points, for logs and reports: `s3://bucket/prefix/` or a directory. */
  readonly location: string;
  /**
   * Stores `body` (a file path, streamed, or a buffer) under `key`. A reader sees the whole object or
   * none of it. Resolves with the bytes sent.
   */
  put(key: string, body: string | Buffer, options: PutOptions): Promise<{ uploadedBytes: number }>;
  /** The object's bytes as a stream; rejects with a `NoSuchKey` error when it does not exist. */
  get(key: string, options?: StoreCallOptions): Promise<Readable>;
  /** The object's size (and S3 ETag), or undefined when it does not exist. */
  head(key: string, options?: StoreCallOptions): Promise<ObjectInfo | undefined>;
  exists(key: string, options?: StoreCallOptions): Promise<boolean>;
  /** Every key under `prefix` (relative to the store's root), in no promised order. */
  list(prefix: string, options?: StoreCallOptions): Promise<string[]>;
  /** Releases sockets; the store must not be used afterwards. */
  close(): void;
}

const MIB = 1024 * 1024;

export interface S3ObjectStoreOptions {
  bucket: string;
  /** Key prefix every key is relative to. @default '' */
  prefix?: string;
  /** @default config, else `AWS_REGION`, else 'us-east-1' */
  region?: string | undefined;
  /**
   * S3-compatible endpoint (moto, MinIO). Path-style addressing is used whenever one is set.
   * @default `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS
   */
  endpoint?: string | undefined;
  /** Files larger than this go multipart, in parts of this size. @default 8 MiB */
  partSizeBytes?: number;
  /** Parts in flight per multipart upload; each holds a buffer of partSize. @default 4 */
  queueSize?: number;
  /**
   * Multipart uploads at the same time (others wait for a slot), so the part buffers stay at
   * most multipartUploads × queueSize × partSize (64 MiB by default) however many files are
   * uploaded at once. @default 2
   */
  multipartUploads?: number;
  /** The SDK's attempts per request (standard retry strategy). @default 8 */
  maxAttempts?: number;
  /** How long our retry around a whole upload keeps trying through an outage. @default 600000 */
  retryForMs?: number;
  /** TCP connect timeout. @default 5000 */
  connectionTimeoutMs?: number;
  /** Socket idle timeout per request. @default 60000 */
  requestTimeoutMs?: number;
  logger?: CheckpointLogger;
  /** Where `AWS_*` settings are read from. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Where credentials come from (forwarded ones: see credentials.ts). @default the host's AWS chain */
  credentials?: CredentialProvider;
}

/** Reads until `buffer` is full or the file ends; resolves with the bytes read. */
async function readFully(handle: FileHandle, buffer: Buffer, position: number): Promise<number> {
  let got = 0;
  // Bounded: every pass reads at least one byte, or the loop ends.
  while (got < buffer.length) {
    const { bytesRead } = await handle.read(buffer, got, buffer.length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

function joinKey(prefix: string, key: string): string {
  return prefix === '' ? key : `${prefix}/${key}`;
}

const CHECKSUM_HEADER = 'x-amz-checksum-sha256';
const CONTENT_SHA256_HEADER = 'x-amz-content-sha256';

interface BuildRequest {
  headers: Record<string, string>;
  body?: unknown;
}

function isBuildRequest(request: unknown): request is BuildRequest {
  return typeof request === 'object' && request !== null && typeof (request as { headers?: unknown }).headers === 'object';
}

function headerOf(headers: Record<string, string>, name: string): string | undefined {
  for (const key of Object.keys(headers)) if (key.toLowerCase() === name) return headers[key];
  return undefined;
}

/**
 * One SHA-256 per request body instead of two. Left alone, the SDK hashes every in-memory body
 * twice: once for its `x-amz-checksum-sha256` (flexible checksums, on multipart parts) and once
 * more for the SigV4 payload hash (`x-amz-content-sha256`). Both are the same digest, hex and
 * base64: this computes it once (or takes the checksum the caller already gave, for PutObject) and
 * sets both headers before either step runs, and each step then uses the header it finds. In a
 * CPU profile of 256 MiB uploads to moto, these two hashes were a quarter of the agent's CPU.
 */
function hashBodyOnce(request: unknown): void {
  if (!isBuildRequest(request) || !Buffer.isBuffer(request.body) || headerOf(request.headers, CONTENT_SHA256_HEADER) !== undefined) return;
  const given = headerOf(request.headers, CHECKSUM_HEADER);
  if (given !== undefined) {
    request.headers[CONTENT_SHA256_HEADER] = Buffer.from(given, 'base64').toString('hex');
  } else if (headerOf(request.headers, 'x-amz-sdk-checksum-algorithm')?.toUpperCase() === 'SHA256') {
    const hex = sha256Hex(request.body);
    request.headers[CHECKSUM_HEADER] = sha256Base64(hex);
    request.headers[CONTENT_SHA256_HEADER] = hex;
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404;
}

/** S3 through the SDK: single PutObject for small files, multipart (see `#putMultipart`) for large ones. */
export class S3ObjectStore implements ObjectStore {
  readonly location: string;
  readonly client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #multipartUploads: number;
  #multipartRunning = 0;
  #multipartWaiters: Array<() => void> = [];
  readonly #retryForMs: number;
  readonly #logger: CheckpointLogger;

  constructor(options: S3ObjectStoreOptions) {
    const env = options.env ?? process.env;
    this.#bucket = options.bucket;
    this.#prefix = (options.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.#partSize = Math.max(5 * MIB, options.partSizeBytes ?? 8 * MIB);
    this.#queueSize = options.queueSize ?? 4;
    this.#multipartUploads = Math.max(1, options.multipartUploads ?? 2);
    this.#retryForMs = options.retryForMs ?? 600_000;
    this.#logger = options.logger ?? silentLogger;
    this.location = `s3://${this.#bucket}/${this.#prefix === '' ? '' : `${this.#prefix}/`}`;
    const endpoint = options.endpoint || env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined;
    this.client = new S3Client({
      region: options.region || env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
      // Custom endpoints (moto, MinIO) rarely have wildcard DNS for virtual-hosted buckets.
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      // On EC2 the region is the instance's, not necessarily the bucket's: follow S3's redirect.
      followRegionRedirects: true,
      ...(options.credentials ? { credentials: options.credentials } : {}),
      maxAttempts: options.maxAttempts ?? 8,
      retryMode: 'standard',
      requestHandler: {
        connectionTimeout: options.connectionTimeoutMs ?? 5000,
        requestTimeout: options.requestTimeoutMs ?? 60_000,
      },
    });
    this.client.middlewareStack.add(
      (next) => async (args) => {
        hashBodyOnce(args.request);
        return await next(args);
      },
      { step: 'build', priority: 'high', name: 'spotctlSha256Once' },
    );
  }

  async put(key: string, body: string | Buffer, options: PutOptions): Promise<{ uploadedBytes: number }> {
    const fullKey = joinKey(this.#prefix, key);
    return await retryWithBackoff(
      async () => {
        if (typeof body !== 'string') {
          await this.#putBuffer(fullKey, body, options);
        } else if (options.size <= this.#partSize) {
          // Small enough to hold: the SDK can then retry the request with the same bytes, which it
          // cannot do with a stream it already consumed.
          const data = await readFile(body, options.signal ? { signal: options.signal } : {});
          await this.#putBuffer(fullKey, data, options, body);
        } else {
          await this.#withMultipartSlot(async () => await this.#putMultipart(fullKey, body, options));
        }
        return { uploadedBytes: options.size };
      },
      {
        what: `upload of ${fullKey}`,
        signal: options.signal,
        retryForMs: this.#retryForMs,
        logger: this.#logger,
        onRetry: options.onRetry,
      },
    );
  }

  async #putBuffer(fullKey: string, data: Buffer, options: PutOptions, source = fullKey): Promise<void> {
    const sha256 = sha256Hex(data);
    if (data.length !== options.size || sha256 !== options.sha256) {
      throw new ContentMismatchError(source, options, { sha256, size: data.length });
    }
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.#bucket,
        Key: fullKey,
        Body: data,
        ContentLength: data.length,
        ChecksumSHA256: sha256Base64(sha256),
      }),
      options.signal ? { abortSignal: options.signal } : {},
    );
  }

  async #withMultipartSlot<T>(run: () => Promise<T>): Promise<T> {
    // Bounded: each pass either takes a slot or waits for one to be released.
    while (this.#multipartRunning >= this.#multipartUploads) await new Promise<void>((resolve) => this.#multipartWaiters.push(resolve));
    this.#multipartRunning++;
    try {
      return await run();
    } finally {
      this.#multipartRunning--;
      this.#multipartWaiters.shift()?.();
    }
  }

  /**
   * Multipart by hand rather than through lib-storage's `Upload`, for CPU: lib-storage re-chunks a
   * stream by concatenating its reads into a new buffer per part (a copy of every byte, and
   * garbage that kept V8's collector busy: a quarter of the agent's CPU in a profile of 256 MiB
   * uploads), and needs a second pass over the stream to verify it. Here each of `queueSize` workers
   * reads its part straight into a buffer of its own, reused for its next part; the reads run in
   * file order, so the whole-file SHA-256 is updated as they go, and the last read checks it (and
   * that the file did not grow) before its part is sent. The object only exists once
   * CompleteMultipartUpload runs, after every part: a file that changed since it was hashed never
   * completes, the upload is aborted instead. Each part's own SHA-256 is its checksum (S3 combines
   * them into the object's composite checksum and rejects a part that does not match). Measured
   * on a 256 MiB file to moto: the agent's CPU for the upload went from 1.15 s to 0.55 s.
   */
  async #putMultipart(fullKey: string, file: string, options: PutOptions): Promise<void> {
    const partSize = this.#partSize;
    const partCount = Math.ceil(options.size / partSize);
    const failed = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, failed.signal]) : failed.signal;
    const handle = await open(file, 'r');
    let uploadId: string | undefined;
    try {
      const created = await this.client.send(
        new CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: fullKey, ChecksumAlgorithm: 'SHA256' }),
        { abortSignal: signal },
      );
      uploadId = created.UploadId;
      if (!uploadId) throw new Error(`CreateMultipartUpload ${fullKey}: the answer has no UploadId`);
      const id = uploadId;
      const whole = createHash('sha256');
      let nextIndex = 0;
      let readTurn: Promise<unknown> = Promise.resolve();
      /** The next part, read into `buffer`; undefined once every part is taken. One read at a time. */
      const readPart = (buffer: Buffer): Promise<{ partNumber: number; body: Buffer } | undefined> => {
        const read = readTurn.then(async () => {
          signal.throwIfAborted();
          if (nextIndex >= partCount) return undefined;
          const index = nextIndex++;
          const offset = index * partSize;
          const body = buffer.subarray(0, Math.min(partSize, options.size - offset));
          const got = await readFully(handle, body, offset);
          if (got !== body.length) throw new ContentMismatchError(file, options, { sha256: undefined, size: offset + got });
          whole.update(body);
          if (index === partCount - 1) {
            const { bytesRead } = await handle.read(Buffer.alloc(1), 0, 1, options.size);
            const sha256 = bytesRead === 0 ? whole.digest('hex') : undefined;
            if (sha256 !== options.sha256) throw new ContentMismatchError(file, options, { sha256, size: options.size + bytesRead });
          }
          return { partNumber: index + 1, body };
        });
        readTurn = read.catch(() => undefined);
        return read;
      };
      const parts: CompletedPart[] = [];
      let firstError: unknown;
      const worker = async (): Promise<void> => {
        const buffer = Buffer.allocUnsafe(Math.min(partSize, options.size));
        try {
          for (let part = await readPart(buffer); part; part = await readPart(buffer)) {
            const checksum = sha256Base64(sha256Hex(part.body));
            const out = await this.client.send(
              new UploadPartCommand({
                Bucket: this.#bucket,
                Key: fullKey,
                UploadId: id,
                PartNumber: part.partNumber,
                Body: part.body,
                ContentLength: part.body.length,
                ChecksumSHA256: checksum,
              }),
              { abortSignal: signal },
            );
            parts[part.partNumber - 1] = { PartNumber: part.partNumber, ETag: out.ETag, ChecksumSHA256: out.ChecksumSHA256 ?? checksum };
          }
        } catch (err) {
          // The first failure stops the other workers; theirs are only its echo.
          if (firstError === undefined) {
            firstError = err;
            failed.abort(err);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, Math.min(this.#queueSize, partCount)) }, worker));
      if (firstError !== undefined) throw firstError;
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.#bucket, Key: fullKey, UploadId: id, MultipartUpload: { Parts: parts } }),
        { abortSignal: signal },
      );
      uploadId = undefined;
    } finally {
      await handle.close();
      if (uploadId !== undefined) {
        // No part is in flight any more (every worker has returned); bounded, best effort: a
        // lifecycle rule cleans up what this cannot.
        using abortDeadline = deadline(10_000);
        await this.client
          .send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: fullKey, UploadId: uploadId }), {
            abortSignal: abortDeadline.signal,
          })
          .catch((err: unknown) =>
            this.#logger.warn({ key: fullKey, err: describeError(err) }, 'could not abort an unfinished multipart upload'),
          );
      }
    }
  }

  async get(key: string, options: StoreCallOptions = {}): Promise<Readable> {
    const out = await this.client.send(
      new GetObjectCommand({ Bucket: this.#bucket, Key: joinKey(this.#prefix, key) }),
      options.signal ? { abortSignal: options.signal } : {},
    );
    if (!(out.Body instanceof Readable)) throw new Error(`GetObject ${key}: the response has no body stream`);
    return out.Body;
  }

  async head(key: string, options: StoreCallOptions = {}): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(
        new HeadObjectCommand({ Bucket: this.#bucket, Key: joinKey(this.#prefix, key) }),
        options.signal ? { abortSignal: options.signal } : {},
      );
      return { size: out.ContentLength ?? 0, ...(out.ETag ? { etag: out.ETag } : {}) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async exists(key: string, options: StoreCallOptions = {}): Promise<boolean> {
    return (await this.head(key, options)) !== undefined;
  }

  async list(prefix: string, options: StoreCallOptions = {}): Promise<string[]> {
    const fullPrefix = joinKey(this.#prefix, prefix);
    const strip = this.#prefix === '' ? 0 : this.#prefix.length + 1;
    const keys: string[] = [];
    let token: string | undefined;
    // 100 000 pages of 1000 keys: far past any checkpoint history, and the loop is bounded.
    for (let page = 0; page < 100_000; page++) {
      const out: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: fullPrefix, ContinuationToken: token }),
        options.signal ? { abortSignal: options.signal } : {},
      );
      for (const o of out.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key.slice(strip));
      if (!out.IsTruncated || !out.NextContinuationToken) return keys;
      token = out.NextContinuationToken;
    }
    throw new Error(`listing ${fullPrefix} did not end`);
  }

  close(): void {
    this.client.destroy();
  }
}

export interface DirObjectStoreOptions {
  /** The directory standing in for the bucket and prefix. */
  root: string;
}

/** The same layout on a filesystem. Every file is written to a temp name, fsynced, then renamed. */
export class DirObjectStore implements ObjectStore {
  readonly location: string;
  readonly #root: string;

  constructor(options: DirObjectStoreOptions) {
    this.#root = path.resolve(options.root);
    this.location = this.#root;
  }

  #path(key: string): string {
    const parts = key.split('/').filter((p) => p !== '');
    if (parts.some((p) => p === '..' || p === '.')) throw new Error(`invalid key: ${key}`);
    return path.join(this.#root, ...parts);
  }

  async put(key: string, body: string | Buffer, options: PutOptions): Promise<{ uploadedBytes: number }> {
    await downloadVerified({
      source: () => Promise.resolve(typeof body === 'string' ? createReadStream(body) : Readable.from([body])),
      dest: this.#path(key),
      expected: options,
      what: typeof body === 'string' ? body : key,
      // Durable before it becomes visible: after a crash the name holds the whole file or nothing.
      durable: true,
      signal: options.signal,
    });
    return { uploadedBytes: options.size };
  }

  async get(key: string): Promise<Readable> {
    const file = this.#path(key);
    // Open first, so a missing key rejects here rather than later on the stream.
    const handle = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw Object.assign(new Error(`no such key: ${key}`), { name: 'NoSuchKey', cause: err });
      throw err;
    });
    return handle.createReadStream();
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await stat(this.#path(key));
      return st.isFile() ? { size: st.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.head(key)) !== undefined;
  }

  async list(prefix: string): Promise<string[]> {
    // A prefix ending in '/' names a directory; otherwise list its parent and filter by name.
    const dirKey = prefix.endsWith('/') ? prefix : prefix.slice(0, prefix.lastIndexOf('/') + 1);
    const keys: string[] = [];
    const walk = async (relDir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(this.#path(relDir), { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const entry of entries) {
        if (entry.name.startsWith('.')) continue;
        const key = `${relDir}${entry.name}`;
        if (entry.isDirectory()) await walk(`${key}/`);
        else if (entry.isFile() && key.startsWith(prefix)) keys.push(key);
      }
    };
    await walk(dirKey);
    return keys;
  }

  close(): void {}
}

export interface CreateObjectStoreOptions {
  logger?: CheckpointLogger;
  /** Passed to the S3 store (part size, retries, timeouts). */
  s3?: Omit<S3ObjectStoreOptions, 'bucket' | 'prefix' | 'region' | 'endpoint' | 'logger'>;
}

/** The store for a configured target: keys relative to the target's prefix (or directory). */
export function createObjectStore(target: CheckpointTarget, options: CreateObjectStoreOptions = {}): ObjectStore {
  switch (target.kind) {
    case 's3':
      return new S3ObjectStore({
        ...options.s3,
        bucket: target.bucket,
        prefix: target.prefix,
        region: target.region,
        endpoint: target.endpoint,
        ...(options.logger ? { logger: options.logger } : {}),
      });
    case 'dir':
      return new DirObjectStore({ root: target.path });
    default: {
      const exhaustive: never = target;
      throw new Error(`unknown checkpoint target ${JSON.stringify(exhaustive)}`);
    }
  }
}

/** Where a run's checkpoints live, as a report shows it: `s3://bucket/prefix/run-id/` or a path. */
export function describeTarget(target: CheckpointTarget, runId: string): string {
  if (target.kind === 'dir') return path.join(path.resolve(target.path), runId) + path.sep;
  const prefix = target.prefix.replace(/^\/+|\/+$/g, '');
  return `s3://${target.bucket}/${prefix === '' ? '' : `${prefix}/`}${runId}/`;
}

export { describeError };
