/**
 * One websocket client: request dispatch, its (at most one) log subscription, flow control.
 */
import type { WebSocket } from '@fastify/websocket';
import type { Logger } from 'pino';
import {
  SpotctlError,
  explainRequestError,
  parseRequest,
  type CredentialsParams,
  type ErrorCode,
  type JobStatus,
  type LogSegmentPieces,
  type Request,
  type ResultOf,
} from '@spotctl/shared';
import { FramePool, endFrame, errorFrame, logsFrame, resultFrame, statusFrame } from './frames.ts';
import { isJobEnded, type AppendedLines, type JobControl, type LogReader, type LogSource } from './types.ts';

/**
 * Log bytes handed to the socket but not yet written out, per client. Above this the subscription
 * stops reading the file until the socket drains: a slow client never makes the agent buffer.
 * @default 1 MiB
 */
export const MAX_IN_FLIGHT_BYTES = 1024 * 1024;

export interface ConnectionContext {
  logs: LogSource;
  job: JobControl;
  logger: Logger;
  health(): ResultOf<'health'>;
  /** The client asked the agent to exit; called once its `{ok:true}` has been written. */
  requestShutdown(): void;
  /** Forwarded S3 credentials arrived; absent when the agent does not take them. */
  onCredentials?(credentials: CredentialsParams): void;
}

type RawData = Buffer | ArrayBuffer | Buffer[];

export class ClientConnection {
  readonly id: number;
  readonly #ws: WebSocket;
  readonly #ctx: ConnectionContext;
  readonly #log: Logger;
  #subscription: Subscription | undefined;
  #inFlightBytes = 0;
  readonly #frames = new FramePool();
  /** Pong seen since the last ping. */
  #alive = true;
  #closed = false;

  constructor(id: number, ws: WebSocket, ctx: ConnectionContext) {
    this.id = id;
    this.#ws = ws;
    this.#ctx = ctx;
    this.#log = ctx.logger;
    ws.on('message', (data: RawData, isBinary: boolean) => this.#onMessage(data, isBinary));
    ws.on('pong', () => (this.#alive = true));
  }

  /** True while this client follows the log and has not had its `end` yet. */
  get following(): boolean {
    return this.#subscription?.active ?? false;
  }

  get inFlightBytes(): number {
    return this.#inFlightBytes;
  }

  /** Pushes a status event and lets the subscription notice the job's end. */
  pushStatus(status: JobStatus): void {
    this.#send(statusFrame(status));
    this.#subscription?.kick();
  }

  /** New lines are on disk; `appended` are they, while still in memory. */
  notifyLogs(appended?: AppendedLines): void {
    if (appended) this.#subscription?.offer(appended);
    else this.#subscription?.kick();
  }

  /**
   * One ping round: false when the previous ping got no pong (the caller terminates the client).
   * A paused or vanished client stops answering, and its socket should not be held forever.
   */
  ping(): boolean {
    if (!this.#alive) return false;
    this.#alive = false;
    try {
      this.#ws.ping();
    } catch {
      return false;
    }
    return true;
  }

  send(data: string | Buffer): void {
    this.#send(data);
  }

  /** The socket closed: stop reading for it. */
  detach(): void {
    this.#closed = true;
    this.#subscription?.cancel();
    this.#subscription = undefined;
  }

  /**
   * @internal Sends the lines as a binary logs frame (built at once: the segments are views into
   * the reader's buffer) and accounts for it until the socket has written it.
   */
  sendLogs(segments: readonly LogSegmentPieces[], onWritten: () => void): boolean {
    if (!this.#isOpen()) return false;
    const frame = logsFrame(segments, this.#frames);
    this.#inFlightBytes += frame.length;
    this.#ws.send(frame, { binary: true }, (err) => {
      this.#inFlightBytes -= frame.length;
      // Only a frame the socket is done with may be written over.
      if (!err) this.#frames.release(frame);
      onWritten();
    });
    return true;
  }

  #isOpen(): boolean {
    // 1 = OPEN
    return !this.#closed && this.#ws.readyState === 1;
  }

  #send(data: string | Buffer, onWritten?: (err?: Error) => void): void {
    if (!this.#isOpen()) return;
    this.#ws.send(data, { binary: false }, onWritten);
  }

  #sendError(id: number | null, code: ErrorCode, message: string): void {
    this.#send(errorFrame(id, code, message));
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    if (isBinary) {
      this.#sendError(null, 'SPOTCTL_BAD_REQUEST', 'binary frames are not part of the protocol; send JSON text frames');
      return;
    }
    const text = Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data as ArrayBuffer).toString('utf8');
    const parsed = parseRequest(text);
    if (!parsed.ok) {
      let message = parsed.error;
      // Only valid JSON gets the detailed explanation; parse errors say so already.
      if (parsed.error !== 'not valid JSON') {
        try {
          message = explainRequestError(JSON.parse(text));
        } catch {
          // keep the generic message
        }
      }
      this.#log.debug({ client: this.id, error: message }, 'bad request');
      this.#sendError(parsed.id ?? null, 'SPOTCTL_BAD_REQUEST', message);
      return;
    }
    const request = parsed.value;
    try {
      this.#dispatch(request);
    } catch (err) {
      const code: ErrorCode = err instanceof SpotctlError ? err.code : 'SPOTCTL_INTERNAL';
      if (code === 'SPOTCTL_INTERNAL') this.#log.error({ err, client: this.id, method: request.method }, 'request failed');
      this.#sendError(request.id, code, (err as Error).message);
    }
  }

  #dispatch(request: Request): void {
    const { id } = request;
    switch (request.method) {
      case 'subscribe': {
        const fromSeq = Math.max(1, request.params.fromSeq);
        const follow = request.params.follow ?? true;
        this.#subscription?.cancel();
        const lastSeq = this.#ctx.logs.lastSeq;
        const reader = this.#ctx.logs.cursor(fromSeq);
        // The response goes out before any logs event of this subscription.
        this.#send(resultFrame(id, { fromSeq, lastSeq } satisfies ResultOf<'subscribe'>));
        this.#subscription = new Subscription({
          connection: this,
          reader,
          job: this.#ctx.job,
          untilSeq: follow ? undefined : lastSeq,
          logger: this.#log,
        });
        this.#log.debug({ client: this.id, fromSeq, follow, lastSeq }, 'subscribed');
        this.#subscription.kick();
        return;
      }
      case 'unsubscribe':
        this.#subscription?.cancel();
        this.#subscription = undefined;
        this.#send(resultFrame(id, { ok: true } satisfies ResultOf<'unsubscribe'>));
        return;
      case 'status':
        this.#send(resultFrame(id, this.#ctx.job.status()));
        return;
      case 'stop': {
        const status = this.#ctx.job.stop({
          ...(request.params.force === undefined ? {} : { force: request.params.force }),
          ...(request.params.graceMs === undefined ? {} : { graceMs: request.params.graceMs }),
        });
        this.#send(resultFrame(id, status));
        return;
      }
      case 'health':
        this.#send(resultFrame(id, this.#ctx.health()));
        return;
      case 'shutdown': {
        const status = this.#ctx.job.status();
        if (!isJobEnded(status)) {
          throw new SpotctlError(
            'SPOTCTL_JOB_STATE',
            `the job is still ${status.state}; stop it first (method "stop"), then ask for shutdown`,
          );
        }
        this.#log.info({ client: this.id }, 'shutdown requested by client');
        // Exit only once the answer is on the wire, so the client knows it was heard.
        this.#send(resultFrame(id, { ok: true } satisfies ResultOf<'shutdown'>), () => this.#ctx.requestShutdown());
        return;
      }
      case 'credentials': {
        if (!this.#ctx.onCredentials) {
          throw new SpotctlError(
            'SPOTCTL_BAD_REQUEST',
            'this agent takes no forwarded credentials (its checkpoint config does not say credentials: "forwarded")',
          );
        }
        this.#ctx.onCredentials(request.params);
        // Never the params themselves: they hold the secret key.
        this.#log.debug({ client: this.id, expiresAt: request.params.expiresAt }, 'credentials replaced');
        this.#send(resultFrame(id, { ok: true } satisfies ResultOf<'credentials'>));
        return;
      }
      default: {
        const never: never = request;
        throw new SpotctlError('SPOTCTL_BAD_REQUEST', `unknown method ${JSON.stringify((never as { method: string }).method)}`);
      }
    }
  }
}

interface SubscriptionOptions {
  connection: ClientConnection;
  reader: LogReader;
  job: JobControl;
  /** follow=false: stop after this seq. */
  untilSeq: number | undefined;
  logger: Logger;
}

/**
 * Streams the log file to one client from a cursor. `kick()` is called whenever something may have
 * changed (new lines, a drained socket, a status change); one pump runs at a time.
 */
class Subscription {
  readonly #o: SubscriptionOptions;
  #active = true;
  #pumping = false;
  #again = false;

  constructor(options: SubscriptionOptions) {
    this.#o = options;
  }

  get active(): boolean {
    return this.#active;
  }

  cancel(): void {
    this.#active = false;
  }

  /**
   * Lines just appended: a follower that has sent everything before them gets them from memory,
   * without reading them back from the file (the common case of a live tail). Anyone else reads
   * on from the file as usual.
   */
  offer(appended: AppendedLines): void {
    const { connection, reader, untilSeq } = this.#o;
    if (
      this.#active &&
      !this.#pumping &&
      untilSeq === undefined &&
      connection.inFlightBytes < MAX_IN_FLIGHT_BYTES &&
      reader.skip(appended)
    ) {
      if (!connection.sendLogs([appended], () => this.kick())) this.#active = false;
      return;
    }
    this.kick();
  }

  kick(): void {
    if (!this.#active) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    void this.#pump().catch((err: unknown) => {
      this.#active = false;
      this.#o.logger.error({ err }, 'log subscription failed');
    });
  }

  async #pump(): Promise<void> {
    const { connection, reader, job, untilSeq } = this.#o;
    this.#pumping = true;
    try {
      do {
        this.#again = false;
        while (this.#active && connection.inFlightBytes < MAX_IN_FLIGHT_BYTES) {
          // Settled, then status, both before the read: once they say "ended and wrapped up", the
          // lastSeq is final and on disk, and the status carries the interruption report.
          const settled = job.settled?.() ?? true;
          const status = job.status();
          const chunk = await reader.read(untilSeq === undefined ? {} : { untilSeq });
          if (!this.#active) return;
          if (chunk) {
            if (!connection.sendLogs(chunk.segments, () => this.kick())) this.#active = false;
            continue;
          }
          const endSeq = untilSeq ?? (isJobEnded(status) && settled ? status.lastSeq : undefined);
          if (endSeq !== undefined && reader.nextSeq > endSeq) {
            this.#active = false;
            connection.send(endFrame(untilSeq === undefined ? status : job.status()));
          }
          break;
        }
      } while (this.#again && this.#active);
    } finally {
      this.#pumping = false;
    }
  }
}
