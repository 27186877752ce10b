import { describe, expect, it } from 'vitest';
import { readNpmPackageList, readPackageList } from '../runtimes/image.ts';
import { imagePackages, installedLine, packagesNotShown } from './installed-software.ts';
import { buildSystemPrompt } from './prompt.ts';
import { toolDefinitions, toolNames, type ToolName } from './tools/definitions.ts';

/** The names of the "# Your tools" list, in order. */
function listedTools(prompt: string): string[] {
  const section = /^# Your tools\n([\s\S]*?)\n\n/m.exec(prompt)?.[1] ?? '';
  return [...section.matchAll(/^- ([a-z_]+): /gm)].map((match) => match[1]!);
}

/** Tools the prompt names anywhere. shell and finish are plain words too; the list above covers them. */
function mentionedTools(prompt: string): string[] {
  return toolNames.filter((name) => name !== 'shell' && name !== 'finish' && new RegExp(`\\b${name}\\b`).test(prompt));
}

describe('buildSystemPrompt', () => {
  it('says there is no network when nothing is allowed', () => {
    expect(buildSystemPrompt()).toContain('- No network access: nothing can be downloaded');
    expect(buildSystemPrompt({ networkAllow: [] })).toBe(buildSystemPrompt());
  });

  it('lists the allowed destinations and how to reach them', () => {
    const prompt = buildSystemPrompt({ networkAllow: ['pypi.org', '*.pythonhosted.org'] });
    expect(prompt).toContain('- Network access only to these destinations: pypi.org, *.pythonhosted.org');
    expect(prompt).toContain('HTTP_PROXY');
    expect(prompt).toContain('NODE_USE_ENV_PROXY=1');
    expect(prompt).not.toContain('No network access');
  });

  it('lists every tool of the definitions, each with its summary, in the order they are offered', () => {
    const prompt = buildSystemPrompt();
    // A tool added to definitions.ts appears here by itself; this fails if it ever does not.
    expect(listedTools(prompt)).toEqual(toolNames);
    for (const name of toolNames) expect(prompt).toContain(`- ${name}: ${toolDefinitions[name].summary}\n`);
    expect(mentionedTools(prompt).sort()).toEqual(toolNames.filter((name) => name !== 'shell' && name !== 'finish').sort());
  });

  it('names exactly the tools offered: none that is not', () => {
    for (const missing of toolNames.filter((name) => name !== 'finish')) {
      const offered = toolNames.filter((name) => name !== missing);
      const prompt = buildSystemPrompt({ tools: offered });
      expect(listedTools(prompt), `without ${missing}`).toEqual(offered);
      expect(mentionedTools(prompt), `without ${missing}`).not.toContain(missing);
    }
    const minimal: ToolName[] = ['read_file', 'finish'];
    const prompt = buildSystemPrompt({ tools: minimal });
    expect(listedTools(prompt)).toEqual(minimal);
    expect(mentionedTools(prompt)).toEqual(['read_file']);
  });

  it('says what the image has installed, from its package lists', () => {
    const prompt = buildSystemPrompt();
    const installed = /^- Installed: .*$/m.exec(prompt)?.[0] ?? '';
    expect(installed).toMatch(/Python 3\.\d+ \(python3\) with .*numpy, pandas, matplotlib/);
    expect(installed).toMatch(/Node\.js 24 \(node\) with npm \d+\.\d+\.\d+ \(npm, npx\), TypeScript \d+\.\d+\.\d+ \(tsc\)/);
    expect(installed).toContain('ripgrep (rg)');
    expect(prompt).not.toMatch(/standard library only|no npm packages/);
    // Every package of the lists is named (Python's by their module names), but for the few the agent never uses.
    for (const name of readPackageList().filter((name) => !packagesNotShown.has(name))) {
      expect(installed.toLowerCase(), name).toContain(name.replace(/^python3-/, '').toLowerCase());
    }
    for (const item of readNpmPackageList().filter((item) => item.where !== 'workcell')) expect(installed, item.name).toContain(item.version);
    expect(installed).not.toContain('node-pty');
    for (const name of packagesNotShown) expect(readPackageList(), `${name} is in packagesNotShown but not in image/packages.txt`).toContain(name);
  });

  it('names a package added to the lists, and the desktop only with the gui tool', () => {
    const image = imagePackages();
    const added = { debian: [...image.debian, 'python3-scipy', 'sqlite3'], npm: [...image.npm, { where: 'global' as const, name: 'prettier', version: '3.6.2' }] };
    const line = installedLine(added, { desktop: true });
    expect(line).toMatch(/with [^;]*scipy/);
    expect(line).toMatch(/command-line tools: [^;]*sqlite3/);
    expect(line).toContain('prettier 3.6.2');
    expect(buildSystemPrompt({ image: added })).toContain(line);
    expect(line).toMatch(/for the desktop: .*xdotool/);
    const withoutGui = buildSystemPrompt({ tools: toolNames.filter((name) => name !== 'gui') });
    expect(withoutGui).not.toMatch(/xdotool|Xvfb|openbox/);
  });
});
