// The programs tests run on the host itself (not inside a sandbox, where the image has its own), each with the Debian
// package that provides it. scripts/setup.sh installs every one of these packages (host-tools.test.ts checks), so a
// test that needs one calls requireHostTool, and a machine without it fails with the package to install, not with
// an ENOENT or an odd result deep inside the code under test. Essential packages (coreutils, util-linux, bash) are
// not listed.
import { findExecutable } from '../../src/runtimes/probe.ts';

export const hostToolPackages = {
  /** search_files runs ripgrep: src/sandboxd/files/search.test.ts. */
  rg: 'ripgrep',
  /** The workspace zip must read back with Info-ZIP: src/jobs/artifacts.test.ts. */
  unzip: 'unzip',
  /** The microVM kernel's LZ4 decoder against the real tool: src/runtimes/microvm/microvm.test.ts (runIf it is installed). */
  lz4: 'lz4',
  /** A full-screen program the shell closes with its quit keys: src/sandboxd/shell/bash-session.test.ts. */
  vim: 'vim',
  /** The browser that drives noVNC: test/integration/gui/novnc.test.ts (and Jupyter's notebook, where it is installed). */
  chromium: 'chromium',
} as const;

export type HostTool = keyof typeof hostToolPackages;

/** The absolute path of a host program a test needs; throws, naming the package to install, when it is missing. */
export function requireHostTool(command: HostTool): string {
  const path = findExecutable(command);
  if (path === undefined) {
    const debianPackage = hostToolPackages[command];
    throw new Error(`this test runs ${command} on the host, and it is not installed: run scripts/setup.sh (or apt-get install ${debianPackage})`);
  }
  return path;
}
