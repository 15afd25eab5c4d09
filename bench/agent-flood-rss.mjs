// @ts-check
/**
 * Issue 5 row 4 (memory): the agent's peak RSS while a job floods 1 GB of log lines through
 * `spotctl run --host` to a controller that reads as fast as it can.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { bareNodeRss } from './lib/bare-node.mjs';
import { expectOk, memoryOf } from './lib/proc.mjs';
import { interleaved } from './lib/stats.mjs';
import { byteTimes, runToFile } from './lib/stream.mjs';

const FLOOD_BYTES = 1_000_000_000;
const LINE = 'x'.repeat(99);
const RUNS = 2;
/** Memory in MB (10⁶ bytes), the unit of the targets. */
const MB = 1e6;

export default defineBenchmark({
  name: 'agent-flood-rss',
  row: '5.4',
  order: 1,
  title: 'Agent peak RSS during a 1 GB log flood',
  target: {
    'peak-rss': target.atMost(100, 'MB'),
  },
  timeoutMs: 300_000,
  budgetMs: 200_000,
  method: `
The job is \`sh -c 'yes <99 x> | head -c ${FLOOD_BYTES}'\` (1 GB, 10 M lines of 100 bytes), run with
\`spotctl run --host … --no-install\` over the loopback sshd; the controller's stdout goes to a file whose final size must be
exactly 1 GB. The agent's pid comes from \`<remote-dir>/runs/<run-id>/agent/agent.json\`; its \`/proc/<pid>/status\` is read
every 100 ms: the figure is the last VmHWM read before the agent exits (its peak RSS). The baseline, measured between the
flood runs, is the RSS of a bare \`node -e "setInterval(()=>{},1000)"\` after 2 s: the floor of any Node.js process here.
Memory is in MB of 10⁶ bytes (/proc reports KiB), the stricter reading of the target.`,
  async run(ctx) {
    const sshd = await ctx.sshd();
    const project = path.join(ctx.tmp, 'project');
    mkdirSync(project);
    writeFileSync(path.join(project, 'README'), 'flood\n');
    const remoteDir = ctx.remoteDir();
    const out = path.join(ctx.tmp, 'out.txt');
    const env = { ...process.env, SPOTCTL_HOME: path.join(ctx.tmp, 'home'), NO_COLOR: '1' };
    const args = [
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
      'sh',
      '-c',
      `yes ${LINE} | head -c ${FLOOD_BYTES}`,
    ];
    expectOk(
      await ctx.spotctl(['run', ...ctx.hostArgs(sshd, remoteDir), '--no-install', '--sync', project, '--', 'true'], { timeoutMs: 60_000 }),
      'spotctl warm-up',
    );
    rmSync(path.join(remoteDir, 'runs'), { recursive: true, force: true });

    const controllerPeaks = [];
    const throughputs = [];
    const flood = async () => {
      let agentPid;
      let agentHwm = 0;
      let agentRssMax = 0;
      let controllerHwm = 0;
      let controllerPid;
      let samples = 0;
      const seen = [];
      const sample = () => {
        // agent.json appears once the daemon listens; re-read it until its pid answers in /proc.
        agentPid ??= ctx.agentStates(remoteDir)[0]?.pid;
        const m = agentPid === undefined ? undefined : memoryOf(agentPid);
        if (agentPid !== undefined && !(m !== undefined && m.hwm > 0)) {
          seen.push(`pid ${agentPid}: ${JSON.stringify(m)}`);
          agentPid = undefined;
        }
        if (m !== undefined && m.hwm > 0) {
          samples += 1;
          agentHwm = Math.max(agentHwm, m.hwm);
          agentRssMax = Math.max(agentRssMax, m.rss);
        }
        const c = controllerPid === undefined ? undefined : memoryOf(controllerPid);
        if (c !== undefined && c.hwm > 0) controllerHwm = Math.max(controllerHwm, c.hwm);
      };
      let lastSample = 0;
      const r = await runToFile({
        file: process.execPath,
        args: [ctx.bin, ...args],
        outFile: out,
        env,
        signal: ctx.signal,
        timeoutMs: 200_000,
        onSpawn: (pid) => (controllerPid = pid),
        onPoll: (ms) => {
          if (ms - lastSample < 100) return;
          lastSample = ms;
          sample();
        },
      });
      const states = JSON.stringify(ctx.agentStates(remoteDir));
      rmSync(out, { force: true });
      // The run's log (1 GB of lines) is on disk; its agent has exited.
      rmSync(path.join(remoteDir, 'runs'), { recursive: true, force: true });
      if (r.code !== 0 || r.bytes !== FLOOD_BYTES)
        throw new Error(`flood run exited ${r.code ?? r.signal} after ${r.bytes} bytes: ${r.stderr.slice(-1500)}`);
      if (!agentHwm)
        throw new Error(`never saw the agent process in /proc (${samples} samples; agent.json: ${states}; ${seen.slice(0, 5).join('; ')})`);
      const mbps = FLOOD_BYTES / 1e6 / (byteTimes(r).streamMs / 1000);
      throughputs.push(mbps);
      controllerPeaks.push(controllerHwm / MB);
      ctx.log(
        `agent peak RSS ${(agentHwm / MB).toFixed(1)} MB over ${samples} samples (max sampled RSS ${(agentRssMax / MB).toFixed(1)}), controller peak ${(controllerHwm / MB).toFixed(1)} MB, ${mbps.toFixed(1)} MB/s`,
      );
      return agentHwm / MB;
    };
    const bare = async () => (await bareNodeRss()) / MB;
    const { a, b } = await interleaved({ runs: RUNS, a: flood, b: bare, signal: ctx.signal, deadline: ctx.deadline, log: ctx.log });
    return {
      measures: [
        measure({
          key: 'peak-rss',
          label: 'agent peak RSS (VmHWM), 1 GB flood',
          unit: 'MB',
          figure: a,
          baseline: b,
          baselineLabel: 'bare idle node',
        }),
        measure({
          key: 'controller-peak-rss',
          label: 'controller peak RSS, same runs (info)',
          unit: 'MB',
          figure: controllerPeaks,
          baseline: b,
          baselineLabel: 'bare idle node',
        }),
        measure({ key: 'flood-throughput', label: 'flood throughput to the controller (info)', unit: 'MB/s', figure: throughputs }),
      ],
    };
  },
});
