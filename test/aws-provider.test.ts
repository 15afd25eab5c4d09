/** The aws provider as the default, through the real CLI (no AWS involved). */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSpotctl } from './helpers/cli.ts';
import { tmpDir } from './helpers/tmp.ts';

describe('aws as the default provider', () => {
  it('without credentials, `spotctl run` fails before launching anything and says how to run locally instead', async () => {
    await using home = await tmpDir();
    await using proj = await tmpDir();
    writeFileSync(path.join(proj.path, 't.py'), 'print(1)\n');
    // No credentials anywhere the SDK looks (the metadata service stays disabled), no provider chosen.
    const r = await runSpotctl(['run', '--sync', proj.path, 't.py'], {
      home: home.path,
      env: {
        SPOTCTL_PROVIDER: '',
        AWS_ACCESS_KEY_ID: '',
        AWS_SECRET_ACCESS_KEY: '',
        AWS_PROFILE: '',
        AWS_CONFIG_FILE: path.join(home.path, 'no-config'),
        AWS_SHARED_CREDENTIALS_FILE: path.join(home.path, 'no-credentials'),
        AWS_EC2_METADATA_DISABLED: 'true',
        // Nothing is sent without credentials; should that ever change, it goes to loopback, not AWS.
        AWS_ENDPOINT_URL: 'http://127.0.0.1:9',
      },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/on a new EC2 instance/);
    expect(r.stderr).toMatch(/spotctl error: .*credentials.*\(aws is the default provider\).*--provider local/);
    expect(r.stderr).not.toMatch(/priced|launched/);
    // The run's setup failed, and ps says so (with the reason) instead of `setup` forever.
    const ps = await runSpotctl(['ps', '--json'], { home: home.path });
    expect(JSON.parse(ps.stdout)).toMatchObject([{ provider: 'aws', state: 'failed', reason: expect.stringMatching(/credentials/) }]);
  });
});
