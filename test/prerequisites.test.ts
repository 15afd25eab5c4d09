import { describe, expect, it } from 'vitest';
import { isCi, skipUnlessCi } from './helpers/prerequisites.ts';

describe('suites with machine prerequisites', () => {
  it('fail under CI when a prerequisite is missing, naming it and the fix', () => {
    expect(() => skipUnlessCi('aws-run', 'curl unavailable', { CI: 'true' })).toThrow(
      /\[aws-run\] cannot run under CI: curl unavailable\..*bash \.ci\/run/,
    );
    expect(() => skipUnlessCi('aws-run', 'not root', { CI: '1' })).toThrow(/not root/);
  });

  it('skip with a printed reason outside CI, and run when nothing is missing', () => {
    const printed: string[] = [];
    const warn = (line: string): void => void printed.push(line);
    expect(skipUnlessCi('aws-run', 'not root', {}, warn)).toBe(true);
    expect(skipUnlessCi('aws-run', 'not root', { CI: 'false' }, warn)).toBe(true);
    expect(printed).toEqual([
      '[aws-run] skipped: not root (under CI=true this fails instead)',
      '[aws-run] skipped: not root (under CI=true this fails instead)',
    ]);
    expect(skipUnlessCi('aws-run', undefined, { CI: 'true' }, warn)).toBe(false);
    expect(skipUnlessCi('aws-run', undefined, {}, warn)).toBe(false);
    expect(printed).toHaveLength(2);
  });

  it('read CI as CI services set it', () => {
    expect(isCi({ CI: 'true' })).toBe(true);
    expect(isCi({ CI: 'TRUE' })).toBe(true);
    expect(isCi({ CI: '1' })).toBe(true);
    expect(isCi({ CI: '' })).toBe(false);
    expect(isCi({ CI: '0' })).toBe(false);
    expect(isCi({})).toBe(false);
  });
});
