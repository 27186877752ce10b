import { readFileSync } from 'node:fs';
import { mkdtemp, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { requireHostTool } from '../../../test/helpers/host-tools.ts';
import { BashSession } from './bash-session.ts';
import { descendantsOf } from './process-tree.ts';
import { alternateScreenNote } from './terminal-text.ts';

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

describe('BashSession on a PTY', () => {
  it('starts in the workspace on a terminal, with the documented environment', async () => {
    const result = await run('pwd; echo "$LANG $TERM $PAGER $GIT_PAGER $COLUMNS"; test -n "$HOME" && test -n "$PATH" && echo ok; tty; test -t 0 && test -t 1 && test -t 2 && echo all-terminals; stty size');
    expect(result).toMatchObject({ exit_code: 0, timed_out: false, session_restarted: false, omitted_bytes: 0 });
    expect(result.output).toMatch(new RegExp(`^${workspace}\\nC.UTF-8 xterm-256color cat cat 200\\nok\\n/dev/pts/\\d+\\nall-terminals\\n50 200\\n$`));
  });

  it('keeps cwd, exported variables, functions and aliases between calls', async () => {
    await run('mkdir -p sub/dir && cd sub/dir && export GREETING=hello && answer=42 && greet() { echo "hi $1"; } && alias ll="echo aliased"');
    expect((await run('pwd; echo "$GREETING $answer"; bash -c \'echo "child sees $GREETING"\'; greet you; ll')).output).toBe(`${workspace}/sub/dir\nhello 42\nchild sees hello\nhi you\naliased\n`);
  });

  it('returns exit codes as data', async () => {
    expect((await run('true')).exit_code).toBe(0);
    expect((await run('false')).exit_code).toBe(1);
    expect((await run('(exit 42)')).exit_code).toBe(42);
    expect((await run('ls /definitely/not/here')).exit_code).toBe(2);
  });

  it('captures stderr together with stdout, in order, with plain newlines', async () => {
    const result = await run('echo one; echo two >&2; echo three; ls /definitely/not/here');
    expect(result.output).toMatch(/^one\ntwo\nthree\nls: cannot access '\/definitely\/not\/here': No such file or directory\n$/);
  });

  it('returns a syntax error quickly with a non-zero exit, and the session still works', async () => {
    for (const command of ['if then', 'echo "unterminated', 'for x in; do', '}', "echo 'a"]) {
      const result = await run(command, 5000);
      expect(result.timed_out).toBe(false);
      expect(result.exit_code).toBe(2);
      expect(result.output).toMatch(/syntax error|unexpected EOF/);
    }
    expect((await run('echo still here')).output).toBe('still here\n');
  });

  it('runs multi-line commands and heredocs', async () => {
    const command = ['cat > note.txt <<\'EOF\'', 'line $1 `not run`', "  indented 'quoted'", 'EOF', 'for i in 1 2; do', '  echo "i=$i"', 'done', 'cat note.txt'].join('\n');
    expect((await run(command)).output).toBe("i=1\ni=2\nline $1 `not run`\n  indented 'quoted'\n");
  });

  it('passes shell metacharacters, quotes, control characters and long commands exactly', async () => {
    const tricky = `a'b"c$HOME\\n\`x\` ; | & > < * ? ~ {1,2} $(id) !! !$ \u00e9 \t end`;
    const quoted = `'${tricky.replaceAll("'", "'\\''")}'`;
    expect((await run(`printf '%s' ${quoted}`)).output).toBe(tricky);
    expect((await run(`printf '%s' "$(printf '%s' ${quoted})"`)).output).toBe(tricky);
    // Bytes a terminal would act on (Ctrl-C, Ctrl-D, Ctrl-Z, a carriage return) travel as data: the command is not sent through the terminal.
    expect((await run("x='\x03\x04\x1a\r'; printf '%s' \"$x\" | od -An -c | tr -s ' '")).output).toBe(' 003 004 032 \\r\n');
    const long = 'x'.repeat(300_000);
    const result = await run(`s='${long}'; echo "\${#s}"`);
    expect(result).toMatchObject({ output: '300000\n', exit_code: 0 });
  });

  it('strips colours and terminal control sequences from the output', async () => {
    await run('mkdir colours && touch colours/plain.txt && mkdir colours/dir');
    const result = await run("printf '\\e[31mred\\e[0m\\n'; ls --color=always colours; printf 'progress 10%%\\rprogress 100%%\\n'; printf '\\e]0;title\\a\\e[1mbold\\e[22m\\n'");
    expect(result.output).toBe('red\ndir  plain.txt\nprogress 100%\nbold\n');
  });

  it('gives commands the terminal as stdin: one that waits for input times out, and says so', async () => {
    const result = await run('echo asking; read -r answer; echo "answer=$answer"', 500);
    expect(result).toMatchObject({ output: 'asking\n', exit_code: null, timed_out: true, session_restarted: false, waiting_for_input: true });
    const cat = await run('cat', 500);
    expect(cat).toMatchObject({ timed_out: true, waiting_for_input: true, session_restarted: false });
    // Input given with the command is read as usual, and nothing waits.
    expect((await run('printf "yes\\n" | { read -r answer; echo "answer=$answer"; }')).output).toBe('answer=yes\n');
    expect((await run('sleep 1000', 300)).waiting_for_input).toBeUndefined();
  });

  it('interrupts a command on timeout with Ctrl-C and keeps the session (and its cwd)', async () => {
    await run('mkdir -p kept && cd kept');
    const result = await run('echo started; sleep 1000', 500);
    expect(result).toMatchObject({ output: 'started\n', exit_code: null, timed_out: true, session_restarted: false });
    expect(result.duration_ms).toBeGreaterThanOrEqual(500);
    expect(await run('pwd')).toMatchObject({ output: `${workspace}/kept\n`, exit_code: 0, timed_out: false });
  });

  it('counts the timeout from when bash starts the command, not from when a busy machine gets to it', async () => {
    await run('cd /');
    // bash is not running while the timeout passes (as on a machine too busy to schedule it): the command still
    // starts, gets its 300 ms, and is interrupted with Ctrl-C, not cut off while bash was reading it.
    const pid = session.pid!;
    process.kill(pid, 'SIGSTOP');
    const started = performance.now();
    const pending = run('echo started; sleep 1000', 300);
    try {
      await waitFor(() => performance.now() - started > 900);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(await pending).toMatchObject({ output: 'started\n', exit_code: null, timed_out: true, session_restarted: false });
    expect(await run('pwd')).toMatchObject({ output: '/\n', exit_code: 0, session_restarted: false });
  });

  it('interrupts and restarts a bash that never starts the command (wedged), after the start timeout', async () => {
    const wedged = new BashSession({ cwd: workspace, startTimeoutMs: 1000, interruptGraceMs: 200, killGraceMs: 200 });
    try {
      await wedged.exec({ command: 'cd /', timeoutMs: 10_000 });
      process.kill(wedged.pid!, 'SIGSTOP');
      const result = await wedged.exec({ command: 'touch never-ran', timeoutMs: 300 });
      expect(result).toMatchObject({ output: '', exit_code: null, timed_out: true, session_restarted: true });
      expect(result.duration_ms).toBeGreaterThanOrEqual(1000);
      expect(await wedged.exec({ command: 'pwd; ls', timeoutMs: 10_000 })).toMatchObject({ output: `${workspace}\n`, exit_code: 0 });
    } finally {
      await wedged.close();
    }
  });

  it('ends a loop of commands with one Ctrl-C, as a terminal does, and keeps the session', async () => {
    await run('cd /');
    for (const loop of ['for i in 1 2 3 4 5 6; do sleep 1000; done', 'echo looping; while :; do :; done']) {
      const result = await run(loop, 300);
      expect(result).toMatchObject({ timed_out: true, exit_code: null, session_restarted: false });
      expect((await run('pwd')).output).toBe('/\n');
    }
  });

  it('terminates a command that catches SIGINT and carries on, and keeps the session', async () => {
    await run('cd /');
    const controller = new AbortController();
    const pending = session.exec({
      command: `node -e "process.on('SIGINT', () => console.log('ignoring SIGINT')); require('fs').writeFileSync('${workspace}/ready', ''); setInterval(() => {}, 1000)"`,
      timeoutMs: 60_000,
      signal: controller.signal,
    });
    await waitFor(() => exists(join(workspace, 'ready')));
    controller.abort();
    const result = await pending;
    expect(result).toMatchObject({ timed_out: false, exit_code: 143, session_restarted: false });
    expect(result.output).toContain('ignoring SIGINT');
    expect((await run('pwd')).output).toBe('/\n');
  });

  it('restarts the session when bash itself does not come back (a builtin loop with SIGINT ignored)', async () => {
    await run('cd / && export LOST=yes');
    const before = session.pid;
    const result = await run('echo looping; trap "" INT; while :; do :; done', 500);
    expect(result).toMatchObject({ output: 'looping\n', timed_out: true, exit_code: null, session_restarted: true });
    const next = await run('pwd; echo "lost=$LOST"');
    expect(next).toMatchObject({ output: `${workspace}\nlost=\n`, exit_code: 0, session_restarted: false });
    expect(session.pid).not.toBe(before);
  });

  it('closes a full-screen program with its quit keys, and says it was there', async () => {
    requireHostTool('vim');
    await run('printf "some text\\n" > file.txt');
    const result = await run('vim -u NONE -N file.txt', 1000);
    expect(result).toMatchObject({ timed_out: true, exit_code: null, session_restarted: false });
    expect(result.output).toContain(alternateScreenNote);
    // vim quit without leaving a swap file, and the session goes on.
    expect(await run('ls -A')).toMatchObject({ output: 'file.txt\n', exit_code: 0 });
  });

  it('caps large output at head + tail and counts what it dropped', async () => {
    const result = await run("head -c 5000000 /dev/zero | tr '\\0' a; echo; echo END", 60_000);
    expect(result.exit_code).toBe(0);
    expect(result.omitted_bytes).toBeGreaterThan(2_000_000);
    expect(result.output.length).toBeLessThan(2 * 1024 * 1024 + 200);
    expect(result.output.startsWith('aaaa')).toBe(true);
    expect(result.output.endsWith('a\nEND\n')).toBe(true);
    expect(result.output).toContain(`[... ${result.omitted_bytes} bytes of output omitted ...]`);
  });

  it('does not wait for background processes, which run in process groups of their own', async () => {
    // Not timed out: the call did not wait for sleep (a bound on its duration would only measure the machine's load).
    const result = await run('sleep 100 & echo "bg=$!"', 5000);
    expect(result.timed_out).toBe(false);
    const pid = Number(/bg=(\d+)/.exec(result.output)?.[1]);
    expect(result.output).toContain(`[1] ${pid}\n`);
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
    // An interactive bash says "exit" as it leaves, as in a terminal.
    expect(exited).toMatchObject({ output: 'bye\nexit\n', exit_code: 3, session_restarted: true });
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
    await waitFor(() => session.pid !== undefined && descendantsOf(session.pid).some(({ pid }) => commandName(pid) === 'sleep'));
    controller.abort();
    const result = await pending;
    expect(result).toMatchObject({ output: 'go\n', exit_code: 130, timed_out: false, session_restarted: false });
  });

  it('does not run a command whose call was aborted while the session was starting', async () => {
    const controller = new AbortController();
    const pending = session.exec({ command: 'touch ran', timeoutMs: 60_000, signal: controller.signal });
    controller.abort();
    expect(await pending).toMatchObject({ output: '', exit_code: null, timed_out: false });
    expect((await run('ls')).output).toBe('');
  });

  it('leaves background jobs of earlier calls alone on a timeout, even ones that handle SIGINT', async () => {
    const started = await run(`node -e "process.on('SIGINT', () => process.exit(7)); setInterval(() => {}, 1000)" & echo "bg=$!"`);
    const pid = Number(/bg=(\d+)/.exec(started.output)?.[1]);
    expect((await run('sleep 1000', 300)).timed_out).toBe(true);
    expect(isAlive(pid)).toBe(true);
    await run(`kill ${pid}`);
  });

  it('shows watchers the raw terminal: the commands sent and the output with its colours', async () => {
    await run('echo before');
    const seen: Buffer[] = [];
    const stop = session.watch((data) => seen.push(data));
    // The recent past first, then what follows.
    expect(Buffer.concat(seen).toString()).toContain('before\r\n');
    await run("printf '\\e[31mred\\e[0m\\n'");
    stop();
    await run('echo after');
    const raw = Buffer.concat(seen).toString();
    expect(raw).toContain("printf '\\e[31mred\\e[0m\\n'");
    expect(raw).toContain('\x1b[31mred\x1b[0m\r\n');
    expect(raw).not.toContain('after');
  });

  it('kills everything it started on close', async () => {
    const result = await run('sleep 100 & echo "bg=$!"');
    const pid = Number(/bg=(\d+)/.exec(result.output)?.[1]);
    expect(isAlive(pid)).toBe(true);
    await session.close();
    expect(isAlive(pid)).toBe(false);
  });
});

/** Polls a condition about processes or files (there is no event for "a process started"). */
async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
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
