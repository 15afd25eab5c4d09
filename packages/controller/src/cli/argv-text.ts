/**
 * Command-line arguments are text. Node.js decodes argv as UTF-8 before any of our code runs and
 * turns invalid bytes into U+FFFD, so a job argument with non-UTF-8 bytes cannot reach the job as
 * given. Where the raw bytes are readable (/proc/self/cmdline on Linux), such an argument is
 * refused instead of passed on altered; a real U+FFFD typed as UTF-8 still goes through.
 */
import { readFileSync } from 'node:fs';
import { UserError } from '@spotctl/shared';

const fatal = new TextDecoder('utf-8', { fatal: true });
const lenient = new TextDecoder('utf-8');

/** The raw bytes of this process's arguments, or undefined where the OS does not show them. */
function rawArguments(): Buffer[] | undefined {
  try {
    const bytes = readFileSync('/proc/self/cmdline');
    const parts: Buffer[] = [];
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0) {
        parts.push(bytes.subarray(start, i));
        start = i + 1;
      }
    }
    return parts;
  } catch {
    return undefined;
  }
}

/**
 * The index in `argv` of the first argument whose raw bytes are not valid UTF-8, if any. `argv`
 * is the tail of process.argv; `raw` is checked to line up with it before anything is concluded.
 */
export function invalidUtf8Argument(argv: readonly string[], raw: Buffer[] | undefined = undefined): number | undefined {
  if (!argv.some((a) => a.includes('\uFFFD'))) return undefined;
  const bytes = raw ?? rawArguments();
  if (!bytes || bytes.length < argv.length) return undefined;
  const tail = bytes.slice(bytes.length - argv.length);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const b = tail[i];
    if (!arg.includes('\uFFFD') || !b || lenient.decode(b) !== arg) continue;
    try {
      fatal.decode(b);
    } catch {
      return i;
    }
  }
  return undefined;
}

/** Refuses an argv with an argument that was not valid UTF-8 (see the module comment). */
export function refuseInvalidUtf8(argv: readonly string[]): void {
  const i = invalidUtf8Argument(argv);
  if (i === undefined) return;
  throw new UserError('SPOTCTL_USAGE', `argument ${i + 1} ('${argv[i]}') is not valid UTF-8 text: it cannot reach the job unchanged`, {
    remediation: 'pass bytes that are not UTF-8 in a file (--sync it) or encoded (e.g. base64) and decode them in the job',
    exitCode: 2,
  });
}
