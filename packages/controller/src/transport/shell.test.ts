import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { lastLine, shellQuote } from './shell.ts';

describe('shellQuote', () => {
  it('survives a real sh unchanged, whatever the characters', () => {
    const words = [
      'plain',
      '',
      'with space',
      "it's",
      "''",
      '$HOME',
      '`id`',
      'a"b',
      'semi;colon',
      'glob*?[x]',
      'new\nline',
      '~user',
      'back\\slash',
      '-n',
    ];
    const printed = execFileSync('sh', ['-c', `printf '%s\\0' ${words.map(shellQuote).join(' ')}`]).toString();
    expect(printed.split('\0').slice(0, -1)).toEqual(words);
  });

  it('leaves safe words bare and quotes the rest', () => {
    expect(shellQuote('/home/u/runs/r-1.x')).toBe('/home/u/runs/r-1.x');
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote('')).toBe("''");
  });
});

describe('lastLine', () => {
  it('is the last non-blank line, trimmed, with CRLF or LF', () => {
    expect(lastLine('first\nsecond  \n\n')).toBe('second');
    expect(lastLine('one\r\ntwo\r\n')).toBe('two');
    expect(lastLine('')).toBe('');
    expect(lastLine(' \n \n')).toBe('');
  });

  it("skips ssh's own noise after the real message", () => {
    const stderr = 'Permission denied (publickey).\nWarning: Permanently added 10.0.0.2 (ED25519) to the list of known hosts.\n@@@@@@@@\n';
    expect(lastLine(stderr)).toBe('Permission denied (publickey).');
  });
});
