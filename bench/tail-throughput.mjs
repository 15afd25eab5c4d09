// @ts-check
/**
 * Issue 5 row 4: log tail throughput through `spotctl run --host` (ssh master, -L tunnel,
 * websocket) against `ssh host cat` of the same bytes over the same sshd.
 */
import { closeSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { expectOk, runCommand } from './lib/proc.mjs';
import { interleaved } from './lib/stats.mjs';
import { byteTimes, checkNumberedLines, fileHash, runToFile } from './lib/stream.mjs';

/** 3 000 000 lines × 100 bytes = 300 MB: tens of seconds through spotctl on a 2-core machine. */
const LINES = 3_000_000;
const LINE_BYTES = 100;
const RUNS = 3;
const MB = 1e6;

/** `000000001 <payload>\n`, every line LINE_BYTES long, so the number is always the first 9 bytes. */
export function writeNumberedFile(file, lines, lineBytes = LINE_BYTES) {
  const payload = 'the quick brown fox jumps over the lazy dog; step loss=0.123456 lr=3e-4 '.padEnd(lineBytes - 11, '.');
  const fd = openSync(file, 'w');
  try {
    const batch = 20_000;
    for (let from = 1; from <= lines; from += batch) {
      let text = '';
      for (let i = from; i < Math.min(from + batch, lines + 1); i++) text += `${String(i).padStart(9, '0')} ${payload}\n`;
      writeSync(fd, text);
    }
  } finally {
    closeSync(fd);
  }
  return lines * lineBytes;
}

export default defineBenchmark({
  name: 'tail-throughput',
  row: '5.4',
  title: 'Log tail throughput (spotctl run --host → stdout file)',
  target: {
    throughput: target.ratioAtLeast(0.7),
    'lines-lost': target.atMost(0, 'lines'),
  },
  timeoutMs: 300_000,
  budgetMs: 200_000,
  method: `
The job is \`cat\` of a ${LINES / 1e6} M-line file (${(LINES * LINE_BYTES) / MB} MB, ${LINE_BYTES}-byte numbered lines), run with
\`spotctl run --host … --no-install --sync <tiny dir> -- cat FILE\` against the loopback sshd of the test harness; the
controller's stdout goes to a file. The baseline is \`ssh <same options and key> host cat FILE\` into a file, over the same
sshd. Throughput is bytes ÷ (last byte − first byte), watched by polling the output file's size every 20 ms, so the
setup (connect, sync, agent start) is not counted; whole-command figures are given as info. Runs alternate
spotctl, ssh, spotctl, ssh, … (${RUNS} each). After every spotctl run the output must equal the file byte for byte, and the
line numbers are checked for losses, repeats and order.

**Why it misses (about 0.5× against 0.7×).** Per-line costs are gone (protocol v2: one binary frame per chunk of
lines with one validated header; raw bytes into \`log.records\`; raw writes to stdout), which took the figure from
0.1× to this. What is left is copying on a 2-core machine: for 300 MB, \`ssh\` + \`sshd\` alone use about one
core-second (that is the whole baseline), and spotctl adds about 0.5 s in the agent and 0.35 s in the controller, mostly
kernel copies (pipe read, log write, log read back for a follower that is behind, socket write, socket read, stdout
write). With both cores busy that caps spotctl near 300 MB/s, while 0.7× of a quiet \`ssh cat\` is about 400 MB/s; the
ratio also moves with the baseline, which swings with the machine's load (350–580 MB/s across runs). Closing the gap
means not reading the log back for a follower that lags (the file is the buffer that makes resume lossless), or
bigger frames than the 1 MiB in-flight window allows; neither was worth the guarantee.`,
  async run(ctx) {
    const sshd = await ctx.sshd();
    const data = path.join(ctx.tmp, 'lines.txt');
    const project = path.join(ctx.tmp, 'project');
    mkdirSync(project);
    writeNumberedFile(path.join(project, 'README'), 10);
    ctx.log(`writing ${LINES} lines…`);
    const bytes = writeNumberedFile(data, LINES);
    const expectedHash = await fileHash(data);
    const remoteDir = ctx.remoteDir();
    const out = path.join(ctx.tmp, 'out.txt');
    const spotArgs = [
      'run',
      ...ctx.hostArgs(sshd, remoteDir),
      '--no-install',
      '--grace',
      '2s',
      '--idle-timeout',
      '1m',
      '--sync',
      project,
      '--',
      'cat',
      data,
    ];
    const env = { ...process.env, SPOTCTL_HOME: path.join(ctx.tmp, 'home'), NO_COLOR: '1' };

    // Warm-up: installs the agent on the "host" and warms the page cache for both sides.
    expectOk(
      await ctx.spotctl(['run', ...ctx.hostArgs(sshd, remoteDir), '--no-install', '--sync', project, '--', 'true'], { timeoutMs: 60_000 }),
      'spotctl warm-up',
    );
    await runCommand('cat', [data], { stdout: 'ignore' });

    const checks = [];
    const spot = async () => {
      const r = await runToFile({
        file: process.execPath,
        args: [ctx.bin, ...spotArgs],
        outFile: out,
        env,
        signal: ctx.signal,
        timeoutMs: 180_000,
      });
      if (r.code !== 0) throw new Error(`spotctl run exited ${r.code ?? r.signal}: ${r.stderr.slice(-1500)}`);
      const lines = await checkNumberedLines(out, LINES);
      const identical = statSync(out).size === bytes && (await fileHash(out)) === expectedHash;
      checks.push({ ...lines, identical });
      rmSync(out, { force: true });
      // The run's log is as big as the data; drop it before the next run (its agent has exited).
      rmSync(path.join(remoteDir, 'runs'), { recursive: true, force: true });
      const { firstByteMs, streamMs } = byteTimes(r);
      ctx.log(
        `spotctl: ${(bytes / MB / (streamMs / 1000)).toFixed(1)} MB/s streaming, ${(r.wallMs / 1000).toFixed(2)} s whole; lost ${lines.lost}, identical ${identical}`,
      );
      return { mbps: bytes / MB / (streamMs / 1000), wallMbps: bytes / MB / (r.wallMs / 1000), wallMs: r.wallMs, setupMs: firstByteMs };
    };
    const ssh = async () => {
      const r = await runToFile({
        file: 'ssh',
        args: [...ctx.plainSshArgs(sshd), sshd.host, 'cat', data],
        outFile: out,
        env,
        signal: ctx.signal,
        timeoutMs: 120_000,
      });
      if (r.code !== 0 || r.bytes !== bytes)
        throw new Error(`ssh cat exited ${r.code ?? r.signal} after ${r.bytes} bytes: ${r.stderr.slice(-1500)}`);
      rmSync(out, { force: true });
      const { firstByteMs, streamMs } = byteTimes(r);
      ctx.log(`ssh cat: ${(bytes / MB / (streamMs / 1000)).toFixed(1)} MB/s streaming, ${(r.wallMs / 1000).toFixed(2)} s whole`);
      return { mbps: bytes / MB / (streamMs / 1000), wallMbps: bytes / MB / (r.wallMs / 1000), wallMs: r.wallMs, setupMs: firstByteMs };
    };
    const { a, b } = await interleaved({ runs: RUNS, a: spot, b: ssh, signal: ctx.signal, deadline: ctx.deadline, log: ctx.log });

    // A run whose output differs from the input counts at least one bad line, even if every number arrived.
    const lost = checks.map((c) => Math.max(c.lost + c.duplicated + c.outOfOrder + c.foreign, c.identical ? 0 : 1));
    const worst = checks.reduce((w, c) => (c.lost + c.duplicated + c.outOfOrder > w.lost + w.duplicated + w.outOfOrder ? c : w), checks[0]);
    return {
      measures: [
        measure({
          key: 'throughput',
          label: `tail throughput, ${bytes / MB} MB of ${LINE_BYTES}-byte lines`,
          unit: 'MB/s',
          figure: a.map((s) => s.mbps),
          baseline: b.map((s) => s.mbps),
          baselineLabel: '`ssh host cat` same file',
        }),
        measure({
          key: 'whole-command',
          label: 'same, whole command incl. setup (info)',
          unit: 'MB/s',
          figure: a.map((s) => s.wallMbps),
          baseline: b.map((s) => s.wallMbps),
          baselineLabel: '`ssh host cat`',
          note: `time to first byte: spotctl ${a.map((s) => (s.setupMs / 1000).toFixed(2)).join(', ')} s; ssh ${b.map((s) => (s.setupMs / 1000).toFixed(2)).join(', ')} s.`,
        }),
        measure({
          key: 'lines-lost',
          label: 'lines lost + repeated + out of order (per run)',
          unit: 'lines',
          figure: lost,
          note: `${checks.length} runs × ${LINES} lines; output byte-identical to the input in ${checks.filter((c) => c.identical).length}/${checks.length} runs; worst run: ${JSON.stringify(worst)}.`,
        }),
      ],
    };
  },
});
