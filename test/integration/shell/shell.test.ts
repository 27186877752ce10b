// The PTY shell in a real bwrap sandbox, through sandboxd and the agent's tool plumbing (what the model reads):
// timeouts and Ctrl-C, state between calls, named sessions, background servers, input, colours, bad input.
import { describe, expect, it } from 'vitest';
import { runTool } from '../../../src/agent/tools/run-tool.ts';
import { SandboxdError } from '../../../src/runtimes/sandboxd-client.ts';
import { alternateScreenNote } from '../../../src/sandboxd/shell/terminal-text.ts';
import { useSandbox } from '../../helpers/sandbox.ts';

const signal = new AbortController().signal;

describe('the shell tool on a PTY in a real sandbox', () => {
  const fixture = useSandbox();
  const shell = (input: Record<string, unknown>) => runTool(fixture().sandbox.client, { name: 'shell', input }, { signal });

  it('interrupts `sleep 1000` at its timeout, and the next call works in the same session', async () => {
    const { sh } = fixture();
    await sh('mkdir -p /workspace/kept && cd /workspace/kept');
    const started = performance.now();
    const slept = await sh('echo before; sleep 1000', 1500);
    expect(slept).toMatchObject({ output: 'before\n', exit_code: null, timed_out: true, session_restarted: false });
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(await sh('pwd; echo next')).toMatchObject({ output: '/workspace/kept\nnext\n', exit_code: 0, timed_out: false, session_restarted: false });
    const model = await shell({ command: 'sleep 1000', timeout_ms: 1000 });
    expect(model.output).toBe('exit code: none\ntimed out after 1000 ms: the command was interrupted with Ctrl-C.\noutput: (none)');
  });

  it('keeps cd and exports between calls, and runs on a terminal', async () => {
    const { sh } = fixture();
    await sh('cd /tmp && export COLOUR=blue');
    expect((await sh('pwd; echo $COLOUR; tty; stty size; echo $TERM')).output).toMatch(/^\/tmp\nblue\n\/dev\/pts\/\d+\n50 200\nxterm-256color\n$/);
    await sh('cd /workspace');
  });

  it('keeps named sessions independent', async () => {
    const { sandbox } = fixture();
    const call = (session: string, command: string) => sandbox.client.call('shellExec', { command, session });
    await call('one', 'cd /tmp && export WHO=one');
    await call('two', 'cd / && export WHO=two');
    expect((await call('one', 'pwd; echo $WHO')).output).toBe('/tmp\none\n');
    expect((await call('two', 'pwd; echo $WHO')).output).toBe('/\ntwo\n');
    expect((await call('main', 'echo "[$WHO]"')).output).toBe('[]\n');
    const hostile = await sandbox.client.call('shellExec', { command: 'true', session: '$(touch /workspace/pwned)' }).catch((error: unknown) => error);
    expect(hostile).toBeInstanceOf(SandboxdError);
    expect((hostile as SandboxdError).code).toBe('invalid_request');
    expect((await call('main', 'ls /workspace')).output).not.toContain('pwned');
  });

  it('keeps a background server running: a later call reaches it', async () => {
    const started = await shell({ command: 'cd /workspace && echo served > index.txt && python3 -m http.server 8000 > /tmp/server.log 2>&1 & echo started' });
    expect(started.output).toMatch(/^exit code: 0\noutput:\n\[1\] \d+\nstarted\n$/);
    // Wait for the server inside the sandbox (it needs a moment to bind), then fetch in a separate call.
    const ready = await shell({ command: 'for i in $(seq 100); do curl -fs localhost:8000/index.txt >/dev/null && echo up && break; sleep 0.1; done', timeout_ms: 30_000 });
    expect(ready.output).toMatch(/up\n$/);
    const fetched = await shell({ command: 'curl -s localhost:8000/index.txt', session: 'client' });
    expect(fetched.output).toBe('exit code: 0\noutput:\nserved\n');
    // A timeout in the meantime leaves it alone (its own process group), as Ctrl-C in a terminal would.
    await shell({ command: 'sleep 100', timeout_ms: 1000 });
    expect((await shell({ command: 'curl -s localhost:8000/index.txt' })).output).toMatch(/served\n$/);
    await shell({ command: 'kill %1; wait' });
  });

  it('times out a command waiting on `read` cleanly, and says it was waiting for input', async () => {
    const waiting = await shell({ command: 'echo "Continue? [y/N]"; read -r answer; echo "got $answer"', timeout_ms: 1500 });
    expect(waiting.output).toBe(
      'exit code: none\ntimed out after 1500 ms: the command was interrupted with Ctrl-C.\nThe command was waiting for input from the terminal when it was interrupted: give it its input with a pipe or a heredoc (printf "y\\n" | CMD, CMD <<EOF), or use its non-interactive options.\noutput:\nContinue? [y/N]\n',
    );
    expect((await shell({ command: 'printf "y\\n" | { read -r answer; echo "got $answer"; }' })).output).toBe('exit code: 0\noutput:\ngot y\n');
  });

  it('strips colour and terminal control sequences before the model sees the output', async () => {
    const { sh } = fixture();
    await sh('mkdir -p /tmp/colours/dir && touch /tmp/colours/file.txt && ln -sf file.txt /tmp/colours/link');
    const colours = await shell({ command: "ls --color=always /tmp/colours; printf '\\e[31mred\\e[0m\\n'; printf 'step 1\\rstep 2\\rstep 3\\n'" });
    expect(colours.output).toBe('exit code: 0\noutput:\ndir  file.txt  link\nred\nstep 3\n');
    expect(colours.output).not.toContain('\x1b');
  });

  it('closes full-screen programs (vi, less) at the timeout with their quit keys, and the session goes on', async () => {
    const { sh } = fixture();
    await sh('cd /workspace && printf "line one\\n" > notes.txt');
    for (const command of ['vi notes.txt', 'less /etc/os-release']) {
      const result = await sh(command, 1500);
      expect(result, command).toMatchObject({ timed_out: true, exit_code: null, session_restarted: false });
      expect(result.output, command).toContain(alternateScreenNote);
    }
    // vi quit (:qa!) instead of being killed: no swap file is left in the workspace.
    expect((await sh('ls -A /workspace; echo done')).output).not.toMatch(/\.swp/);
  });

  it('runs heredocs, reports syntax errors, and survives huge output', async () => {
    const { sh } = fixture();
    expect((await sh("cat <<'EOF'\n$HOME `x` 'q'\nEOF")).output).toBe("$HOME `x` 'q'\n");
    expect(await sh('if then')).toMatchObject({ exit_code: 2, timed_out: false });
    const huge = await sh("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo END", 60_000);
    expect(huge.exit_code).toBe(0);
    expect(huge.omitted_bytes).toBeGreaterThan(0);
    expect(huge.output.endsWith('x\nEND\n')).toBe(true);
  });
});
