import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AGENT_UNIT, INSTALL_SH } from './ami-scripts.ts';
import { MAX_USER_DATA_BYTES, cloudConfig, generateHostKey, hostKeyFromCloudConfig, knownHostsLine } from './ami-user-data.ts';

const AMI_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'ami');

describe('ami scripts', () => {
  it('the copies the CLI carries match ami/ (run: node ami/sync-scripts.mjs)', () => {
    expect(INSTALL_SH).toBe(readFileSync(path.join(AMI_DIR, 'install.sh'), 'utf8'));
    expect(AGENT_UNIT).toBe(readFileSync(path.join(AMI_DIR, 'spotctl-agent@.service'), 'utf8'));
  });

  it('install.sh installs what the agent and the job need, and verifies the Node.js download', () => {
    expect(INSTALL_SH).toMatch(/python3-venv/);
    expect(INSTALL_SH).toMatch(/\brsync\b/);
    expect(INSTALL_SH).toMatch(/sha256sum -c/);
    expect(INSTALL_SH).toMatch(/-lt 20/);
    // uv, for projects with a uv.lock: from PyPI into its own venv (PEP 668), linked onto the PATH.
    expect(INSTALL_SH).toMatch(
      /python3 -m venv \/opt\/spotctl\/uv\n.*\/opt\/spotctl\/uv\/bin\/pip install [^\n]*'uv[>=<0-9.,]*'\n\s*ln -sf \/opt\/spotctl\/uv\/bin\/uv \/usr\/local\/bin\/uv/,
    );
    // Nothing in host setup may power the machine off.
    expect(INSTALL_SH).not.toMatch(/shutdown|poweroff|halt|reboot/);
  });
});

describe('cloud-config', () => {
  it('carries the generated host key, replaces every other one, and reads back', async () => {
    const hostKey = await generateHostKey('spotctl-host-test');
    const text = cloudConfig({ hostKey, install: true, runId: 'r1' });
    expect(text.startsWith('#cloud-config\n')).toBe(true);
    expect(text).toContain('ssh_deletekeys: true');
    expect(text).toContain('ssh_genkeytypes: []');
    expect(hostKeyFromCloudConfig(text)).toEqual({ privateKey: hostKey.privateKey, publicKey: hostKey.publicKey });
    expect(text).toContain(Buffer.from(INSTALL_SH).toString('base64'));
    expect(Buffer.byteLength(text)).toBeLessThan(MAX_USER_DATA_BYTES);
  });

  it('a baked image gets the host key only', async () => {
    const text = cloudConfig({ hostKey: await generateHostKey('x'), install: false, runId: 'r1' });
    expect(text).not.toContain('runcmd');
    expect(text).not.toContain('write_files');
  });

  it('an image with the NVIDIA driver: no package upgrade, kernel and driver held before the install runs', async () => {
    const text = cloudConfig({ hostKey: await generateHostKey('x'), install: true, runId: 'r1', gpu: true });
    expect(text).toMatch(/^package_upgrade: false$/m);
    expect(text).toMatch(/^package_update: false$/m);
    // bootcmd runs before runcmd (the install), so its apt-get cannot swap the kernel under the driver.
    const bootcmd = /^bootcmd:\n {2}- \[sh, -c, (".*")\]$/m.exec(text);
    expect(bootcmd).not.toBeNull();
    const command = JSON.parse(bootcmd![1]!) as string;
    expect(command).toContain('apt-mark hold');
    for (const pkg of ["'linux-image-*'", "'nvidia-*'", "'libnvidia-*'"]) expect(command).toContain(pkg);
    expect(command).toMatch(/\|\| true$/);
    expect(text.indexOf('bootcmd:')).toBeLessThan(text.indexOf('runcmd:'));
    const cpu = cloudConfig({ hostKey: await generateHostKey('x'), install: true, runId: 'r1' });
    expect(cpu).not.toContain('bootcmd');
    expect(cpu).not.toContain('package_upgrade');
  });

  it('known_hosts pins the key for the address (and the port when it is not 22)', () => {
    expect(knownHostsLine('203.0.113.5', 22, 'ssh-ed25519 AAAAkey spotctl-host')).toBe('203.0.113.5 ssh-ed25519 AAAAkey\n');
    expect(knownHostsLine('10.0.0.2', 2222, 'ssh-ed25519 AAAAkey c')).toBe('[10.0.0.2]:2222 ssh-ed25519 AAAAkey\n');
  });
});
