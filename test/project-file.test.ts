/**
 * The project file (`spotctl.toml`), through the real `spotctl` executable with real files:
 * found upward from the current directory, flags over profile over file over defaults,
 * `--show-config`, and errors that name the file, the line and the fix.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { tmpDir } from './helpers/tmp.ts';

/** Should anything slip through to the AWS SDK, it meets a closed loopback port, never AWS. */
const NO_AWS = { AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_REGION: 'us-east-1', SPOTCTL_PROVIDER: '' };

interface Setting {
  key: string;
  value: unknown;
  source: string;
}

async function showConfig(
  cwd: string,
  home: string,
  args: string[] = [],
): Promise<{ file: string | null; profile: string | null; settings: Map<string, Setting> }> {
  const r = await runSpotctl(['run', '--show-config', '--json', ...args], { home, cwd, env: NO_AWS, timeoutMs: 30_000 });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const parsed = JSON.parse(r.stdout) as { file: string | null; profile: string | null; settings: Setting[] };
  return { ...parsed, settings: new Map(parsed.settings.map((s) => [s.key, s])) };
}

const PROJECT = [
  '# a project that runs on EC2',
  'provider = "aws"',
  'workers = 8',
  'idle-timeout = "10m"',
  'regions = ["us-east-1", "eu-west-1"]',
  'env = { WANDB_MODE = "offline", SEED = 7 }',
  'sync = ["src", "data"]',
  '',
  '[profile.big]',
  'workers = 32',
  'no-ht = true',
  '',
  '[profile.here]',
  'provider = "local"',
  'workers = 2',
].join('\n');

describe('spotctl.toml', () => {
  it('is found from a subdirectory, and its values and their lines show in --show-config', async () => {
    await using dir = await tmpDir();
    writeFileSync(path.join(dir.path, 'spotctl.toml'), PROJECT);
    const sub = path.join(dir.path, 'src', 'deep');
    mkdirSync(sub, { recursive: true });
    const { file, settings } = await showConfig(sub, path.join(dir.path, 'home'));
    expect(file).toBe(path.join(dir.path, 'spotctl.toml'));
    expect(settings.get('workers')).toMatchObject({ value: '8', source: expect.stringMatching(/spotctl\.toml:3$/) as unknown });
    expect(settings.get('idle-timeout')).toMatchObject({ value: '10m', source: expect.stringMatching(/spotctl\.toml:4$/) as unknown });
    expect(settings.get('regions')?.value).toBe('us-east-1,eu-west-1');
    expect(settings.get('env')?.value).toEqual(['WANDB_MODE=offline', 'SEED=7']);
    // Paths are relative to the file's directory, not to where spotctl was started.
    expect(settings.get('sync')?.value).toEqual([path.join(dir.path, 'src'), path.join(dir.path, 'data')]);
    expect(settings.get('grace')).toMatchObject({ value: '90s', source: 'default' });
  });

  it('takes flags over the chosen profile, the profile over the file, the file over defaults', async () => {
    await using dir = await tmpDir();
    writeFileSync(path.join(dir.path, 'spotctl.toml'), PROJECT);
    const home = path.join(dir.path, 'home');
    const big = await showConfig(dir.path, home, ['--profile', 'big', '--idle-timeout', '1h']);
    expect(big.profile).toBe('big');
    expect(big.settings.get('workers')).toMatchObject({ value: '32', source: 'spotctl.toml:10 [profile.big]' });
    expect(big.settings.get('no-ht')).toMatchObject({ value: true, source: 'spotctl.toml:11 [profile.big]' });
    expect(big.settings.get('idle-timeout')).toMatchObject({ value: '1h', source: 'flag' });
    expect(big.settings.get('provider')).toMatchObject({ value: 'aws', source: 'spotctl.toml:2' });
    const flagged = await showConfig(dir.path, home, ['-w', '3']);
    expect(flagged.settings.get('workers')).toMatchObject({ value: '3', source: 'flag' });
    expect(flagged.settings.get('no-ht')).toMatchObject({ value: false, source: 'default' });
  });

  it('prints the merged settings as text with their sources', async () => {
    await using dir = await tmpDir();
    writeFileSync(path.join(dir.path, 'spotctl.toml'), PROJECT);
    const r = await runSpotctl(['run', '--show-config', '--profile', 'big'], {
      home: path.join(dir.path, 'home'),
      cwd: dir.path,
      env: NO_AWS,
      timeoutMs: 30_000,
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^# spotctl\.toml, profile big$/m);
    expect(r.stdout).toMatch(/^workers = "32" +# spotctl\.toml:10 \[profile\.big\]$/m);
    expect(r.stdout).toMatch(/^grace = "90s" +# default$/m);
  });

  it("runs the job with the file's settings (local provider, env and sync from the file)", async () => {
    await using dir = await tmpDir();
    mkdirSync(path.join(dir.path, 'src'));
    writeFileSync(path.join(dir.path, 'src', 'hello.txt'), 'hello from src\n');
    writeFileSync(
      path.join(dir.path, 'spotctl.toml'),
      ['provider = "local"', 'sync = ["src"]', 'idle-timeout = "2s"', 'env = { GREETING = "from-the-file" }'].join('\n'),
    );
    const cwd = path.join(dir.path, 'src');
    const r = await runSpotctl(['run', '--', 'sh', '-c', 'echo "$GREETING"; cat hello.txt'], {
      home: path.join(dir.path, 'home'),
      cwd,
      env: NO_AWS,
      timeoutMs: 60_000,
    });
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('from-the-file\nhello from src\n');
  });

  const errors: [string, string, string[], RegExp][] = [
    [
      'an unknown key, with a suggestion',
      'provider = "aws"\nworker = 8\n',
      [],
      /^spotctl\.toml:2: unknown key 'worker' → did you mean workers\? /,
    ],
    [
      'an unknown key in a profile not chosen',
      'provider = "local"\n\n[profile.x]\ngpu-count = 1\n',
      [],
      /^spotctl\.toml:4 \[profile\.x\]: unknown key 'gpu-count'/,
    ],
    [
      "a bad value, checked by the flag's own check",
      'provider = "aws"\nworkers = 0\n',
      [],
      /^spotctl\.toml:2: workers: --workers must be a whole number from 1 to \d+, got '0' → fix workers in spotctl\.toml/,
    ],
    [
      'a bad duration',
      'provider = "local"\n\nidle-timeout = "5x"\n',
      [],
      /^spotctl\.toml:3: idle-timeout: invalid duration for --idle-timeout: '5x'/,
    ],
    ['an empty value', 'provider = "local"\nhost = ""\n', [], /^spotctl\.toml:2: host: --host is empty/],
    [
      'an aws-only key for the local provider',
      'workers = 8\nprovider = "local"\n',
      [],
      /^spotctl\.toml:1: workers: --workers only applies to --provider aws, not local/,
    ],
    [
      'a switch given text',
      'detach = "yes"\n',
      [],
      /^spotctl\.toml:1: detach is a switch \(--detach\), got "yes" → write detach = true \(or false\)/,
    ],
    ['a value given a table', 'grace = { a = 1 }\n', [], /^spotctl\.toml:1: grace wants one value/],
    [
      'a value the flag refuses',
      'provider = "aws"\nspot-fallback = "maybe"\n',
      [],
      /^spotctl\.toml:2: spot-fallback: --spot-fallback: unknown market 'maybe' → fix spot-fallback in spotctl\.toml/,
    ],
    ['broken TOML', 'provider = "local"\nworkers = [3\n', [], /^spotctl\.toml:\d+: not valid TOML: .* → fix line \d+ of spotctl\.toml/],
    [
      'an unknown profile',
      'provider = "local"\n[profile.big]\nworkers = 2\n',
      ['--profile', 'huge'],
      /^--profile huge: spotctl\.toml has no \[profile\.huge\] → use one of: --profile big/,
    ],
  ];
  for (const [name, text, args, expected] of errors) {
    it(`refuses ${name}, naming file and line, before anything happens`, async () => {
      await using dir = await tmpDir();
      writeFileSync(path.join(dir.path, 'spotctl.toml'), text);
      const home = path.join(dir.path, 'home');
      const r = await runSpotctl(['run', ...args, '--', 'true'], { home, cwd: dir.path, env: NO_AWS, timeoutMs: 30_000 });
      expect(r.stderr.replace(/^spotctl error: /, '')).toMatch(expected);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.code).toBe(2);
    });
  }

  it('refuses --profile without a project file', async () => {
    await using dir = await tmpDir();
    const r = await runSpotctl(['run', '--profile', 'big', '--', 'true'], {
      home: path.join(dir.path, 'home'),
      cwd: dir.path,
      env: NO_AWS,
      timeoutMs: 30_000,
    });
    expect(r.stderr).toMatch(/--profile big: no spotctl\.toml here or in any parent directory → create one with: spotctl init/);
    expect(r.code).toBe(2);
  });
});

describe('spotctl init', () => {
  it('writes a commented spotctl.toml from what the project has, which run then reads cleanly', async () => {
    await using dir = await tmpDir();
    writeFileSync(path.join(dir.path, 'requirements.txt'), 'numpy\n');
    mkdirSync(path.join(dir.path, 'ckpt'));
    const home = path.join(dir.path, 'home');
    const r = await runSpotctl(['init'], { home, cwd: dir.path, env: NO_AWS, timeoutMs: 30_000 });
    expect(r.stderr).toMatch(/wrote spotctl\.toml \(found requirements\.txt, ckpt\/\)/);
    expect(r.code).toBe(0);
    const text = readFileSync(path.join(dir.path, 'spotctl.toml'), 'utf8');
    expect(text).toMatch(/^# Dependencies: requirements\.txt found/m);
    expect(text).toMatch(/^checkpoint-dir = "ckpt"$/m);
    expect(text).toMatch(/^# setup = /m);
    const { settings } = await showConfig(dir.path, home);
    expect(settings.get('checkpoint-dir')).toMatchObject({
      value: 'ckpt',
      source: expect.stringMatching(/^spotctl\.toml:\d+$/) as unknown,
    });
  });

  it('writes a file whose every commented example is valid once uncommented', async () => {
    await using dir = await tmpDir();
    const home = path.join(dir.path, 'home');
    expect((await runSpotctl(['init'], { home, cwd: dir.path, env: NO_AWS, timeoutMs: 30_000 })).code).toBe(0);
    const file = path.join(dir.path, 'spotctl.toml');
    // Uncomment `# key = value` and `# [table]` lines: a user following the file's own hints must not meet an error.
    const uncommented = readFileSync(file, 'utf8')
      .replace(/^# ((?:[a-z-]+ = .*)|(?:\[profile\.[a-z]+\]))$/gm, '$1')
      .replace(/ {3}# skip that$/m, '');
    writeFileSync(file, uncommented);
    const { settings } = await showConfig(dir.path, home, ['--profile', 'big']);
    expect(settings.get('workers')).toMatchObject({ value: '32' });
    expect(settings.get('setup')?.source).toMatch(/^spotctl\.toml:\d+$/);
  });

  it('refuses to overwrite an existing spotctl.toml', async () => {
    await using dir = await tmpDir();
    writeFileSync(path.join(dir.path, 'spotctl.toml'), 'workers = 8\n');
    const r = await runSpotctl(['init'], { home: path.join(dir.path, 'home'), cwd: dir.path, env: NO_AWS, timeoutMs: 30_000 });
    expect(r.stderr).toMatch(/^spotctl error: spotctl\.toml already exists here → edit it/);
    expect(r.code).toBe(2);
    expect(readFileSync(path.join(dir.path, 'spotctl.toml'), 'utf8')).toBe('workers = 8\n');
  });
});
