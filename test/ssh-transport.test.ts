/**
 * The SSH transport against a real sshd, the real ssh client and real rsync. The namespace tests
 * put sshd behind a veth link they can cut, and a server that only the tunnel can reach.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SpotctlError, UserError } from '@spotctl/shared';
import { SshConnection, parseHostSpec, rsyncTo } from '@spotctl/controller';
import { createNetns, type Netns } from './helpers/netns.ts';
import { skipUnlessCi } from './helpers/prerequisites.ts';
import { readUntil, waitFor } from './helpers/read-until.ts';
import { startSshd, type Sshd } from './helpers/sshd.ts';
import { tmpDir } from './helpers/tmp.ts';

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const skipNetns = skipUnlessCi('ssh-transport netns', isRoot ? undefined : 'not root (network namespaces need it)');

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function rejection(p: Promise<unknown>): Promise<UserError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  throw new Error('expected a rejection');
}

/** Sends a line through a stream socket and resolves with what came back. */
async function echoThrough(socketPath: string, text: string): Promise<string> {
  const socket = net.connect(socketPath);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.write(`${text}\n`);
    return (await readUntil(socket, new RegExp(text), 5_000)).trim();
  } finally {
    socket.destroy();
  }
}

/** Alive and not a zombie: a daemonized ssh master is re-parented to pid 1, which may reap it late. */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function acceptedLogins(sshd: Sshd): number {
  return sshd.log().match(/Accepted publickey/g)?.length ?? 0;
}

describe('harness: readUntil and waitFor', () => {
  test('readUntil loses nothing between calls and its errors show what was read', async () => {
    const s = new PassThrough();
    s.write('line 1\nline 2\nline 3\n');
    expect(await readUntil(s, /line 1\n/, 100)).toBe('line 1\n');
    expect(await readUntil(s, /line 2\n/g, 100)).toBe('line 2\n');
    // A character split across chunks is decoded whole.
    setTimeout(() => s.write(Buffer.from([0xe2, 0x82])), 10);
    setTimeout(() => s.write(Buffer.from([0xac, 0x0a])), 20);
    expect(await readUntil(s, /€/, 1000)).toBe('line 3\n€');
    await expect(readUntil(s, /never/, 50)).rejects.toThrow(/timed out after 50 ms.*read:\n\n$/s);
    s.end('tail');
    await expect(readUntil(s, /never/, 1000)).rejects.toThrow(/ended before .*read:\n\ntail$/s);
  });

  test('waitFor returns the first truthy value and names what it waited for on timeout', async () => {
    let n = 0;
    expect(await waitFor(() => (++n >= 3 ? n : 0), { intervalMs: 1 })).toBe(3);
    await expect(waitFor(() => false, { timeoutMs: 30, intervalMs: 5, what: 'the moon' })).rejects.toThrow(/the moon/);
  });
});

describe('SshConnection against a loopback sshd', () => {
  let sshd: Sshd;
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.close();
  });

  test('exec returns exit codes, stdout and stderr, and feeds stdin', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    await using conn = await SshConnection.open(sshd, { controlDir: ctl.path });
    const r = await conn.exec('echo out; echo err >&2; exit 3');
    expect(r).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    const cat = await conn.exec('wc -c; cat', { input: Buffer.from('hello\n') });
    expect(cat.stdout).toBe('6\n');
    expect((await conn.exec('cat', { input: 'through stdin' })).stdout).toBe('through stdin');
    // A remote exit of 255 with a live master is the command's own exit code, not an ssh failure.
    expect((await conn.exec('exit 255')).code).toBe(255);
    // Several pipe buffers' worth, so a premature end of the output would show.
    const big = await conn.exec('head -c 3000000 /dev/zero | base64 -w 0; echo; echo done >&2');
    expect(big.stdout.length).toBe(4_000_001);
    expect(big.stderr).toBe('done\n');
    const chunks: string[] = [];
    await conn.exec('printf a; sleep 0.1; printf b', { onStdout: (c) => chunks.push(c.toString()) });
    expect(chunks.join('')).toBe('ab');

    // Each of these would run for 10 s and resolve if the abort did nothing: rejecting is the proof.
    const reason = new Error('user pressed Ctrl-C');
    await expect(conn.exec('sleep 10', { signal: AbortSignal.timeout(200) })).rejects.toMatchObject({ name: 'TimeoutError' });
    const controller = new AbortController();
    const aborted = conn.exec('sleep 10', { signal: controller.signal });
    setTimeout(() => controller.abort(reason), 100);
    await expect(aborted).rejects.toBe(reason);
    const timedOut = await rejection(conn.exec('sleep 10', { timeoutMs: 200 }));
    expect(timedOut.code).toBe('SPOTCTL_SSH_FAILED');
  });

  test('one master connection carries every command', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const before = acceptedLogins(sshd);
    await using conn = await SshConnection.open(sshd, { controlDir: ctl.path });
    const pid = await conn.masterPid();
    expect(pid).toBeTypeOf('number');
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => conn.exec(`echo ${i}`)));
    expect(results.map((r) => r.stdout.trim())).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
    expect(await conn.masterPid()).toBe(pid);
    await waitFor(() => acceptedLogins(sshd) > before, { what: 'sshd to log the login' });
    expect(acceptedLogins(sshd) - before).toBe(1);
  });

  test('a long control directory is moved to a short private path', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const deep = path.join(ctl.path, 'a-rather-long-directory-name-'.repeat(4));
    await using conn = await SshConnection.open(sshd, { controlDir: deep });
    expect(conn.controlPath.startsWith(`/tmp/spotctl-${process.getuid?.() ?? 0}/`)).toBe(true);
    expect(Buffer.byteLength(conn.controlPath)).toBeLessThan(90);
    expect((await conn.exec('echo ok')).stdout).toBe('ok\n');
  });

  test('close stops the master, is idempotent, and later calls fail clearly', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const conn = await SshConnection.open(sshd, { controlDir: ctl.path });
    const pid = await conn.masterPid();
    await Promise.all([conn.close(), conn.close()]);
    await conn.close();
    expect(isRunning(pid!)).toBe(false);
    await expect(conn.exec('true')).rejects.toBeInstanceOf(SpotctlError);
  });

  test('a master left behind (its controller killed) exits by itself once idle; one in use stays', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    // Never closed: what a SIGKILLed controller leaves. A later connection adopts it.
    const left = await SshConnection.open(sshd, { controlDir: ctl.path, masterIdleExitS: 2 });
    const pid = (await left.masterPid())!;
    const adopter = await SshConnection.open(sshd, { controlDir: ctl.path, masterIdleExitS: 2 });
    expect(await adopter.masterPid()).toBe(pid);
    // A command that runs longer than the idle time keeps it alive...
    expect((await adopter.exec('sleep 3; echo still')).stdout).toBe('still\n');
    expect(isRunning(pid)).toBe(true);
    // ...and with nothing open it goes, without anyone calling close().
    const deadline = Date.now() + 15_000;
    while (isRunning(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(isRunning(pid)).toBe(false);
    await adopter.close();
    await left.close();
  });

  test('a closed port fails fast with SPOTCTL_SSH_UNREACHABLE on one line', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const port = await freePort();
    const err = await rejection(SshConnection.open({ ...sshd, port }, { controlDir: ctl.path }));
    expect(err.code).toBe('SPOTCTL_SSH_UNREACHABLE');
    expect(err.message).toMatch(/connection refused/);
    expect(err.message).not.toContain('\n');
    expect(err.remediation).toContain(`-p ${port}`);
  });

  test('a key the host does not accept is reported as permission denied', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const otherKey = path.join(ctl.path, 'other_key');
    await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]);
    const err = await rejection(SshConnection.open({ ...sshd, identityFile: otherKey }, { controlDir: ctl.path }));
    expect(err.code).toBe('SPOTCTL_SSH_UNREACHABLE');
    expect(err.message).toMatch(/permission denied/);
    expect(err.remediation).toContain('authorized_keys');
  });

  test('a missing identity file is a usage error before ssh runs', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const missing = path.join(ctl.path, 'nope');
    const err = await rejection(SshConnection.open({ ...sshd, identityFile: missing }, { controlDir: ctl.path }));
    expect(err.code).toBe('SPOTCTL_USAGE');
    expect(err.exitCode).toBe(2);
    expect(err.message).toBe(`identity file not found: ${missing}`);
  });

  test('a host key that does not match known_hosts is refused, never accepted', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const otherKey = path.join(ctl.path, 'other_host_key');
    await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', otherKey]);
    const [type, key] = (await readFile(`${otherKey}.pub`, 'utf8')).split(/\s+/);
    const knownHostsFile = path.join(ctl.path, 'known_hosts');
    const line = `[${sshd.host}]:${sshd.port} ${type} ${key}\n`;
    await writeFile(knownHostsFile, line);
    const err = await rejection(SshConnection.open({ ...sshd, knownHostsFile }, { controlDir: ctl.path }));
    expect(err.code).toBe('SPOTCTL_SSH_UNREACHABLE');
    expect(err.message).toMatch(/host key does not match/);
    expect(err.remediation).toContain('ssh-keygen -R');
    expect(await readFile(knownHostsFile, 'utf8')).toBe(line);
  });

  test('without a known_hosts file an unknown host is trusted on first use and remembered', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    // A config of our own, so the test writes to a temp known_hosts, never the user's.
    const knownHosts = path.join(ctl.path, 'known_hosts');
    const configFile = path.join(ctl.path, 'ssh_config');
    await writeFile(configFile, `UserKnownHostsFile ${knownHosts}\n`);
    const { knownHostsFile: _pinned, ...target } = sshd;
    {
      await using conn = await SshConnection.open({ ...target, configFile }, { controlDir: ctl.path });
      expect((await conn.exec('echo ok')).stdout).toBe('ok\n');
    }
    const hostPub = (await readFile(path.join(sshd.dir, 'host_ed25519_key.pub'), 'utf8')).split(/\s+/)[1]!;
    expect(await readFile(knownHosts, 'utf8')).toContain(hostPub);
  });

  test('an sshd that goes away is noticed; reopen() fails while it is down and succeeds once it is back', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const target = { ...parseHostSpec(sshd.hostSpec), identityFile: sshd.identityFile, knownHostsFile: sshd.knownHostsFile };
    await using conn = await SshConnection.open(target, { controlDir: ctl.path });
    await sshd.stop();
    try {
      await waitFor(async () => !(await conn.check()), { timeoutMs: 5_000, what: 'the master to notice sshd is gone' });
      expect((await rejection(conn.exec('true'))).code).toBe('SPOTCTL_SSH_UNREACHABLE');
      const down = await rejection(conn.reopen());
      expect(down.message).toMatch(/connection refused/);
    } finally {
      await sshd.start();
    }
    await conn.reopen();
    expect((await conn.exec('echo again')).stdout).toBe('again\n');
  });

  test('rsync honours .gitignore, skips VCS and venvs, and re-sends only changes', async () => {
    await using work = await tmpDir('spotctl-rsync-');
    const proj = path.join(work.path, 'proj');
    const remote = path.join(work.path, 'remote', 'deep', 'work');
    const files: Record<string, string> = {
      'main.py': 'print("hi")\n',
      'pkg/util.py': 'x = 1\n',
      '.gitignore': 'out/\n*.log\n',
      'out/big.bin': 'ignored\n',
      'run.log': 'ignored\n',
      '.git/HEAD': 'ref: refs/heads/main\n',
      '.venv/bin/python': '#!/bin/sh\n',
      'venv/lib/x': 'x\n',
      'pkg/__pycache__/util.cpython-311.pyc': 'pyc',
      'node_modules/m/index.js': '1',
      '.spotctl/state.json': '{}',
    };
    for (const [name, text] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(proj, name)), { recursive: true });
      await writeFile(path.join(proj, name), text);
    }
    await using ctl = await tmpDir('spotctl-cm-');
    await using conn = await SshConnection.open(sshd, { controlDir: ctl.path });
    const progress: number[] = [];
    const first = await rsyncTo(conn, [proj], remote, { onProgress: (p) => progress.push(p.percent) });
    expect(first.files.sort()).toEqual(['.gitignore', 'main.py', 'pkg/util.py']);
    expect((await readdir(remote)).sort()).toEqual(['.gitignore', 'main.py', 'pkg']);
    expect(await readdir(path.join(remote, 'pkg'))).toEqual(['util.py']);
    expect(progress.at(-1)).toBe(100);

    // A different size, so rsync's size+mtime quick check sees the edit even within one second.
    await writeFile(path.join(proj, 'main.py'), 'print("hello again")\n');
    await writeFile(path.join(proj, 'new.py'), 'y = 2\n');
    const second = await rsyncTo(conn, [proj], remote);
    expect(second.files.sort()).toEqual(['main.py', 'new.py']);
    expect(await readFile(path.join(remote, 'main.py'), 'utf8')).toBe('print("hello again")\n');

    // --delete removes what vanished locally but never what is excluded (the host's own venv).
    await mkdir(path.join(remote, '.venv'));
    await writeFile(path.join(remote, '.venv', 'marker'), 'host venv');
    await rm(path.join(proj, 'new.py'));
    await rsyncTo(conn, [proj], remote, { deleteExtraneous: true });
    expect((await readdir(remote)).sort()).toEqual(['.gitignore', '.venv', 'main.py', 'pkg']);

    // A file path is sent into the directory by its name.
    const single = path.join(work.path, 'single');
    await rsyncTo(conn, [path.join(proj, 'pkg', 'util.py')], single);
    expect(await readdir(single)).toEqual(['util.py']);

    const err = await rejection(rsyncTo(conn, [path.join(proj, 'missing')], remote));
    expect(err.code).toBe('SPOTCTL_USAGE');
  });
});

describe.skipIf(skipNetns)('SshConnection to an sshd inside a network namespace', () => {
  const ECHO_PORT = 7777;
  let ns: Netns;
  let sshd: Sshd;
  let echo: ChildProcess;

  beforeAll(async () => {
    ns = await createNetns();
    sshd = await startSshd({ netns: ns });
    // Bound to the namespace's own loopback: reachable only through sshd's forwarding.
    const script = `require('net').createServer((s) => s.pipe(s)).listen(${ECHO_PORT}, '127.0.0.1', () => console.log('listening'))`;
    echo = ns.spawn([process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await readUntil(echo.stdout!, /listening/, 10_000);
  });
  afterAll(async () => {
    echo?.kill('SIGKILL');
    await sshd?.close();
    await ns?.close();
  });

  test('forwardUnixSocket reaches a server only the host can see; a killed master comes back with reopen()', async () => {
    // Without the tunnel the echo server is out of reach.
    await expect(
      new Promise((resolve, reject) => net.connect(ECHO_PORT, ns.nsAddress).once('connect', resolve).once('error', reject)),
    ).rejects.toThrow(/ECONNREFUSED/);

    await using ctl = await tmpDir('spotctl-cm-');
    await using conn = await SshConnection.open(sshd, { controlDir: ctl.path });
    const sock = path.join(ctl.path, 'agent.sock');
    await conn.forwardUnixSocket(sock, '127.0.0.1', ECHO_PORT);
    expect(await echoThrough(sock, 'ping-1')).toBe('ping-1');

    const pid = await conn.masterPid();
    process.kill(pid!, 'SIGKILL');
    await waitFor(async () => !(await conn.check()), { timeoutMs: 5_000, what: 'check() to see the master gone' });
    await expect(echoThrough(sock, 'ping-dead')).rejects.toThrow();
    const err = await rejection(conn.exec('true'));
    expect(err.code).toBe('SPOTCTL_SSH_UNREACHABLE');

    await conn.reopen();
    expect(await conn.masterPid()).not.toBe(pid);
    expect(await echoThrough(sock, 'ping-2')).toBe('ping-2');
    expect((await conn.exec('echo back')).stdout).toBe('back\n');
  });

  test('a cut link fails commands within the ServerAlive bound; reopen() works once it is back', async () => {
    await using ctl = await tmpDir('spotctl-cm-');
    const aliveS = 1;
    const countMax = 2;
    await using conn = await SshConnection.open(sshd, {
      controlDir: ctl.path,
      serverAliveIntervalS: aliveS,
      serverAliveCountMax: countMax,
      connectTimeoutS: 3,
    });
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const inflight = conn.exec('echo started; sleep 30', { onStdout: () => started() });
    await running;

    await ns.linkDown();
    try {
      const err = await rejection(inflight);
      expect(err.code).toBe('SPOTCTL_SSH_UNREACHABLE');
      // Only ssh's ServerAlive check can end it this side of the test's timeout: TCP alone
      // retransmits for many minutes. How fast it does so is not a test's business.
      expect(await conn.check()).toBe(false);
      // The master is gone: a new command fails at once instead of dialling a second connection.
      // It is the lost-master error, not a dial's (which would time out or find no route). ssh's
      // own words from the refusing proxy command are not always printed, so they are not asserted.
      const again = await rejection(conn.exec('true'));
      expect(again.code).toBe('SPOTCTL_SSH_UNREACHABLE');
      expect(again.message).toMatch(/lost the SSH connection/);
      expect(again.message).not.toMatch(/timed out|no route/);
      // Reconnecting while the link is still down fails within the connect timeout.
      const reErr = await rejection(conn.reopen());
      expect(reErr.code).toBe('SPOTCTL_SSH_UNREACHABLE');
      expect(reErr.message).toMatch(/timed out|no route/);
    } finally {
      await ns.linkUp();
    }
    await conn.reopen();
    expect((await conn.exec('echo back')).stdout).toBe('back\n');
  });
});
