// @ts-check
/**
 * Issue 5 row 3: upload throughput of the agent's checkpoint uploader against `aws s3 cp` of the
 * same files to the same S3 endpoint (moto_server on loopback).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { expectOk, pollUntil, runCommand } from './lib/proc.mjs';
import { agentLog, awsEnv, awsS3CpRecursive, startBenchMoto, startSpotAgent } from './lib/spot.mjs';
import { interleaved, summarize } from './lib/stats.mjs';

const MB = 1e6;
const MIB = 1024 * 1024;
const RUNS = 4;
const BUCKET = 'bench-s3';
const SETS = [
  { key: 'one-big', label: 'one 256 MiB file', files: 1, bytes: 256 * MIB },
  { key: 'many-small', label: '64 × 4 MiB files', files: 64, bytes: 4 * MIB },
];

/** Random, incompressible files (written in 4 MiB blocks). */
function writeSet(dir, { files, bytes }) {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < files; i++) {
    const fd = openSync(path.join(dir, `part-${String(i).padStart(3, '0')}.bin`), 'w');
    try {
      for (let off = 0; off < bytes; off += 4 * MIB) writeSync(fd, randomBytes(Math.min(4 * MIB, bytes - off)));
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * The agent's uploader, end to end: a bare agent whose checkpoint folder is the pre-filled set and
 * whose job is `true`. The job's exit triggers the final flush; the time is job start → the
 * manifest committed (both from agent.log).
 */
async function ours(ctx, { moto, env, dir, set, i }) {
  await moto.fresh();
  const agent = await startSpotAgent(ctx, {
    dir: path.join(ctx.tmp, `agent-${set.key}-${i}`),
    command: ['true'],
    env,
    // debug: one "checkpoint file uploaded" line per file (with its put's duration), for the breakdown.
    extra: {
      logLevel: 'debug',
      checkpoint: { dir, target: { kind: 's3', bucket: BUCKET, prefix: 'ours', endpoint: moto.endpoint, region: 'us-east-1' } },
    },
  });
  try {
    const committed = await pollUntil(() => agentLog(agent).find((e) => e.msg === 'checkpoint committed'), {
      timeoutMs: 120_000,
      intervalMs: 25,
      what: 'the checkpoint set to be committed',
      signal: ctx.signal,
    });
    const started = agentLog(agent).find((e) => e.msg === 'job started');
    const total = set.files * set.bytes;
    if (committed.files !== set.files || committed.bytes !== total || committed.uploadedBytes !== total) {
      throw new Error(`unexpected commit: ${JSON.stringify(committed)}`);
    }
    // Breakdown: job start → first byte sent (final-flush re-check, hashing, HEAD), the puts, the manifest.
    const puts = agentLog(agent).filter((e) => e.msg === 'checkpoint file uploaded');
    const firstPut = Math.min(...puts.map((e) => e.time - e.durationMs));
    const lastPut = Math.max(...puts.map((e) => e.time));
    return {
      ms: committed.time - started.time,
      beforeFirstPutMs: firstPut - started.time,
      putSpanMs: lastPut - firstPut,
      afterLastPutMs: committed.time - lastPut,
    };
  } finally {
    await agent.stop();
  }
}

export default defineBenchmark({
  name: 's3-throughput',
  row: '5.3',
  title: 'Checkpoint upload throughput to S3 (moto)',
  target: Object.fromEntries(SETS.map((s) => [s.key, target.ratioAtLeast(1.0)])),
  timeoutMs: 240_000,
  budgetMs: 150_000,
  method: `
Two sets of random files on local disk: ${SETS.map((s) => s.label).join(' and ')} (268 MB each). Uploaded to a loopback
moto_server (moto itself, no proxy in between; dummy credentials, \`AWS_EC2_METADATA_DISABLED=true\`), which is reset
before every upload. **Ours** is the agent's uploader through a minimal agent run, not a bundled \`S3ObjectStore\`: a bare
agent (\`node agent.mjs start\`) whose checkpoint folder is the pre-filled set and whose job is \`true\`; the job's exit
triggers the final flush (hash, HEAD, PutObject or multipart in 8 MiB parts with SHA-256 checksums, then
the manifest), timed from the "job started" to the "checkpoint committed" lines of \`agent.log\` (the agent is already
running, as it is during a real job). **Baseline**: \`aws s3 cp --recursive\` (AWS CLI v1, default 10 threads, 8 MB
multipart chunks) of the same folder to the same moto, timed from spawn to exit, so it includes the CLI's start-up
(see the note). Interleaved, ${RUNS} runs of each per set; MB/s = 10^6 bytes per second. s3rver (npm) is not installed
on this machine, so moto_server is the only S3 endpoint measured.`,
  async run(ctx) {
    const moto = await startBenchMoto(ctx, BUCKET);
    const env = awsEnv(path.join(ctx.tmp, 'aws'), moto.endpoint);
    const measures = [];
    const floors = [];
    const notes = [];
    for (const set of SETS) {
      ctx.signal.throwIfAborted();
      const dir = path.join(ctx.tmp, set.key);
      writeSet(dir, set);
      const total = set.files * set.bytes;
      const breakdown = [];
      const { a, b } = await interleaved({
        runs: RUNS,
        a: async (i) => {
          const r = await ours(ctx, { moto, env, dir, set, i });
          breakdown.push(r);
          ctx.log(
            `${set.key} run ${i + 1}: agent ${r.ms} ms (${(total / MB / (r.ms / 1000)).toFixed(1)} MB/s; before the first put ${r.beforeFirstPutMs} ms, puts ${r.putSpanMs} ms, manifest ${r.afterLastPutMs} ms)`,
          );
          return total / MB / (r.ms / 1000);
        },
        b: async (i) => {
          await moto.fresh();
          // The CLI's own floor: start-up plus one request, for the note.
          const floor = await runCommand('aws', ['--endpoint-url', moto.endpoint, 's3', 'ls', `s3://${BUCKET}/none/`], {
            env,
            signal: ctx.signal,
            timeoutMs: 30_000,
          });
          if (floor.code !== 0 && floor.code !== 1) expectOk(floor, 'aws s3 ls');
          floors.push(floor.ms);
          const ms = await awsS3CpRecursive({ dir, url: `s3://${BUCKET}/runctl/`, endpoint: moto.endpoint, env, signal: ctx.signal });
          ctx.log(`${set.key} run ${i + 1}: aws s3 cp ${ms.toFixed(0)} ms (${(total / MB / (ms / 1000)).toFixed(1)} MB/s)`);
          return total / MB / (ms / 1000);
        },
        signal: ctx.signal,
        deadline: set === SETS[0] ? ctx.deadline - (ctx.deadline - Date.now()) / 2 : ctx.deadline,
        log: ctx.log,
      });
      const med = (xs) => summarize(xs).median;
      notes.push(
        `${set.label}, agent (medians): ${med(breakdown.map((r) => r.beforeFirstPutMs)).toFixed(0)} ms from job start to the first byte sent (the exit flush's re-check, which waits out what is left of 300 ms since the newest mtime: nothing here, the files are older; then SHA-256 of the file and a HEAD), ${med(breakdown.map((r) => r.putSpanMs)).toFixed(0)} ms of uploads (${med(breakdown.map((r) => total / MB / (r.putSpanMs / 1000))).toFixed(0)} MB/s while sending), ${med(breakdown.map((r) => r.afterLastPutMs)).toFixed(0)} ms for the manifest.`,
      );
      measures.push(
        measure({
          key: set.key,
          label: `${set.label}: agent uploader`,
          unit: 'MB/s',
          figure: a,
          baseline: b,
          baselineLabel: 'aws s3 cp --recursive (CLI v1)',
        }),
      );
    }
    const sortedFloors = [...floors].sort((x, y) => x - y);
    notes.push(
      'The agent ran with `logLevel: debug` (one extra log line per uploaded file) for the breakdown above.',
      `\`aws s3 ls\` of an empty prefix (CLI start-up + one request) took ${sortedFloors[Math.floor(sortedFloors.length / 2)]?.toFixed(0)} ms (median of ${floors.length}); that much of every baseline time is start-up, which runctl pays on every upload and the already-running agent does not.`,
      's3rver (npm) is not installed: not measured.',
    );
    return { measures, notes };
  },
});
