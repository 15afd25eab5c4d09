/**
 * `spotctl init`: writes a commented `spotctl.toml` for the project in the current directory,
 * from what it finds there (dependency files, a checkpoints folder). Never overwrites one.
 */
import { existsSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { PROJECT_FILE, findProjectFile } from '../cli/project-file.ts';

/** Folder names taken for the job's checkpoint folder, most usual first. */
const CHECKPOINT_DIRS = ['checkpoints', 'checkpoint', 'ckpt', 'ckpts'];

function isDir(p: string): boolean {
  return existsSync(p) && statSync(p).isDirectory();
}

/** What init found in the project, and so what the file says. */
export interface ProjectFacts {
  dependencies: 'uv.lock' | 'requirements.txt' | 'pyproject.toml' | undefined;
  checkpointDir: string | undefined;
}

export function detectProject(dir: string): ProjectFacts {
  const has = (name: string) => existsSync(path.join(dir, name));
  const dependencies = has('uv.lock')
    ? 'uv.lock'
    : has('requirements.txt')
      ? 'requirements.txt'
      : has('pyproject.toml')
        ? 'pyproject.toml'
        : undefined;
  return { dependencies, checkpointDir: CHECKPOINT_DIRS.find((name) => isDir(path.join(dir, name))) };
}

const DEPENDENCY_NOTE: Record<NonNullable<ProjectFacts['dependencies']>, string> = {
  'uv.lock': "uv.lock found: each run installs exactly the locked versions (uv sync --frozen) into the workdir's .venv.",
  'requirements.txt': "requirements.txt found: each run installs it into the workdir's .venv (pip, or uv when the host has it).",
  'pyproject.toml': "pyproject.toml found: each run installs the project (pip install .) into the workdir's .venv.",
};

/** The file's text: every setting commented out except what the project showed. */
export function projectFileText(facts: ProjectFacts): string {
  const lines = [
    '# spotctl.toml: the settings `spotctl run` uses for this project (written by `spotctl init`).',
    '# Any `spotctl run` option works here by its long name; flags on the command line win over this',
    '# file. Check the merged result with: spotctl run --show-config',
    "# Paths on this machine (sync, identity, ...) are relative to this file's folder.",
    '',
    '# Where to run: aws (a new EC2 spot instance), ssh (with host = "user@host"), or local.',
    '# provider = "aws"',
    '',
    '# EC2 sizing and placement (aws only).',
    '# workers = 4',
    '# regions = ["us-east-1", "eu-west-1"]',
    '',
    '# Stop an idle agent (and its instance) after this long; stop the job after max-runtime.',
    '# idle-timeout = "5m"',
    '# max-runtime = "12h"',
    '',
    '# Environment for the job.',
    '# env = { WANDB_MODE = "offline" }',
    '',
    facts.dependencies
      ? `# Dependencies: ${DEPENDENCY_NOTE[facts.dependencies]}`
      : '# Dependencies: requirements.txt, pyproject.toml or uv.lock here are installed for each run.',
    '# no-install = true   # skip that',
    '',
    '# A command run once per host before the job (system packages, data downloads); it runs again',
    '# when it or the dependency files change.',
    '# setup = "sudo apt-get install -y ffmpeg"',
    '',
  ];
  if (facts.checkpointDir) {
    lines.push(
      `# Checkpoints: the job writes them to ${facts.checkpointDir}/ (in $SPOTCTL_CHECKPOINT_DIR); they are synced as sets.`,
      `checkpoint-dir = ${JSON.stringify(facts.checkpointDir)}`,
      '# checkpoint-to = "s3://my-bucket/spotctl"',
    );
  } else {
    lines.push(
      '# Checkpoints: the folder the job writes them to, and where the sets go.',
      '# checkpoint-dir = "checkpoints"',
      '# checkpoint-to = "s3://my-bucket/spotctl"',
    );
  }
  lines.push(
    '',
    '# A profile adds to or overrides the settings above: spotctl run --profile big train.py',
    '# [profile.big]',
    '# workers = 32',
    '',
  );
  return lines.join('\n');
}

export default defineCommand<{ json?: boolean }>({
  name: 'init',
  description: 'Write a commented spotctl.toml for the project in the current directory',
  examples: ['spotctl init', 'spotctl run --show-config'],
  configure: (cmd) => cmd.option('--json', 'JSON output'),
  run: (_args, _options, { out }) => {
    const dir = process.cwd();
    const file = path.join(dir, PROJECT_FILE);
    if (existsSync(file)) {
      throw new UserError('SPOTCTL_USAGE', `${PROJECT_FILE} already exists here`, {
        remediation: `edit it, or move it away and run spotctl init again (see what it sets: spotctl run --show-config)`,
        exitCode: 2,
      });
    }
    const outer = findProjectFile(path.dirname(dir));
    const facts = detectProject(dir);
    writeFileSync(file, projectFileText(facts), { flag: 'wx' });
    const found = [facts.dependencies, facts.checkpointDir ? `${facts.checkpointDir}/` : undefined].filter(Boolean).join(', ');
    out.result(
      { file, ...facts, ...(outer ? { shadows: outer } : {}) },
      `wrote ${PROJECT_FILE}${found ? ` (found ${found})` : ''}; see the merged settings with: spotctl run --show-config${outer ? ` (it takes the place of ${outer} for runs from here)` : ''}`,
    );
    return Promise.resolve(0);
  },
});
