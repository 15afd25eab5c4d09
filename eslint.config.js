// @ts-check
// One lint configuration for the whole repo. Typed rules catch forgotten promises; the
// package-boundaries rule and the restricted-imports blocks keep the three packages to their one job
// each (Playwright's DEPS lists).
import tseslint from 'typescript-eslint';
import spotctl from './scripts/eslint-package-boundaries.mjs';

/** @param {string[]} forbidden @returns {import('eslint').Linter.RulesRecord} */
const noCrossImports = (forbidden) => ({
  'no-restricted-imports': [
    'error',
    {
      patterns: forbidden.map((pkg) => ({
        group: [pkg, `${pkg}/*`],
        message: `${pkg} must not be imported from here (see STYLE.md: the house)`,
      })),
    },
  ],
});

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'bench/results/**', '.vitest-tmp/**'] },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommended],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/await-thenable': 'error',
      // `return promise` inside a scope with `await using` disposes the resource before the promise settles.
      '@typescript-eslint/return-await': ['error', 'always'],
      'no-console': 'error',
      // `await using _ = resource` and `const { dropped: _x, ...rest }` name on purpose what is kept only to be disposed or left out.
      '@typescript-eslint/no-unused-vars': ['error', { varsIgnorePattern: '^_', argsIgnorePattern: '^_', ignoreRestSiblings: true }],
      // A `${…}` in a plain string is a template literal that lost its backticks (it printed a literal `${region}`).
      'no-template-curly-in-string': 'error',
    },
  },
  // The .mjs scripts (bin, build, benchmarks, ami/) and this file: the same rules without type
  // information (tsconfig.scripts.json type-checks them), plus undefined names, against Node's globals.
  {
    files: ['**/*.mjs', '**/*.js'],
    extends: [tseslint.configs.recommended],
    languageOptions: { globals: Object.fromEntries(Object.getOwnPropertyNames(globalThis).map((name) => [name, 'readonly'])) },
    rules: {
      'no-undef': 'error',
      'no-template-curly-in-string': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { varsIgnorePattern: '^_', argsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  // Package to package, by name or by relative path: agent and controller import only shared, shared
  // neither; test/ only through the packages' public indexes (scripts/eslint-package-boundaries.mjs).
  { files: ['packages/**/*.ts', 'test/**/*.ts'], plugins: { spotctl }, rules: { 'spotctl/package-boundaries': 'error' } },
  {
    files: ['packages/shared/**/*.ts'],
    rules: noCrossImports(['fastify', 'ws', 'pino', 'chokidar', '@aws-sdk/client-ec2', '@aws-sdk/client-s3']),
  },
  // Generated from ami/: the text of shell scripts, whose `${VAR}`s are the shell's.
  { files: ['packages/controller/src/aws/ami-scripts.ts'], rules: { 'no-template-curly-in-string': 'off' } },
  // Tests and benchmarks print what they measure.
  { files: ['test/**/*.ts', 'bench/**/*.ts', 'packages/*/src/**/*.test.ts'], rules: { 'no-console': 'off' } },
);
