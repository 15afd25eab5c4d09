/**
 * The repo's own lint rules, run through ESLint with the repo's configuration over fixture texts
 * placed (virtually) inside each package: the imports the package-boundary rule must refuse, by name
 * and by relative path, and the ones it must let through; and the rules the .mjs scripts get.
 */
import path from 'node:path';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';
import { describe, expect, it } from 'vitest';
import { REPO } from './helpers/cli.ts';

// The fixtures are not files the TypeScript project knows, so the type-aware rules are left out
// (typescript-eslint's own config for that); the boundary rule needs no types.
const eslint = new ESLint({ cwd: REPO, overrideConfig: [tseslint.configs.disableTypeChecked] });

/** The boundary messages ESLint gives `code` as if it were the file at `file` (repo-relative). */
async function boundaryErrors(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: path.join(REPO, file) });
  const fatal = result!.messages.filter((m) => m.fatal);
  expect(fatal, 'the fixture must parse').toEqual([]);
  return result!.messages.filter((m) => m.ruleId === 'spotctl/package-boundaries').map((m) => m.message);
}

describe('package boundaries', () => {
  it('the controller may not reach into the agent, by name or by relative path', async () => {
    const file = 'packages/controller/src/commands/lint-fixture.ts';
    expect(await boundaryErrors(file, "import { Agent } from '@spotctl/agent';\nexport { Agent };\n")).toEqual([
      expect.stringMatching(/packages\/controller must not import from packages\/agent/),
    ]);
    expect(await boundaryErrors(file, "import { Agent } from '../../../agent/src/agent.ts';\nexport { Agent };\n")).toEqual([
      expect.stringMatching(/must not import from packages\/agent/),
    ]);
    expect(await boundaryErrors(file, "export { main } from '../../../agent/src/cli.ts';\n")).toHaveLength(1);
    expect(await boundaryErrors(file, "export const load = () => import('../../../agent/src/index.ts');\n")).toHaveLength(1);
  });

  it('the agent may not reach into the controller; shared into neither', async () => {
    expect(
      await boundaryErrors(
        'packages/agent/src/spot/lint-fixture.ts',
        "import { main } from '../../../controller/src/cli/main.ts';\nexport { main };\n",
      ),
    ).toHaveLength(1);
    expect(
      await boundaryErrors('packages/shared/src/lint-fixture.ts', "import { main } from '../../agent/src/cli.ts';\nexport { main };\n"),
    ).toHaveLength(1);
    expect(await boundaryErrors('packages/shared/src/lint-fixture.ts', "export * from '@spotctl/controller';\n")).toHaveLength(1);
  });

  it('imports inside a package and of shared pass', async () => {
    const code = "import { ERROR_CODES } from '@spotctl/shared';\nimport { main } from '../cli/main.ts';\nexport { ERROR_CODES, main };\n";
    expect(await boundaryErrors('packages/controller/src/commands/lint-fixture.ts', code)).toEqual([]);
    expect(
      await boundaryErrors(
        'packages/agent/src/lint-fixture.ts',
        "import { ERROR_CODES } from '@spotctl/shared';\nimport { Agent } from './agent.ts';\nexport { ERROR_CODES, Agent };\n",
      ),
    ).toEqual([]);
  });

  it('test/ reaches the packages only through their public index', async () => {
    const file = 'test/lint-fixture.test.ts';
    expect(
      await boundaryErrors(
        file,
        "import { Agent } from '@spotctl/agent';\nimport { main } from '@spotctl/controller';\nimport { tmpDir } from './helpers/tmp.ts';\nexport { Agent, main, tmpDir };\n",
      ),
    ).toEqual([]);
    expect(
      await boundaryErrors(file, "import { SpotPoller } from '../packages/agent/src/spot/index.ts';\nexport { SpotPoller };\n"),
    ).toEqual([expect.stringMatching(/import @spotctl\/agent \(its public src\/index\.ts\)/)]);
    expect(
      await boundaryErrors(
        'test/helpers/lint-fixture.ts',
        "import { main } from '../../packages/controller/src/index.ts';\nexport { main };\n",
      ),
    ).toHaveLength(1);
    expect(
      await boundaryErrors(file, "import { ERROR_CODES } from '@spotctl/shared/src/errors.ts';\nexport { ERROR_CODES };\n"),
    ).toHaveLength(1);
  });
});

describe('.mjs scripts', () => {
  it("are linted against Node's globals: an undefined name is an error, process and fetch are not", async () => {
    const [result] = await eslint.lintText('process.stdout.write(String(typeof fetch));\nprocces.exit(1);\n', {
      filePath: path.join(REPO, 'bench/lint-fixture.mjs'),
    });
    expect(result!.messages.map((m) => `${m.ruleId}: ${m.message}`)).toEqual(["no-undef: 'procces' is not defined."]);
  });

  it('get the no-template-curly-in-string rule too', async () => {
    // eslint-disable-next-line no-template-curly-in-string -- the fixture is exactly that mistake
    const [result] = await eslint.lintText("process.stdout.write('region ${region}');\n", {
      filePath: path.join(REPO, 'scripts/lint-fixture.mjs'),
    });
    expect(result!.messages.map((m) => m.ruleId)).toEqual(['no-template-curly-in-string']);
  });
});
