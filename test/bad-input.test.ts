/**
 * Bad command lines, through the real `spotctl` executable: each is refused before anything
 * happens (no run record, no connection, no AWS call), with one line that says what to do.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SPOTCTL_BIN, collect, runSpotctl } from './helpers/cli.ts';
import { tmpDir } from './helpers/tmp.ts';

/** Should anything slip through to the AWS SDK, it meets a closed loopback port, never AWS. */
const NO_AWS = { AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_REGION: 'us-east-1' };

const cases: [string, string[], RegExp][] = [
  ['empty --grace', ['run', '--provider', 'local', '--grace', '', '--', 'true'], /^--grace is empty.*leave it out/],
  ['empty --idle-timeout', ['run', '--provider', 'local', '--idle-timeout=', '--', 'true'], /^--idle-timeout is empty/],
  ['empty --max-runtime', ['run', '--provider', 'local', '--max-runtime', ' ', '--', 'true'], /^--max-runtime is empty/],
  ['empty --host', ['run', '--host', '', '--', 'true'], /^--host is empty/],
  ['empty --identity', ['run', '--identity', '', '--', 'true'], /^--identity is empty/],
  ['empty --provider', ['run', '--provider', '', '--', 'true'], /^--provider is empty/],
  ['empty --region', ['run', '--provider', 'aws', '--region', '', '--', 'true'], /^--region is empty/],
  ['empty --sync', ['run', '--provider', 'local', '--sync', '.', '--sync', '', '--', 'true'], /^--sync is empty/],
  ['--grace 30d', ['run', '--provider', 'local', '--grace', '30d', '--', 'true'], /^--grace 30d is too long: the limit is .*2\^31-1 ms/],
  [
    '--max-runtime overflow',
    ['run', '--provider', 'local', '--max-runtime', '99999999999h', '--', 'true'],
    /^--max-runtime 99999999999h is too long/,
  ],
  [
    '--simulate-interruption overflow',
    ['run', '--provider', 'local', '--simulate-interruption', '99999999999h', '--', 'true'],
    /^--simulate-interruption 99999999999h is too long/,
  ],
  [
    'unknown rebalance signal',
    ['run', '--provider', 'local', '--on-rebalance', 'signal:NOPE', '--', 'true'],
    /^--on-rebalance: unknown signal 'NOPE'.*signal:USR1/,
  ],
  [
    'unknown region',
    ['run', '--provider', 'aws', '--region', 'xx-fake-9', '--', 'true'],
    /^--region: unknown region 'xx-fake-9'.*SPOTCTL_EXTRA_REGIONS/,
  ],
  [
    'unknown region in --regions',
    ['run', '--provider', 'aws', '--regions', 'us-east-1,eu-fake-1', '--', 'true'],
    /^--regions: unknown region 'eu-fake-1'/,
  ],
  ['prices: unknown region', ['prices', '--region', 'xx-fake-9'], /^--region: unknown region 'xx-fake-9'/],
  [
    'run --workers abc',
    ['run', '--provider', 'aws', '--workers', 'abc', '--', 'true'],
    /^--workers must be a whole number from 1 to \d+, got 'abc'/,
  ],
  ['run -w abc', ['run', '--provider', 'aws', '-w', 'abc', '--', 'true'], /^--workers must be a whole number/],
  ['prices -w abc', ['prices', '-w', 'abc'], /^--workers must be a whole number/],
  [
    '--workers on local',
    ['run', '--provider', 'local', '-w', '8', '--', 'true'],
    /^--workers only applies to --provider aws, not local → drop --workers/,
  ],
  ['--no-ht on ssh', ['run', '--host', 'root@127.0.0.1', '--no-ht', '--', 'true'], /^--no-ht only applies to --provider aws, not ssh/],
  [
    '--spot-fallback on local',
    ['run', '--provider', 'local', '--spot-fallback', 'on-demand', '--', 'true'],
    /^--spot-fallback only applies to --provider aws/,
  ],
  ['--region on local', ['run', '--provider', 'local', '--region', 'us-east-1', '--', 'true'], /^--region only applies to --provider aws/],
  ['--no-recover on local', ['run', '--provider', 'local', '--no-recover', '--', 'true'], /^--no-recover only applies to --provider aws/],
  [
    '--max-attempts 0',
    ['run', '--provider', 'aws', '--max-attempts', '0', '--', 'true'],
    /^--max-attempts wants a whole number ≥ 1, got '0'/,
  ],
  [
    '--recovery-cooldown abc',
    ['run', '--provider', 'aws', '--recovery-cooldown', 'abc', '--', 'true'],
    /^invalid duration for --recovery-cooldown: 'abc'/,
  ],
  ['stop --grace abc', ['stop', 'last', '--grace', 'abc'], /^invalid duration for --grace: 'abc'/],
  ['logs --from abc', ['logs', 'last', '--from', 'abc'], /^--from wants a whole number ≥ 1, got 'abc'/],
  ['attach --from 0', ['attach', 'last', '--from', '0'], /^--from wants a whole number ≥ 1, got '0'/],
  ['ps --limit x', ['ps', '--limit', 'x'], /^--limit wants a whole number/],
  ['ps --region without --cloud', ['ps', '--region', 'us-east-1'], /^--region only applies with --cloud/],
  ['checkpoints pull --seq abc', ['checkpoints', 'pull', 'last', '--seq', 'abc'], /^--seq wants a whole number ≥ 1, got 'abc'/],
  ['checkpoints ls --seq', ['checkpoints', 'ls', 'last', '--seq', '2'], /^--seq only applies to pull/],
  ['teardown in an unknown region', ['teardown', '--all', '--region', 'xx-fake-9'], /^--region: unknown region 'xx-fake-9'/],
  ['gc with an empty --min-age', ['gc', '--min-age', ''], /^--min-age is empty/],
];

describe('bad command lines are refused before anything happens', () => {
  for (const [name, args, pattern] of cases) {
    it(`${name}: one line, exit 2, no run recorded`, async () => {
      await using home = await tmpDir();
      const r = await runSpotctl(args, { home: home.path, env: NO_AWS });
      expect(r.code, r.stderr).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^spotctl error: /);
      expect(lines[0]?.replace(/^spotctl error: /, '')).toMatch(pattern);
      expect(readdirSync(home.path).filter((f) => f !== 'runs' || readdirSync(`${home.path}/runs`).length > 0)).toEqual([]);
    });
  }
});

describe('an unreachable AWS endpoint', () => {
  it('is reported as a network problem with what to check, not as a bug', async () => {
    await using home = await tmpDir();
    // Port 9 on loopback: connection refused, the same path as a DNS failure or a dead proxy.
    const r = await runSpotctl(['prices', '--region', 'us-east-1'], { home: home.path, env: NO_AWS });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(
      /spotctl error: could not reach the AWS endpoint of us-east-1 over the network .*ECONNREFUSED.* → check this machine's internet connection/,
    );
    expect(r.stderr).not.toMatch(/looks like a bug/);
  });
});

describe('job arguments are UTF-8 text', () => {
  /** Runs spotctl with `printf`-made bytes as the job's argument: Node's spawn only passes strings. */
  const withBytes = (home: string, printfBytes: string) => {
    const child = spawn(
      'bash',
      ['-c', `exec "$0" "$1" run --provider local --no-install -- echo "$(printf '${printfBytes}')"`, process.execPath, SPOTCTL_BIN],
      {
        env: { ...process.env, SPOTCTL_HOME: home, NO_COLOR: '1' },
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    child.stdin.end();
    return collect(child);
  };

  it('an argument with bytes that are not UTF-8 is refused, not passed on with U+FFFD in their place', async () => {
    await using home = await tmpDir();
    const r = await withBytes(home.path, 'a\\377b');
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^spotctl error: argument 7 \('a\uFFFDb'\) is not valid UTF-8 text/);
  });

  it('a real U+FFFD, written as UTF-8, reaches the job', async () => {
    await using home = await tmpDir();
    const r = await withBytes(home.path, 'a\\357\\277\\275b');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('a\uFFFDb\n');
  });
});
