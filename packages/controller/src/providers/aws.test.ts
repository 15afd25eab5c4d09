/** The aws provider's option parsing and its test-only settings (no AWS involved). */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UserError } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { EC2_SHUTDOWN_ACTION, shutdownActionFor } from './aws.ts';
import { parseAwsOptions } from './aws-options.ts';
import { TEST_ENV, readTestOverrides, testHostOverride, testTargetFor } from './test-overrides.ts';

const instance = { instanceId: 'i-0abc', region: 'us-east-2' };

describe('shutdown action', () => {
  it('on EC2 powers off (terminate), never halt', () => {
    expect(shutdownActionFor(instance, undefined)).toEqual({ kind: 'command', argv: ['sudo', 'shutdown', '-h', 'now'] });
    expect(EC2_SHUTDOWN_ACTION).not.toMatchObject({ argv: expect.arrayContaining(['halt']) });
  });
  it('a test host never gets the real shutdown: only its own command, or a plain exit', () => {
    const host = testHostOverride({ [TEST_ENV.host]: 'root@10.213.0.2:22' })!;
    expect(shutdownActionFor(instance, host)).toEqual({ kind: 'exit' });
    const withCmd = testHostOverride({
      [TEST_ENV.host]: 'root@10.213.0.2',
      [TEST_ENV.shutdownArgv]: '["curl","-d","InstanceId.1={instanceId}","http://x/{region}"]',
    })!;
    expect(shutdownActionFor(instance, withCmd)).toEqual({
      kind: 'command',
      argv: ['curl', '-d', 'InstanceId.1=i-0abc', 'http://x/us-east-2'],
    });
  });
});

describe('test host override', () => {
  it('is off unless SPOTCTL_TEST_INSTANCE_HOST is set, and its companions need it', () => {
    expect(testHostOverride({})).toBeUndefined();
    expect(() => testHostOverride({ [TEST_ENV.shutdownArgv]: '["true"]' })).toThrow(UserError);
  });
  it('parses the host and takes the key and known_hosts overrides', () => {
    expect(
      testHostOverride({ [TEST_ENV.host]: 'root@10.213.0.2:2222', [TEST_ENV.identity]: '/k/id', [TEST_ENV.knownHosts]: '/k/kh' }),
    ).toEqual({
      target: { user: 'root', host: '10.213.0.2', port: 2222, identityFile: '/k/id', knownHostsFile: '/k/kh' },
    });
    expect(() => testHostOverride({ [TEST_ENV.host]: 'root@10.213.0.2', [TEST_ENV.shutdownArgv]: '"sudo shutdown"' })).toThrow(
      /JSON array/,
    );
  });
  it('a hosts file gives each instance its own host, once its entry is there', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'spotctl-hosts-'));
    try {
      const file = path.join(dir, 'hosts.json');
      const override = testHostOverride({ [TEST_ENV.hosts]: file });
      expect(override).toEqual({ hostsFile: file });
      expect(() => testHostOverride({ [TEST_ENV.hosts]: file, [TEST_ENV.host]: 'root@10.213.0.2' })).toThrow(/cannot be used together/);
      writeFileSync(file, JSON.stringify({ 'i-1': 'root@10.213.0.2:22', 'i-2': 'root@10.213.0.6:22' }));
      expect(await testTargetFor(override!, 'i-2')).toEqual({ user: 'root', host: '10.213.0.6', port: 22 });
      const gone = new AbortController();
      gone.abort(new Error('cancelled'));
      await expect(testTargetFor(override!, 'i-3', gone.signal)).rejects.toThrow('cancelled');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('is read once into one object with the bake root, which also needs the host', () => {
    expect(readTestOverrides({})).toEqual({});
    expect(readTestOverrides({ [TEST_ENV.host]: 'root@10.213.0.2', [TEST_ENV.bakeRoot]: '/tmp/bake' })).toEqual({
      host: { target: { user: 'root', host: '10.213.0.2' } },
      bakeRoot: '/tmp/bake',
    });
    expect(() => readTestOverrides({ [TEST_ENV.bakeRoot]: '/tmp/bake' })).toThrow(UserError);
  });
});

describe('parseAwsOptions', () => {
  it('defaults: spot, 4 workers, x86, SMT on', () => {
    expect(parseAwsOptions({ region: 'us-east-2' })).toMatchObject({
      regions: ['us-east-2'],
      workers: 4,
      architecture: 'x86_64',
      noHt: false,
      market: 'spot',
      spotFallback: 'none',
    });
  });
  it('flags map onto the launch', () => {
    expect(
      parseAwsOptions({ regions: 'us-east-1,eu-west-1', workers: '8', arm: true, ht: false, onDemand: true, families: 'c7g' }),
    ).toMatchObject({
      regions: ['us-east-1', 'eu-west-1'],
      workers: 8,
      architecture: 'arm64',
      noHt: true,
      market: 'on-demand',
      families: ['c7g'],
    });
  });
  it('rejects nonsense as a UserError', () => {
    for (const bad of [
      { workers: '0' },
      { spotFallback: 'maybe' },
      { families: 'c7a', instanceType: 'c7a.large' },
      { region: 'us-east-1', regions: 'us-east-2' },
      { sshCidr: '10.0.0.1/8' },
    ]) {
      expect(() => parseAwsOptions({ region: 'us-east-2', ...bad })).toThrow(UserError);
    }
  });
});
