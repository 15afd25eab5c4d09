/**
 * The metadata-service emulator as a test resource: in process on 127.0.0.1 (`startImds`), or as
 * its own process inside a network namespace on the real address 169.254.169.254:80
 * (`startImdsInNetns`), where the client's default endpoint reaches it. Nothing in the test
 * process ever contacts 169.254.169.254: the namespaced emulator is steered over its stdin/stdout.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import {
  TestImdsEmulator,
  type EmulatedInstanceProfile,
  type ImdsRequestCounts,
  type ScheduleInterruptionOptions,
  type ScheduledInterruption,
  type TestImdsEmulatorOptions,
} from './imds-emulator.ts';
import type { Netns } from './netns.ts';
import { readUntil, tapStream } from './read-until.ts';

const HELPERS = path.dirname(fileURLToPath(import.meta.url));

export const IMDS_ADDRESS = '169.254.169.254';

export interface TestImds extends AsyncDisposable {
  readonly emulator: TestImdsEmulator;
  /** Base URL; the same across stop()/restart(). */
  readonly url: string;
  readonly port: number;
  /** Closes the listener and every connection: clients see refused connections. */
  stop(): Promise<void>;
  /** Listens again on the same port, with the same tokens and schedules. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startImds(options: TestImdsEmulatorOptions & { host?: string; port?: number } = {}): Promise<TestImds> {
  const { host = '127.0.0.1', port = 0, ...emulatorOptions } = options;
  const emulator = new TestImdsEmulator(emulatorOptions);
  const url = await emulator.listen({ host, port });
  const boundPort = emulator.port;
  const close = (): Promise<void> => emulator.close();
  return {
    emulator,
    url,
    port: boundPort,
    stop: () => emulator.stop(),
    restart: async () => {
      await emulator.listen({ host, port: boundPort });
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

// --- bundles of the helper entries, for child processes (there is no TypeScript runner) -------

const BUNDLE_DIR = path.join(HELPERS, '..', '..', '.vitest-tmp', 'imds');
const bundles = new Map<string, Promise<string>>();

/**
 * Bundles `test/helpers/<entry>.ts` (with the agent source it imports) into one `.mjs` that plain
 * `node` runs, under the git-ignored `.vitest-tmp/`; built once per test process. Written under a
 * unique name and renamed into place, so test files bundling at the same time never see half a file.
 */
export function bundleHelper(entry: 'imds-emulator-child' | 'imds-probe'): Promise<string> {
  let bundle = bundles.get(entry);
  if (!bundle) {
    bundle = (async () => {
      await mkdir(BUNDLE_DIR, { recursive: true });
      const outfile = path.join(BUNDLE_DIR, `${entry}.mjs`);
      const result = await build({
        entryPoints: [path.join(HELPERS, `${entry}.ts`)],
        outfile,
        write: false,
        bundle: true,
        platform: 'node',
        target: 'node20',
        format: 'esm',
        conditions: ['spotctl-source'],
        logLevel: 'warning',
        banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
      });
      const output = result.outputFiles[0];
      if (!output) throw new Error(`esbuild produced nothing for ${entry}`);
      const tmp = `${outfile}.${process.pid}.${randomBytes(4).toString('hex')}`;
      await writeFile(tmp, output.contents);
      await rename(tmp, outfile);
      return outfile;
    })();
    bundles.set(entry, bundle);
  }
  return bundle;
}

// --- the emulator inside a network namespace --------------------------------------------------

export interface NetnsImdsStats {
  requests: ImdsRequestCounts;
  noticeServedAt: number | null;
  interruption: ScheduledInterruption | null;
  /** The child's Date.now() when it answered. */
  now: number;
}

export interface NetnsImds extends AsyncDisposable {
  /** `http://169.254.169.254`, reachable only from inside the namespace. */
  readonly url: string;
  readonly child: ChildProcess;
  scheduleInterruption(options?: ScheduleInterruptionOptions): Promise<ScheduledInterruption>;
  clearInterruption(): Promise<void>;
  recommendRebalance(options?: { inMs?: number }): Promise<string>;
  revokeTokens(): Promise<void>;
  /** What EC2 serves an instance launched with an instance profile (undefined: none). */
  setInstanceProfile(profile: EmulatedInstanceProfile | undefined): Promise<void>;
  stats(): Promise<NetnsImdsStats>;
  close(): Promise<void>;
}

const CONTROL_TIMEOUT_MS = 5000;

/**
 * Runs the emulator as a separate Node process inside `netns`, listening on 169.254.169.254:80
 * (the address is added to the namespace's loopback), steered over the child's stdin/stdout.
 */
export async function startImdsInNetns(netns: Netns, options: { lifetimeMs?: number } = {}): Promise<NetnsImds> {
  const script = await bundleHelper('imds-emulator-child');
  const added = await netns.exec(['ip', 'addr', 'add', `${IMDS_ADDRESS}/32`, 'dev', 'lo']);
  // "File exists": a second emulator in the same namespace.
  if (added.code !== 0 && !/exists/i.test(added.stderr)) throw new Error(`adding ${IMDS_ADDRESS} in ${netns.name} failed: ${added.stderr}`);

  const child = netns.spawn(
    [process.execPath, script, '--host', IMDS_ADDRESS, '--port', '80', '--lifetime-ms', String(options.lifetimeMs ?? 600_000)],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const stdout = child.stdout!;
  const stdin = child.stdin!;
  tapStream(stdout);
  tapStream(child.stderr!);
  // A write after the child died must not become an unhandled 'error'.
  stdin.on('error', () => undefined);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };

  try {
    const first = await readUntil(stdout, /\n/, 10_000);
    const hello = JSON.parse(first) as { type: string; url?: string; error?: string };
    if (hello.type !== 'listening') throw new Error(`emulator in ${netns.name} did not start: ${hello.error ?? first}`);
  } catch (e) {
    await kill();
    throw e;
  }

  // Answers arrive in request order (the child handles lines one by one), so calls are chained.
  let nextId = 1;
  let queue: Promise<unknown> = Promise.resolve();
  const call = <T>(op: string, args: unknown = {}): Promise<T> => {
    const run = async (): Promise<T> => {
      const id = nextId++;
      stdin.write(`${JSON.stringify({ id, op, args })}\n`);
      const line = await readUntil(stdout, /\n/, CONTROL_TIMEOUT_MS);
      const reply = JSON.parse(line) as { id: number; result?: T; error?: string };
      if (reply.id !== id) throw new Error(`emulator control: expected reply ${id}, got ${line.trim()}`);
      if (reply.error !== undefined) throw new Error(`emulator control ${op}: ${reply.error}`);
      return reply.result as T;
    };
    const result = queue.then(run, run);
    queue = result.catch(() => undefined);
    return result;
  };

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        await Promise.race([call('close').catch(() => undefined), exited]);
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      await netns.exec(['ip', 'addr', 'del', `${IMDS_ADDRESS}/32`, 'dev', 'lo']).catch(() => undefined);
    })());

  return {
    url: `http://${IMDS_ADDRESS}`,
    child,
    scheduleInterruption: (opts = {}) => call<ScheduledInterruption>('scheduleInterruption', opts),
    clearInterruption: () => call<void>('clearInterruption'),
    recommendRebalance: (opts = {}) => call<string>('recommendRebalance', opts),
    revokeTokens: () => call<void>('revokeTokens'),
    setInstanceProfile: (profile) => call<void>('setInstanceProfile', profile ? { profile } : {}),
    stats: () => call<NetnsImdsStats>('stats'),
    close,
    [Symbol.asyncDispose]: close,
  };
}

// --- a logger that remembers -------------------------------------------------------------------

export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string | undefined;
  obj: Record<string, unknown>;
}

/** A pino-shaped logger (what SpotPoller takes) that keeps every entry for assertions. */
export function memoryLogger(): {
  entries: LogEntry[];
  logger: { debug: LogFn; info: LogFn; warn: LogFn; error: LogFn };
  at(level: LogEntry['level']): LogEntry[];
} {
  const entries: LogEntry[] = [];
  const fn =
    (level: LogEntry['level']): LogFn =>
    (obj, msg) =>
      void entries.push({ level, msg, obj });
  return {
    entries,
    logger: { debug: fn('debug'), info: fn('info'), warn: fn('warn'), error: fn('error') },
    at: (level) => entries.filter((e) => e.level === level),
  };
}
type LogFn = (obj: Record<string, unknown>, msg?: string) => void;
