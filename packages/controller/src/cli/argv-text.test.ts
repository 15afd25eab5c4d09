import { describe, expect, it } from 'vitest';
import { invalidUtf8Argument } from './argv-text.ts';

const raw = (...args: (string | Buffer)[]) => [
  Buffer.from('node'),
  Buffer.from('spotctl.mjs'),
  ...args.map((a) => (typeof a === 'string' ? Buffer.from(a) : a)),
];

describe('invalidUtf8Argument', () => {
  it('finds an argument whose bytes were not UTF-8', () => {
    const bad = Buffer.from([0x61, 0xff, 0x62]);
    expect(invalidUtf8Argument(['run', '--', 'echo', 'a\uFFFDb'], raw('run', '--', 'echo', bad))).toBe(3);
  });

  it('lets a real U+FFFD, typed as UTF-8, through', () => {
    expect(invalidUtf8Argument(['run', '--', 'echo', 'a\uFFFDb'], raw('run', '--', 'echo', 'a\uFFFDb'))).toBeUndefined();
  });

  it('concludes nothing when the raw arguments do not line up with argv', () => {
    expect(invalidUtf8Argument(['echo', 'a\uFFFDb'], raw('something', Buffer.from([0xff])))).toBeUndefined();
    expect(invalidUtf8Argument(['a\uFFFDb'], [])).toBeUndefined();
  });
});
