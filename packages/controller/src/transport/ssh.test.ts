import { describe, expect, test } from 'vitest';
import { UserError } from '@spotctl/shared';
import { SshConnection, parseHostSpec, translateSshFailure } from './ssh.ts';

describe('parseHostSpec', () => {
  test.each([
    ['host', { host: 'host' }],
    ['ubuntu@203.0.113.7', { user: 'ubuntu', host: '203.0.113.7' }],
    ['ubuntu@host.example:2222', { user: 'ubuntu', host: 'host.example', port: 2222 }],
    ['host:22', { host: 'host', port: 22 }],
    ['[::1]:22', { host: '::1', port: 22 }],
    ['root@[2001:db8::1]', { user: 'root', host: '2001:db8::1' }],
    ['2001:db8::1', { host: '2001:db8::1' }],
    ['first.last@corp@bastion', { user: 'first.last@corp', host: 'bastion' }],
    ['  my-alias  ', { host: 'my-alias' }],
  ])('%s', (spec, expected) => {
    expect(parseHostSpec(spec)).toEqual(expected);
  });

  test.each(['', '@host', 'user@', 'host:0', 'host:65536', 'host:22x', '-oProxyCommand=x', 'a b', '[host]:22', 'user@host:', '[::1]:'])(
    'rejects %j with a usage error showing the form',
    (spec) => {
      let error: unknown;
      try {
        parseHostSpec(spec);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(UserError);
      const e = error as UserError;
      expect(e.code).toBe('SPOTCTL_USAGE');
      expect(e.exitCode).toBe(2);
      expect(e.remediation).toContain('user@host[:port]');
    },
  );
});

describe('translateSshFailure', () => {
  const target = { user: 'ubuntu', host: '203.0.113.7', port: 2222, identityFile: '/k/id', knownHostsFile: '/k/known_hosts' };
  test.each([
    ['ssh: connect to host 203.0.113.7 port 2222: Connection refused\r\n', /connection refused on port 2222/],
    ['ssh: connect to host 203.0.113.7 port 2222: Connection timed out\r\n', /timed out/],
    ['Connection timed out during banner exchange\r\n', /timed out/],
    ['ssh: connect to host 203.0.113.7 port 2222: No route to host\r\n', /no route/],
    ['ssh: Could not resolve hostname nope: Name or service not known\r\n', /does not resolve/],
    ['ubuntu@203.0.113.7: Permission denied (publickey).\r\n', /permission denied/],
    ['@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nHost key verification failed.\r\n', /does not match/],
    [
      'No ED25519 host key is known for [203.0.113.7]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n',
      /not in \/k\/known_hosts/,
    ],
    ['kex_exchange_identification: Connection closed by remote host\r\n', /closed the connection/],
    ['something new\r\n', /something new$/],
  ])('%j', (stderr, message) => {
    const e = translateSshFailure(stderr, target);
    expect(e.code).toBe('SPOTCTL_SSH_UNREACHABLE');
    expect(e.message).toMatch(/^cannot connect to SSH host ubuntu@203\.0\.113\.7:2222: /);
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain('\n');
    expect(e.remediation).toBeTruthy();
  });

  test('a changed host key tells how to drop the old key from the pinned file', () => {
    const e = translateSshFailure('REMOTE HOST IDENTIFICATION HAS CHANGED\nHost key verification failed.', target);
    expect(e.remediation).toContain("ssh-keygen -R '[203.0.113.7]:2222' -f /k/known_hosts");
  });
});

describe('SshConnection.open', () => {
  test('a missing identity file is a usage error (exit 2) before ssh runs', async () => {
    const open = SshConnection.open({ host: '127.0.0.1', identityFile: '/nonexistent/id_ed25519' }, { controlDir: '/nonexistent/ctl' });
    await expect(open).rejects.toMatchObject({
      code: 'SPOTCTL_USAGE',
      exitCode: 2,
      message: 'identity file not found: /nonexistent/id_ed25519',
    });
  });

  test('a host that ssh would read as an option is refused', async () => {
    await expect(SshConnection.open({ host: '-oProxyCommand=id' }, { controlDir: '/nonexistent/ctl' })).rejects.toMatchObject({
      code: 'SPOTCTL_USAGE',
    });
  });

  test('an already aborted signal rejects with its reason', async () => {
    const reason = new Error('stop');
    await expect(
      SshConnection.open({ host: '127.0.0.1' }, { controlDir: '/nonexistent/ctl', signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
  });
});
