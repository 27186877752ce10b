// Set-up installs every host program the tests run: each package of hostToolPackages is in scripts/setup.sh's list.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hostToolPackages, requireHostTool } from './host-tools.ts';

/** The Debian packages scripts/setup.sh installs: the words of every `packages=(...)` and `packages+=(...)`. */
function setupPackages(): Set<string> {
  // Comments first: they may hold parentheses.
  const script = readFileSync(join(import.meta.dirname, '../../scripts/setup.sh'), 'utf8').replace(/(^|\s)#.*$/gm, '');
  const names = new Set<string>();
  for (const [, body] of script.matchAll(/\bpackages\+?=\(([^)]*)\)/g)) for (const word of body!.split(/\s+/)) if (word !== '') names.add(word);
  return names;
}

describe('host tools', () => {
  it('are all installed by scripts/setup.sh', () => {
    const installed = setupPackages();
    expect(installed).toContain('bubblewrap');
    for (const [command, debianPackage] of Object.entries(hostToolPackages)) expect(installed, `${command} (${debianPackage})`).toContain(debianPackage);
  });

  it('name the package to install when one is missing', () => {
    const path = process.env.PATH;
    try {
      process.env.PATH = '/nonexistent';
      // findExecutable also looks in the sbin directories; rg is never there.
      expect(() => requireHostTool('rg')).toThrow('this test runs rg on the host, and it is not installed: run scripts/setup.sh (or apt-get install ripgrep)');
    } finally {
      process.env.PATH = path;
    }
  });
});
