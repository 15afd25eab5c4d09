import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Netns extends AsyncDisposable {
  /** `spotctl-<random>`, usable with `ip netns exec`. */
  readonly name: string;
  /** Our end of the veth pair, in the root namespace. */
  readonly hostAddress: string;
  /** The namespace's end: the only address a test may contact in it. */
  readonly nsAddress: string;
  readonly hostVeth: string;
  readonly nsVeth: string;
  /** Takes one end of the veth down: packets are silently dropped, as on a dead link (no RST). */
  linkDown(side?: 'ns' | 'host'): Promise<void>;
  linkUp(side?: 'ns' | 'host'): Promise<void>;
  /** Runs a short command inside the namespace and collects its output (never throws on exit code). */
  exec(argv: string[], options?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Starts a long-running process inside the namespace; the caller owns (and must kill) it. */
  spawn(argv: string[], options?: SpawnOptions): ChildProcess;
  close(): Promise<void>;
}

async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('ip', args, { timeout: 10_000 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${err.stderr?.trim() || err.message}`, { cause: e });
  }
}

/** A /30 in 10.213.0.0/16 that no local interface uses yet; random so parallel tests do not clash. */
function pickSubnet(): { hostAddress: string; nsAddress: string } {
  const used = new Set(
    Object.values(networkInterfaces())
      .flat()
      .map((a) => a?.address)
      .filter((a): a is string => typeof a === 'string'),
  );
  for (let attempt = 0; attempt < 50; attempt++) {
    const x = randomInt(0, 256);
    const y = randomInt(0, 64) * 4;
    const hostAddress = `10.213.${x}.${y + 1}`;
    const nsAddress = `10.213.${x}.${y + 2}`;
    if (!used.has(hostAddress) && !used.has(nsAddress)) return { hostAddress, nsAddress };
  }
  throw new Error('no free /30 found in 10.213.0.0/16');
}

/**
 * A fresh network namespace joined to the root namespace by a veth pair with a private /30, so a
 * test can run a server that is reachable only through that link and cut the link at will.
 * Needs root (CAP_NET_ADMIN); CI runs as root.
 */
export async function createNetns(): Promise<Netns> {
  const id = randomBytes(3).toString('hex');
  const name = `spotctl-${id}`;
  // Interface names are limited to 15 characters.
  const hostVeth = `sv${id}h`;
  const nsVeth = `sv${id}n`;
  const { hostAddress, nsAddress } = pickSubnet();

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      // Deleting one end removes the pair; the namespace itself lingers only while a process is in it.
      await ip(['link', 'del', hostVeth]).catch(() => undefined);
      await ip(['netns', 'del', name]).catch(() => undefined);
    })());

  try {
    await ip(['netns', 'add', name]);
    await ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nsVeth]);
    await ip(['link', 'set', nsVeth, 'netns', name]);
    await ip(['addr', 'add', `${hostAddress}/30`, 'dev', hostVeth]);
    await ip(['link', 'set', hostVeth, 'up']);
    await ip(['-n', name, 'addr', 'add', `${nsAddress}/30`, 'dev', nsVeth]);
    await ip(['-n', name, 'link', 'set', nsVeth, 'up']);
    await ip(['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (e) {
    await close();
    throw e;
  }

  const setLink = async (side: 'ns' | 'host', state: 'up' | 'down'): Promise<void> => {
    if (side === 'ns') await ip(['-n', name, 'link', 'set', nsVeth, state]);
    else await ip(['link', 'set', hostVeth, state]);
  };

  return {
    name,
    hostAddress,
    nsAddress,
    hostVeth,
    nsVeth,
    linkDown: (side = 'ns') => setLink(side, 'down'),
    linkUp: (side = 'ns') => setLink(side, 'up'),
    async exec(argv, options = {}) {
      try {
        const { stdout, stderr } = await execFileAsync('ip', ['netns', 'exec', name, ...argv], {
          timeout: options.timeoutMs ?? 10_000,
        });
        return { code: 0, stdout, stderr };
      } catch (e) {
        const err = e as { code?: unknown; stdout?: string; stderr?: string };
        if (typeof err.code !== 'number') throw e;
        return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
      }
    },
    spawn(argv, options = {}) {
      return spawn('ip', ['netns', 'exec', name, ...argv], options);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
