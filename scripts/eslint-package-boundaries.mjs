// @ts-check
// The lint rule that keeps the three packages to their one job each (STYLE.md: the house). A
// pattern on the import text cannot do it: `../../../agent/src/x.ts` from the controller names no
// package, so the rule resolves every relative import against the importing file and asks which
// package it lands in. From test/, a package is reached only through its public index.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

/** Who may import whom; test/ may import all three (through their indexes). */
const ALLOWED = /** @type {Record<string, readonly string[]>} */ ({
  shared: [],
  agent: ['shared'],
  controller: ['shared'],
  test: ['shared', 'agent', 'controller'],
});

/**
 * The part of the repo a file belongs to: a package name, `test`, or undefined (scripts, bench...).
 * @param {string} file absolute path
 * @returns {string | undefined}
 */
function partOf(file) {
  const [top, name] = path.relative(root, file).split(path.sep);
  if (top === 'packages' && name !== undefined && name in ALLOWED) return name;
  if (top === 'test') return 'test';
  return undefined;
}

/**
 * Which package an import specifier reaches, and whether it goes past the package's index.
 * @param {string} spec
 * @param {string} fromFile
 * @returns {{ pkg: string, deep: boolean } | undefined}
 */
function targetOf(spec, fromFile) {
  const named = /^@spotctl\/([^/]+)(\/.*)?$/.exec(spec);
  if (named?.[1] !== undefined) return { pkg: named[1], deep: named[2] !== undefined };
  if (!spec.startsWith('.') && !path.isAbsolute(spec)) return undefined;
  const pkg = partOf(path.resolve(path.dirname(fromFile), spec));
  return pkg === undefined || pkg === 'test' ? undefined : { pkg, deep: true };
}

/** @type {import('eslint').Rule.RuleModule} */
const packageBoundaries = {
  meta: {
    type: 'problem',
    docs: {
      description:
        'agent and controller import only shared, shared imports neither; test/ imports packages only through their public index',
    },
    schema: [],
    messages: {
      forbidden:
        '{{from}} must not import from packages/{{to}} ("{{spec}}"): agent and controller import only @spotctl/shared (see STYLE.md: the house)',
      deep: 'import @spotctl/{{to}} (its public src/index.ts), not "{{spec}}": export what is needed from the index',
    },
  },
  create(context) {
    const from = partOf(context.filename);
    if (from === undefined) return {};
    /** @param node the import's source (a string literal) @param {unknown} spec */
    const check = (node, spec) => {
      if (typeof spec !== 'string') return;
      const target = targetOf(spec, context.filename);
      if (!target || target.pkg === from) return;
      const data = { from: from === 'test' ? 'test/' : `packages/${from}`, to: target.pkg, spec };
      if (!ALLOWED[from]?.includes(target.pkg)) context.report({ node, messageId: 'forbidden', data });
      else if (target.deep) context.report({ node, messageId: 'deep', data });
    };
    return {
      ImportDeclaration: (node) => check(node.source, node.source.value),
      ExportNamedDeclaration: (node) => node.source && check(node.source, node.source.value),
      ExportAllDeclaration: (node) => check(node.source, node.source.value),
      ImportExpression: (node) => node.source.type === 'Literal' && check(node.source, node.source.value),
    };
  },
};

export default { rules: { 'package-boundaries': packageBoundaries } };
