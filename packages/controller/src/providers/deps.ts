/**
 * The shell script that installs a project's Python dependencies into `<workdir>/.venv`, run on
 * the host (or locally). One script for every provider, so behaviour cannot drift.
 */
import type { Output } from '../output/output.ts';
import { shellQuote } from '../transport/shell.ts';

export const DEPS_MARKER_NONE = 'spotctl-deps: nothing to install';

/** Said when a project has a uv.lock but the host has no uv (the aws image installs it: ami/install.sh). */
export const UV_MISSING =
  'spotctl-deps: uv.lock found but uv is not installed on the host: installing without the lock (install uv there to honour it, e.g. pipx install uv)';

export const DEPS_MARKER_REUSED = 'spotctl-deps: reusing venv';

/**
 * Builds the venv for a requirements.txt in a temp dir beside the cache, fixes the paths the venv
 * wrote into its scripts, and renames it into place: two runs building the same key at once both
 * succeed, the loser's copy is dropped. Prints the key. Run with the venv's python (argv: tmp final).
 */
const PLACE_VENV_PY = [
  'import os, shutil, sys',
  'tmp, final = sys.argv[1], sys.argv[2]',
  'bin_dir = os.path.join(tmp, "bin")',
  'for name in os.listdir(bin_dir):',
  '    p = os.path.join(bin_dir, name)',
  '    if os.path.islink(p) or not os.path.isfile(p): continue',
  '    with open(p, "rb") as f: data = f.read()',
  '    if b"\\0" in data[:1024] or tmp.encode() not in data: continue',
  '    with open(p, "wb") as f: f.write(data.replace(tmp.encode(), final.encode()))',
  'try:',
  '    os.rename(tmp, final)',
  'except OSError:',
  '    shutil.rmtree(tmp, ignore_errors=True)',
  '    print("spotctl-deps: another run built the same venv first")',
].join('\n');

/** The cache key: the dependency file, the interpreter and the machine (a venv holds platform binaries). */
const VENV_KEY_PY = [
  'import hashlib, platform, sys',
  'h = hashlib.sha256()',
  'h.update((sys.argv[1] + "\\n" + sys.version + "\\n" + platform.machine() + "\\n").encode())',
  'h.update(open("requirements.txt", "rb").read())',
  'print(h.hexdigest()[:16])',
].join('\n');

export interface DepsScriptOptions {
  /**
   * A directory of venvs shared by the runs on this host, one per hash of requirements.txt (plus
   * interpreter and installer): a repeated run links `<workdir>/.venv` to the cached venv instead
   * of installing again. Projects installed from pyproject.toml or uv.lock, and requirements that
   * point into the project (`-e .`, `-r other.txt`, local paths), are built in the workdir.
   * @default none: the venv is built in the workdir every run
   */
  venvCache?: string;
}

export function depsInstallScript(workdir: string, options: DepsScriptOptions = {}): string {
  const q = shellQuote(workdir);
  const cached = options.venvCache
    ? [
        // Only a self-contained requirements.txt can be shared: anything naming project files would
        // freeze the first run's copy of them into the cache.
        "elif [ -f requirements.txt ] && ! grep -Eq '^[[:space:]]*(-e|--editable|-r|--requirement|-c|--constraint|\\.|/|file:)' requirements.txt && command -v python3 >/dev/null 2>&1; then",
        '  if command -v uv >/dev/null 2>&1; then tool=uv; else tool=pip; fi',
        `  cache=${shellQuote(options.venvCache)}`,
        `  key=$(python3 -c ${shellQuote(VENV_KEY_PY)} "$tool")`,
        '  final="$cache/$key"',
        '  if [ -x "$final/bin/python" ]; then',
        `    echo "${DEPS_MARKER_REUSED} $key"`,
        '  else',
        '    mkdir -p "$cache"',
        '    tmp="$final.tmp-$$"',
        '    rm -rf "$tmp"',
        '    echo "spotctl-deps: $tool install -r requirements.txt (new venv $key)"',
        '    if [ "$tool" = uv ]; then',
        '      uv venv -q "$tmp"',
        '      VIRTUAL_ENV="$tmp" uv pip install -r requirements.txt',
        '    else',
        '      python3 -m venv "$tmp" || { echo "python3 -m venv failed: install python3-venv on the host" >&2; exit 3; }',
        '      "$tmp/bin/python" -m pip install --disable-pip-version-check -r requirements.txt',
        '    fi',
        `    "$tmp/bin/python" -c ${shellQuote(PLACE_VENV_PY)} "$tmp" "$final"`,
        '  fi',
        // Marks the venv as used now: `spotctl prune --older-than` drops venvs no run used for that long.
        '  touch "$final/.spotctl-used"',
        '  rm -rf .venv',
        '  ln -s "$final" .venv',
      ]
    : [];
  return [
    'set -e',
    `cd ${q}`,
    'if [ -f uv.lock ] && command -v uv >/dev/null 2>&1; then',
    // --frozen: exactly the locked versions, and an out-of-date lock is not rewritten on the host.
    '  echo "spotctl-deps: uv sync --frozen (uv.lock)"; uv sync --frozen',
    ...cached,
    'elif [ -f requirements.txt ] || [ -f pyproject.toml ]; then',
    // Never drop the lock silently: the versions installed below may differ from the locked ones.
    `  if [ -f uv.lock ]; then echo "${UV_MISSING}" >&2; fi`,
    '  if command -v uv >/dev/null 2>&1; then',
    '    [ -x .venv/bin/python ] || uv venv -q .venv',
    '    if [ -f requirements.txt ]; then echo "spotctl-deps: uv pip install -r requirements.txt"; VIRTUAL_ENV=.venv uv pip install -r requirements.txt; fi',
    '    if [ -f pyproject.toml ] && [ ! -f requirements.txt ]; then echo "spotctl-deps: uv pip install ."; VIRTUAL_ENV=.venv uv pip install .; fi',
    '  else',
    '    command -v python3 >/dev/null 2>&1 || { echo "python3 is not installed on the host" >&2; exit 3; }',
    '    [ -x .venv/bin/python ] || python3 -m venv .venv || { echo "python3 -m venv failed: install python3-venv on the host" >&2; exit 3; }',
    '    if [ -f requirements.txt ]; then echo "spotctl-deps: pip install -r requirements.txt"; .venv/bin/python -m pip install --disable-pip-version-check -r requirements.txt; fi',
    '    if [ -f pyproject.toml ] && [ ! -f requirements.txt ]; then echo "spotctl-deps: pip install ."; .venv/bin/python -m pip install --disable-pip-version-check .; fi',
    '  fi',
    'else',
    `  echo "${DEPS_MARKER_NONE}"`,
    'fi',
  ].join('\n');
}

/**
 * Shows what the install script is doing: on a TTY one progress line naming what pip or uv is at
 * (`Collecting numpy`), with --json step-progress events plus the raw output, otherwise the raw
 * output as before. `finish` prints the step: installed, reused a cached venv, or nothing to do.
 */
export class DepsReporter implements Disposable {
  private readonly started = performance.now();
  private readonly progress;
  private outcome: 'none' | 'reused' | 'installed' | undefined;
  private reusedKey = '';

  constructor(private readonly out: Output) {
    this.progress = out.progress('deps', 'installing Python dependencies');
  }

  /** A chunk of the script's stdout or stderr. */
  chunk(text: string): void {
    for (const raw of text.split(/[\r\n]+/)) {
      const line = raw.trim();
      if (!line) continue;
      if (line.includes(DEPS_MARKER_NONE)) {
        this.outcome ??= 'none';
        continue;
      }
      if (line.startsWith(DEPS_MARKER_REUSED)) {
        this.outcome = 'reused';
        this.reusedKey = line.slice(DEPS_MARKER_REUSED.length).trim();
      } else if (this.outcome !== 'reused') this.outcome = 'installed';
      this.progress.update(line.replace(/^spotctl-deps: /, ''));
    }
    if (!this.progress.live && !text.includes(DEPS_MARKER_NONE)) this.out.setupOutput(text);
  }

  /** The script succeeded: says what it did (nothing when there was nothing to install). */
  finish(): void {
    this.progress.end();
    const ms = performance.now() - this.started;
    if (this.outcome === 'reused') this.out.step('deps', `reused the cached venv ${this.reusedKey} (same requirements.txt)`, ms);
    else if (this.outcome === 'installed') this.out.step('deps', 'installed Python dependencies', ms);
  }

  [Symbol.dispose](): void {
    this.progress.end();
  }
}
