import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { DEFAULT_GRACE_MS, DEFAULT_HEARTBEAT_PATH, DEFAULT_IDLE_TIMEOUT_MS, UserError } from '@spotctl/shared';
import { loadAgentConfig } from './config.ts';
import { AGENT_VERSION } from './version.ts';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'spotctl-config-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const minimal = { runId: 'r1', workdir: '/w', stateDir: '/s', command: ['true'], token: 'x'.repeat(16) };

function write(value: unknown): string {
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

function configError(fn: () => unknown): UserError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UserError);
    expect((err as UserError).exitCode).toBe(2);
    expect((err as UserError).message).not.toContain('\n');
    return err as UserError;
  }
  throw new Error('expected a config error');
}

describe('loadAgentConfig', () => {
  test('applies the defaults', () => {
    expect(loadAgentConfig(write(minimal), {})).toEqual({
      ...minimal,
      host: '127.0.0.1',
      hostExplicit: false,
      port: 0,
      idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
      maxRuntimeMs: 0,
      graceMs: DEFAULT_GRACE_MS,
      heartbeatPath: DEFAULT_HEARTBEAT_PATH,
      shutdownAction: { kind: 'exit' },
      env: {},
      logLevel: 'info',
      imds: undefined,
      simulate: undefined,
      onRebalance: 'checkpoint',
      checkpoint: undefined,
    });
  });

  test('resolves the checkpoint folder against the workdir and defaults its settle time and exit flush budget', () => {
    const c = loadAgentConfig(write({ ...minimal, checkpoint: { target: { kind: 'dir', path: '/store' } } }), {});
    expect(c.checkpoint).toEqual({
      target: { kind: 'dir', path: '/store' },
      dir: '/w/checkpoints',
      settleMs: 500,
      exitFlushBudgetMs: 300_000,
    });
    const short = loadAgentConfig(
      write({ ...minimal, checkpoint: { target: { kind: 'dir', path: '/store' }, exitFlushBudgetMs: 2000 } }),
      {},
    );
    expect(short.checkpoint?.exitFlushBudgetMs).toBe(2000);
  });

  test('environment overrides token, port and log level', () => {
    const c = loadAgentConfig(write({ ...minimal, token: 'short' }), {
      SPOTCTL_AGENT_TOKEN: 't'.repeat(20),
      SPOTCTL_AGENT_PORT: '4567',
      SPOTCTL_AGENT_LOG_LEVEL: 'debug',
    });
    expect(c).toMatchObject({ token: 't'.repeat(20), port: 4567, logLevel: 'debug' });
  });

  test('errors name the field, on one line', () => {
    expect(configError(() => loadAgentConfig(write({ ...minimal, port: 'x' }), {})).message).toMatch(/\/port/);
    expect(configError(() => loadAgentConfig(write({ ...minimal, token: 'short' }), {})).message).toMatch(/\/token/);
    expect(configError(() => loadAgentConfig(write({ ...minimal, bogus: 1 }), {})).message).toMatch(/bogus|additional/i);
    expect(configError(() => loadAgentConfig(write({ ...minimal, logLevel: 'loud' }), {})).message).toMatch(/\/logLevel/);
    expect(configError(() => loadAgentConfig(write(minimal), { SPOTCTL_AGENT_PORT: '70000' })).message).toMatch(/SPOTCTL_AGENT_PORT/);
    expect(configError(() => loadAgentConfig(write('{not json'), {})).message).toMatch(/not valid JSON/);
    expect(configError(() => loadAgentConfig(path.join(dir, 'missing.json'), {})).message).toMatch(/cannot read/);
  });

  test('refuses delays a Node.js timer cannot hold (2^31-1 ms) and unknown rebalance signals', () => {
    const tooLong = 2 ** 31;
    for (const field of ['graceMs', 'maxRuntimeMs', 'idleTimeoutMs'] as const) {
      expect(configError(() => loadAgentConfig(write({ ...minimal, [field]: tooLong }), {})).message).toMatch(
        new RegExp(`/${field}.*2147483647`),
      );
      expect(loadAgentConfig(write({ ...minimal, [field]: tooLong - 1 }), {})[field]).toBe(tooLong - 1);
    }
    expect(
      configError(() => loadAgentConfig(write({ ...minimal, simulate: { interruptAfterMs: 360_000_000_000_000 } }), {})).message,
    ).toMatch(/\/simulate\/interruptAfterMs/);
    expect(configError(() => loadAgentConfig(write({ ...minimal, onRebalance: 'signal:NOPE' }), {})).message).toMatch(
      /\/onRebalance: unknown signal 'NOPE'/,
    );
    expect(loadAgentConfig(write({ ...minimal, onRebalance: 'signal:USR1' }), {}).onRebalance).toBe('signal:USR1');
  });
});

test('AGENT_VERSION matches package.json', () => {
  const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  expect(AGENT_VERSION).toBe(pkg.version);
});
