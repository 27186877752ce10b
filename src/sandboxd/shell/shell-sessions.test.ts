import { mkdtemp, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SandboxdToolError } from '../errors.ts';
import { ShellSessions } from './shell-sessions.ts';

let workspace: string;
let sessions: ShellSessions;

beforeEach(async () => {
  workspace = await realpath(await mkdtemp(join(tmpdir(), 'workcell-sessions-')));
  sessions = new ShellSessions({ cwd: workspace }, 3);
});

afterEach(async () => {
  await sessions.close();
  await rm(workspace, { recursive: true, force: true });
});

const run = (name: string, command: string) => sessions.exec(name, { command, timeoutMs: 10_000 });

describe('ShellSessions', () => {
  it('keeps each named session apart: cwd, variables, jobs', async () => {
    await run('main', 'mkdir -p a b && cd a && export WHO=main');
    await run('other', 'cd b && export WHO=other; sleep 100 & true');
    expect((await run('main', 'pwd; echo $WHO; jobs | wc -l')).output).toBe(`${workspace}/a\nmain\n0\n`);
    expect((await run('other', 'pwd; echo $WHO; jobs | wc -l')).output).toBe(`${workspace}/b\nother\n1\n`);
    expect(sessions.get('main')?.pid).not.toBe(sessions.get('other')?.pid);
    expect(sessions.names()).toEqual(['main', 'other']);
  });

  it('runs sessions side by side: a long call in one does not hold up another', async () => {
    // The slow call lasts until the test has seen the fast one's result (at most 9 s, so that sessions run one after
    // the other fail the race below rather than hang): which one ends first says whether they ran side by side,
    // however busy the machine.
    const slow = run('slow', 'for i in $(seq 180); do [ -e fast-seen ] && break; sleep 0.05; done; echo slow');
    const fast = run('fast', 'echo fast');
    const first = await Promise.race([slow.then(() => 'slow'), fast.then(() => 'fast')]);
    await writeFile(join(workspace, 'fast-seen'), '');
    expect(first).toBe('fast');
    expect((await fast).output).toBe('fast\n');
    expect((await slow).output).toBe('slow\n');
  });

  it('refuses a session over the cap with a message that says what to do, and frees the place of one that exited', async () => {
    await run('one', 'true');
    await run('two', 'true');
    await run('three', 'true');
    let refusal: unknown;
    try {
      await run('four', 'true');
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toBeInstanceOf(SandboxdToolError);
    expect((refusal as SandboxdToolError).code).toBe('invalid_request');
    expect((refusal as SandboxdToolError).message).toMatch(/already 3 shell sessions \(one, two, three\).*exit/);
    expect((await run('two', 'exit')).session_restarted).toBe(true);
    expect((await run('four', 'echo four')).output).toBe('four\n');
    expect(sessions.names()).toEqual(['one', 'three', 'four']);
  });
});
