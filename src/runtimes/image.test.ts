import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readNpmPackageList, readPackageList, rootfsRecipeFiles, rootfsRecipeHash, sandboxNativeModulesDir } from './image.ts';

const imageFile = (name: string) => readFileSync(new URL(`../../image/${name}`, import.meta.url), 'utf8');

describe('the image recipe', () => {
  it('pins every npm package to an exact version, where the image expects it', () => {
    const packages = readNpmPackageList();
    const byName = new Map(packages.map((p) => [p.name, p]));
    expect(packages.filter((p) => p.where === 'npm')).toHaveLength(1);
    for (const name of ['typescript', 'tsx', '@types/node', 'tslab']) expect(byName.get(name)?.where, name).toBe('global');
    // sandboxd requires node-pty from sandboxNativeModulesDir, which is where `workcell` packages go.
    expect(byName.get('node-pty')?.where).toBe('workcell');
    expect(sandboxNativeModulesDir).toBe('/usr/local/lib/workcell/node_modules');
    expect(imageFile('post-install.sh')).toContain(`workcell_modules=${sandboxNativeModulesDir.replace(/\/node_modules$/, '')}`);
  });

  it('rejects npm package lines that are not exact', () => {
    expect(readNpmPackageList('# comment\nglobal  @scope/name@1.2.3-beta.1 # why\n\nnpm npm@11.0.0\n')).toEqual([
      { where: 'global', name: '@scope/name', version: '1.2.3-beta.1' },
      { where: 'npm', name: 'npm', version: '11.0.0' },
    ]);
    expect(() => readNpmPackageList('global typescript@^6.0.0')).toThrow(/line 1: expected/);
    expect(() => readNpmPackageList('global typescript')).toThrow(/line 1/);
    expect(() => readNpmPackageList('elsewhere typescript@6.0.0')).toThrow(/line 1/);
  });

  it('lists the Debian packages of every tool the agent is promised', () => {
    const packages = readPackageList();
    for (const name of ['xvfb', 'openbox', 'xterm', 'xdotool', 'scrot', 'x11vnc', 'novnc', 'websockify', 'jupyter-server', 'python3-ipykernel', 'build-essential', 'git', 'ripgrep', 'tini']) {
      expect(packages, name).toContain(name);
    }
    expect(new Set(packages).size).toBe(packages.length);
  });

  it('hashes a stable hex digest', () => {
    expect(rootfsRecipeHash()).toMatch(/^[0-9a-f]{64}$/);
    expect(rootfsRecipeHash()).toBe(rootfsRecipeHash());
  });

  it('builds the Docker image from the same recipe files', () => {
    const dockerfile = imageFile('Dockerfile');
    const copied = [...dockerfile.matchAll(/^COPY (.+) \/tmp\/workcell-image\/$/gm)]
      .flatMap((match) => match[1]!.split(/\s+/))
      .filter((name) => name !== 'dist/build-ca.cr[t]');
    // Every file the rootfs builder copies in is copied by the Dockerfile too, and allowed into its build context.
    expect(copied.sort()).toEqual([...rootfsRecipeFiles].sort());
    const dockerignore = imageFile('.dockerignore');
    for (const name of rootfsRecipeFiles) expect(dockerignore, name).toContain(`!${name}\n`);
    expect(dockerfile).toMatch(/bash \/tmp\/workcell-image\/install-packages\.sh/);
    expect(dockerfile).toMatch(/bash \/tmp\/workcell-image\/post-install\.sh/);
  });
});
