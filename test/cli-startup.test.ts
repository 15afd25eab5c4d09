/**
 * `spotctl --help` loads only the CLI's entry chunk and what it imports statically (issue 8's
 * start-up target): commander, the command registry and the error classes. The protocol schemas
 * (TypeBox), ws, the AWS SDK and every command's implementation are in chunks loaded by the
 * command that needs them. Checked on the real build options, with esbuild's metafile.
 */
import path from 'node:path';
import { build, type Metafile } from 'esbuild';
import { expect, it } from 'vitest';
import { cliBuildOptions } from '../scripts/build.mjs';
import { tmpDir } from './helpers/tmp.ts';

/** Every input of the outputs the entry chunk imports statically (what `--help` compiles). */
function startupInputs(meta: Metafile): string[] {
  const outputs = meta.outputs;
  const entry = Object.keys(outputs).find((out) => outputs[out]?.entryPoint?.endsWith('cli/main.ts'));
  if (!entry) throw new Error('no entry chunk in the metafile');
  const seen = new Set([entry]);
  const queue = [entry];
  for (let out = queue.pop(); out !== undefined; out = queue.pop()) {
    for (const imp of outputs[out]?.imports ?? []) {
      if (imp.kind === 'import-statement' && outputs[imp.path] && !seen.has(imp.path)) {
        seen.add(imp.path);
        queue.push(imp.path);
      }
    }
  }
  return [...seen].flatMap((out) => Object.keys(outputs[out]?.inputs ?? {}));
}

it('spotctl --help loads commander, the registry and the error classes, not the protocol, ws, AWS or the commands', async () => {
  await using dir = await tmpDir('cli-startup-');
  const result = await build({ ...cliBuildOptions(true), outdir: path.join(dir.path, 'dist') });
  if (!result.metafile) throw new Error('esbuild wrote no metafile');
  const inputs = startupInputs(result.metafile);
  const ours = inputs.filter((i) => !i.includes('node_modules/')).map((i) => i.replace(/^.*?packages\//, 'packages/'));
  const theirs = [
    ...new Set(
      inputs.filter((i) => i.includes('node_modules/')).map((i) => /node_modules\/((?:@[^/]+\/)?[^/]+)\/(?!.*node_modules\/)/.exec(i)?.[1]),
    ),
  ];
  expect(theirs).toEqual(['commander']);
  expect(ours.sort()).toEqual(
    [
      'packages/controller/src/cli/argv-text.ts',
      'packages/controller/src/cli/main.ts',
      'packages/controller/src/cli/option-checks.ts',
      'packages/controller/src/commands/index.ts',
      'packages/shared/src/errors.ts',
    ].sort(),
  );
});
