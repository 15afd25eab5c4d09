/**
 * The shell script that installs a project's Python dependencies into `<workdir>/.venv`, run on
 * the host (or locally). One script for every provider, so behaviour cannot drift.
 */
import { shellQuote } from '../transport/shell.ts';

export const DEPS_MARKER_NONE = 'spotctl-deps: nothing to install';

/** Said when a project has a uv.lock but the host has no uv (the aws image installs it: ami/install.sh). */
export const UV_MISSING = 'spotctl-deps: uv.lock found but uv is not installed on the host: installing without the lock (install uv there to honour it, e.g. pipx install uv)';

export function depsInstallScript(workdir: string): string {
  const q = shellQuote(workdir);
  return [
    'set -e',
    `cd ${q}`,
    'if [ -f uv.lock ] && command -v uv >/dev/null 2>&1; then',
    // --frozen: exactly the locked versions, and an out-of-date lock is not rewritten on the host.
    '  echo "spotctl-deps: uv sync --frozen (uv.lock)"; uv sync --frozen',
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
    '    if [ -f requirements.txt ]; then echo "spotctl-deps: pip install -r requirements.txt"; .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt; fi',
    '    if [ -f pyproject.toml ] && [ ! -f requirements.txt ]; then echo "spotctl-deps: pip install ."; .venv/bin/python -m pip install --disable-pip-version-check -q .; fi',
    '  fi',
    'else',
    `  echo "${DEPS_MARKER_NONE}"`,
    'fi',
  ].join('\n');
}

