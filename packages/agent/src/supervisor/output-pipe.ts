/**
 * The pipes that carry the job's stdout and stderr, read into one reused buffer each.
 *
 * With `stdio: 'pipe'` Node allocates a new buffer for every read (64 KiB under a flood), and
 * those buffers are garbage that only a GC gives back: in a 1 GB log flood they were most of the
 * agent's peak RSS above its idle size. Node reads into a caller's buffer only for sockets it
 * opens itself (`net.Socket({ fd, onread })`), so the agent makes the pipe: a FIFO (mkfifo, then
 * both ends opened and the name unlinked at once, leaving an anonymous pipe in all but name). The
 * job still sees a pipe on its stdout and stderr, as before.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** What one read may bring: the size Node would use for a pipe, and a pipe's default capacity. */
export const PIPE_READ_BYTES = 64 * 1024;

export interface OutputPipe {
  /** The write end, for the child's stdio; close it in the parent once the child has it. */
  writeFd: number;
  /** The read end, as a socket. Emits no 'data': chunks go to `onChunk`. */
  socket: net.Socket;
}

/**
 * Makes one pipe per handler (one mkfifo process for all of them: it is the costly part); each
 * pipe's chunks are handed to its handler as views into one reused buffer, valid only during the
 * call.
 */
export function openOutputPipes(handlers: readonly ((chunk: Buffer) => void)[]): OutputPipe[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-job-'));
  const fifos = handlers.map((_, i) => path.join(dir, `pipe${i}`));
  const fds: { readFd: number; writeFd: number }[] = [];
  try {
    execFileSync('mkfifo', ['-m', '600', ...fifos], { stdio: 'ignore' });
    for (const fifo of fifos) {
      // Read end first and non-blocking (opening a FIFO blocks until the other end is open); the
      // write end is a plain blocking one, as the job's end of an ordinary pipe would be.
      const readFd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        fds.push({ readFd, writeFd: fs.openSync(fifo, fs.constants.O_WRONLY) });
      } catch (err) {
        fs.closeSync(readFd);
        throw err;
      }
    }
  } catch (err) {
    for (const { readFd, writeFd } of fds) {
      fs.closeSync(readFd);
      fs.closeSync(writeFd);
    }
    throw err;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return fds.map(({ readFd, writeFd }, i) => {
    const onChunk = handlers[i] as (chunk: Buffer) => void;
    const buffer = Buffer.allocUnsafe(PIPE_READ_BYTES);
    // `onread` is honoured by the constructor (Node ≥ 12; it is how socket.connect() passes it
    // on), though @types/node only declares it for connect().
    const options: net.SocketConstructorOpts & { onread: net.OnReadOpts } = {
      fd: readFd,
      readable: true,
      writable: false,
      onread: {
        buffer,
        callback: (bytes: number, buf: Uint8Array) => {
          onChunk(Buffer.from(buf.buffer, buf.byteOffset, bytes));
          return true;
        },
      },
    };
    return { writeFd, socket: new net.Socket(options) };
  });
}
