// @ts-check
/**
 * Issue 5 row 2 (deadline): how punctually the agent's final checkpoint flush gives up at its
 * deadline while S3 is down, against a plain timer of the same length in the same process. The
 * timing the checkpoint-large test used to assert (`tookMs < 6000`) lives here.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { defineBenchmark, measure, target } from './lib/define.mjs';
import { bundleHarness } from './lib/harness.mjs';
import { interleaved } from './lib/stats.mjs';

const RUNS = 6;
const DEADLINE_MS = 2_000;
const BUCKET = 'bench-deadline';

export default defineBenchmark({
  name: 'flush-deadline',
  row: '5.2',
  order: 2,
  title: 'Final checkpoint flush at its deadline while S3 is down',
  target: { 'give-up': target.ratioAtMost(1.1) },
  timeoutMs: 120_000,
  budgetMs: 60_000,
  method: `
The agent's \`CheckpointSync\` (bundled from source with the test helpers) watches a folder holding one 1 kB file and
stores to a loopback moto_server whose front door then refuses every connection (\`moto.stop('refuse')\`, as in the
checkpoint-large test). Each sample is one final flush (\`flush('interruption', { deadlineAt: now + ${DEADLINE_MS} ms })\`),
timed from the call to its return; the store's own retry budget (10 min) is far longer, so only the deadline can end it.
Baseline, interleaved: a plain \`setTimeout\` of ${DEADLINE_MS} ms in the same process, which is how late this event loop
runs any deadline. ${RUNS} of each. Target: at most 1.1× the baseline (the flush may end early, when the uploads' share of
the deadline ends and there is nothing to commit; it must not end late).`,
  async run(ctx) {
    // The store runs in this process: dummy credentials, and never the metadata service.
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_REGION: 'us-east-1',
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_EC2_METADATA_SERVICE_ENDPOINT: 'http://127.0.0.1:9',
      AWS_CONFIG_FILE: path.join(ctx.tmp, 'no-aws-config'),
      AWS_SHARED_CREDENTIALS_FILE: path.join(ctx.tmp, 'no-aws-credentials'),
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    });
    ctx.onCleanup(() => {
      for (const key of Object.keys(process.env)) if (key.startsWith('AWS_') && !(key in saved)) delete process.env[key];
      for (const [key, value] of Object.entries(saved)) if (key.startsWith('AWS_')) process.env[key] = value;
    });
    const { startMoto, CheckpointSync, S3ObjectStore } = await bundleHarness(
      'flush-deadline',
      [
        "export { startMoto } from './moto.ts';",
        "export { CheckpointSync, S3ObjectStore } from '../../packages/agent/src/checkpoint/index.ts';",
      ],
      ['esbuild'],
    );
    const moto = await startMoto();
    ctx.onCleanup(() => moto.close());
    await moto.createBucket(BUCKET);
    const dir = path.join(ctx.tmp, 'ckpt');
    mkdirSync(dir, { recursive: true });
    const store = new S3ObjectStore({ bucket: BUCKET, prefix: 'ck', endpoint: moto.endpoint, connectionTimeoutMs: 1000 });
    ctx.onCleanup(() => store.close());
    const sync = await CheckpointSync.start({ runId: 'bench-deadline', dir, store, settleMs: 60_000 });
    ctx.onCleanup(() => sync.close());
    writeFileSync(path.join(dir, 'state.bin'), Buffer.alloc(1000, 1));
    for (let i = 0; i < 200 && sync.pendingBytes() !== 1000; i++) await sleep(25, undefined, { signal: ctx.signal });
    if (sync.pendingBytes() !== 1000) throw new Error('the watcher never saw state.bin');
    await moto.stop('refuse');
    ctx.onCleanup(() => moto.start());

    const errors = new Set();
    const flush = async () => {
      const t0 = performance.now();
      const result = await sync.flush('interruption', { deadlineAt: Date.now() + DEADLINE_MS });
      const ms = performance.now() - t0;
      if (result.committedSeq !== null) throw new Error(`a set was committed while S3 refused: ${JSON.stringify(result)}`);
      // Only an outage may be what stops it (a credentials or configuration error ends a flush early).
      if (!/ECONNREFUSED|deadline/.test(String(result.error))) throw new Error(`the flush failed for another reason: ${result.error}`);
      errors.add(String(result.error));
      return ms;
    };
    const timer = async () => {
      const t0 = performance.now();
      await sleep(DEADLINE_MS, undefined, { signal: ctx.signal });
      return performance.now() - t0;
    };
    const { a, b } = await interleaved({ runs: RUNS, a: flush, b: timer, signal: ctx.signal, deadline: ctx.deadline, log: ctx.log });
    ctx.log(`flush ${a.map((v) => v.toFixed(0)).join(' ')} ms; timer ${b.map((v) => v.toFixed(0)).join(' ')} ms`);
    return {
      measures: [
        measure({
          key: 'give-up',
          label: `final flush with S3 refusing, deadline ${DEADLINE_MS} ms: call → return`,
          unit: 'ms',
          figure: a,
          baseline: b,
          baselineLabel: `plain ${DEADLINE_MS} ms timer`,
        }),
      ],
      notes: [`What the flushes reported: ${[...errors].join(' | ')}`],
    };
  },
});
