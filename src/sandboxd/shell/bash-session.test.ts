import { readFileSync } from 'node:fs';
import { mkdtemp, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BashSession } from './bash-session.ts';
import { descendantsOf } from './process-tree.ts';

let workspace: string;
let session: BashSession;

beforeEach(async () => {
  workspace = await realpath(await mkdtemp(join(tmpdir(), 'workcell-shell-')));
  session = new BashSession({ cwd: workspace });
});

afterEach(async () => {
  await session.close();
  await rm(workspace, { recursive: true, force: true });
});

const run = (command: string, timeoutMs = 10_000) => session.exec({ command, timeoutMs });

describe('BashSession', () => {
  it('starts in the workspace with the documented environment', async () => {
    const result = await run('pwd; echo "$LANG $TERM $PAGER $GIT_PAGER"; test -n "$HOME" && test -n "$PATH" && echo ok');
    expect(result).toMatchObject({ output: `${workspace}\nC.UTF-8 dumb cat cat\nok\n`, exit_code: 0, timed_out: false, session_restarted: false, omitted_bytes: 0 });
  });

  it('keeps cwd and exported variables between calls', async () => {
    await run('mkdir -p sub/dir && cd sub/dir && export GREETING=hello && answer=42');
    expect((await run('pwd; echo "$GREETING $answer"; bash -c \'echo "child sees $GREETING"\'')).output).toBe(`${workspace}/sub/dir\nhello 42\nchild sees hello\n`);
  });

  it('returns exit codes as data', async () => {
    expect((await run('true')).exit_code).toBe(0);
    expect((await run('false')).exit_code).toBe(1);
    expect((await run('(exit 42)')).exit_code).toBe(42);
    expect((await run('ls /definitely/not/here')).exit_code).toBe(2);
  });

  it('captures stderr together with stdout, in order', async () => {
    const result = await run('echo one; echo two >&2; echo three; ls /definitely/not/here');
    expect(result.output).toMatch(/^one\ntwo\nthree\nls: cannot access '\/definitely\/not\/here': No such file or directory\n$/);
  });

  it('returns a syntax error quickly with a non-zero exit, and the session still works', async () => {
    for (const command of ['if then', 'echo "unterminated', 'for x in; do', '}', "echo 'a"]) {
      const result = await run(command, 5000);
      expect(result.timed_out).toBe(false);
      expect(result.exit_code).toBe(2);
      expect(result.output).toMatch(/syntax error|unexpected EOF/);
      expect(result.duration_ms).toBeLessThan(2000);
    }
    expect((await run('echo still here')).output).toBe('still here\n');
  });

  it('runs multi-line commands and heredocs', async () => {
    const command = ['cat > note.txt <<\'EOF\'', 'line $1 `not run`', "  indented 'quoted'", 'EOF', 'for i in 1 2; do', '  echo "i=$i"', 'done', 'cat note.txt'].join('\n');
    expect((await run(command)).output).toBe("i=1\ni=2\nline $1 `not run`\n  indented 'quoted'\n");
  });

  it('passes shell metacharacters and quotes exactly', async () => {
    const tricky = `a'b"c$HOME\\n\`x\` ; | & > < * ? ~ {1,2} $(id) \u00e9 \t end`;
    const quoted = `'${tricky.replaceAll("'", "'\\''")}'`;
    expect((await run(`printf '%s' ${quoted}`)).output).toBe(tricky);
    expect((await run(`printf '%s' "$(printf '%s' ${quoted})"`)).output).toBe(tricky);
  });

  it('gives commands /dev/null as stdin, so `cat` returns at once', async () => {
    const result = await run('cat; read -r line; echo "read=$? line=$line"', 5000);
    expect(result).toMatchObject({ output: 'read=1 line=\n', exit_code: 0, timed_out: false });
  });

  it('interrupts a command on timeout and keeps the session (and its cwd)', async () => {
    await run('mkdir -p kept && cd kept');
    const result = await run('echo started; sleep 1000', 500);
    expect(result).toMatchObject({ output: 'started\n', exit_code: null, timed_out: true, session_restarted: false });
    expect(result.duration_ms).toBeGreaterThanOrEqual(500);
    expect(result.duration_ms).toBeLessThan(5000);
    expect(await run('pwd')).toMatchObject({ output: `${workspace}/kept\n`, exit_code: 0, timed_out: false });
  });

  it('kills a command that catches SIGINT and carries on, and keeps the session', async () => {
    await run('cd /');
    const result = await run(`node -e "process.on('SIGINT', () => console.log('ignoring SIGINT')); setInterval(() => {}, 1000)"`, 300);
    expect(result).toMatchObject({ timed_out: true, exit_code: null, session_restarted: false });
    expect(result.output).toContain('ignoring SIGINT');
    expect((await run('pwd')).output).toBe('/\n');
  });

  it('restarts the session when a loop keeps starting processes after each kill', async () => {
    await run('cd /');
    const result = await run('for i in 1 2 3 4 5 6; do sleep 1000; done', 300);
    expect(result).toMatchObject({ timed_out: true, exit_code: null, session_restarted: true });
    expect((await run('pwd')).output).toBe(`${workspace}\n`);
  });

  it('restarts the session when bash itself does not come back (a builtin loop)', async () => {
    await run('cd / && export LOST=yes');
    const before = session.pid;
    const result = await run('echo looping; while :; do :; done', 500);
    expect(result).toMatchObject({ output: 'looping\n', timed_out: true, exit_code: null, session_restarted: true });
    const next = await run('pwd; echo "lost=$LOST"');
    expect(next).toMatchObject({ output: `${workspace}\nlost=\n`, exit_code: 0, session_restarted: false });
    expect(session.pid).not.toBe(before);
  });

  it('caps large output at head + tail and counts what it dropped', async () => {
    const result = await run("head -c 5000000 /dev/zero | tr '\\0' a; echo; echo END");
    expect(result.exit_code).toBe(0);
    expect(result.omitted_bytes).toBeGreaterThan(2_000_000);
    expect(result.output.length).toBeLessThan(2 * 1024 * 1024 + 200);
    expect(result.output.startsWith('aaaa')).toBe(true);
    expect(result.output.endsWith('a\nEND\n')).toBe(true);
    expect(result.output).toContain(`[... ${result.omitted_bytes} bytes of output omitted ...]`);
  });

  it('does not wait for background processes', async () => {
    const result = await run('sleep 100 & echo "bg=$!"', 5000);
    expect(result.timed_out).toBe(false);
    expect(result.duration_ms).toBeLessThan(3000);
    const pid = Number(/bg=(\d+)/.exec(result.output)?.[1]);
    expect(isAlive(pid)).toBe(true);
    // A timeout of a later command leaves the background job running, as Ctrl-C in a terminal would.
    expect((await run('sleep 1000', 300)).timed_out).toBe(true);
    expect(isAlive(pid)).toBe(true);
    expect((await run(`kill ${pid}`)).exit_code).toBe(0);
  });

  it('reports background output that arrives between calls at the start of the next call', async () => {
    await run('(sleep 0.2; echo from-background) &');
    // Wait on the output itself, not on a clock.
    let seen = '';
    for (let i = 0; i < 50 && !seen.includes('from-background'); i++) seen += (await run('sleep 0.1')).output;
    expect(seen).toContain('from-background');
  });

  it('serializes concurrent calls', async () => {
    const results = await Promise.all([run('sleep 0.3; echo first'), run('echo second'), run('echo third')]);
    expect(results.map((result) => result.output)).toEqual(['first\n', 'second\n', 'third\n']);
  });

  it('restarts bash transparently when a command exits it', async () => {
    await run('cd /');
    const exited = await run('echo bye; exit 3');
    expect(exited).toMatchObject({ output: 'bye\n', exit_code: 3, session_restarted: true });
    expect(await run('pwd')).toMatchObject({ output: `${workspace}\n`, exit_code: 0 });
  });

  it('reports a restart when bash died between calls', async () => {
    await run('cd /');
    const pid = session.pid as number;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !isAlive(pid));
    const result = await run('pwd');
    expect(result).toMatchObject({ output: `${workspace}\n`, exit_code: 0, session_restarted: true });
  });

  it('interrupts a command when its signal aborts', async () => {
    const controller = new AbortController();
    const pending = session.exec({ command: 'echo go; sleep 1000', timeoutMs: 60_000, signal: controller.signal });
    // Abort once sleep runs (not while bash is still between fork and exec).
    await waitFor(() => descendantsOf(session.pid ?? 0).some(({ pid }) => commandName(pid) === 'sleep'));
    controller.abort();
    const result = await pending;
    expect(result).toMatchObject({ timed_out: false, session_restarted: false });
    // SIGINT ends it (130); if the SIGINT lands inside execve, where /proc already says "sleep" but bash's INT trap
    // is still installed, it is lost and the SIGKILL that follows the grace period ends it instead (137, "Killed").
    expect(result.output.startsWith('go\n')).toBe(true);
    expect([130, 137]).toContain(result.exit_code);
  });

  it('leaves background jobs of earlier calls alone on a timeout, even ones that handle SIGINT', async () => {
    const started = await run(`node -e "process.on('SIGINT', () => process.exit(7)); setInterval(() => {}, 1000)" & echo "bg=$!"`);
    const pid = Number(/bg=(\d+)/.exec(started.output)?.[1]);
    expect((await run('sleep 1000', 300)).timed_out).toBe(true);
    expect(isAlive(pid)).toBe(true);
    await run(`kill ${pid}`);
  });

  it('kills everything it started on close', async () => {
    const result = await run('sleep 100 & echo "bg=$!"');
    const pid = Number(/bg=(\d+)/.exec(result.output)?.[1]);
    expect(isAlive(pid)).toBe(true);
    await session.close();
    expect(isAlive(pid)).toBe(false);
  });
});

/** Polls a condition about processes (there is no event for "a process started"). */
async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function commandName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** True while the process exists and is not a zombie (SIGKILL is delivered before close() returns; reaping may lag). */
function isAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}
