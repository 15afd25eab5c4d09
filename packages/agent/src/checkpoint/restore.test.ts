import { describe, expect, it } from 'vitest';
import { RESTORE_PROGRESS_MIN_BYTES, restoreMilestone } from './restore.ts';

describe('restoreMilestone', () => {
  const total = 4 * RESTORE_PROGRESS_MIN_BYTES;
  const at = (bytes: number, totalBytes = total) => ({ bytes, totalBytes, files: 1, totalFiles: 10 });

  it('names each quarter once as a big restore passes it', () => {
    expect(restoreMilestone(at(total * 0.1), 0)).toBeUndefined();
    expect(restoreMilestone(at(total * 0.3), 0)).toBe(25);
    expect(restoreMilestone(at(total * 0.4), 25)).toBeUndefined();
    // A big file can jump past two quarters: the last one passed is named.
    expect(restoreMilestone(at(total * 0.8), 25)).toBe(75);
  });

  it('says nothing for a small set, or once the restore is complete', () => {
    expect(restoreMilestone(at(RESTORE_PROGRESS_MIN_BYTES / 2, RESTORE_PROGRESS_MIN_BYTES - 1), 0)).toBeUndefined();
    expect(restoreMilestone(at(total), 75)).toBeUndefined();
  });
});
