import { describe, expect, it } from 'vitest';
import { SandboxdError } from '../../runtimes/sandboxd-client.ts';
import { InMemorySandboxd } from '../testing/in-memory-sandboxd.ts';
import { modelOutputMaxChars, toolNames } from './definitions.ts';
import type { LimitCounters } from '../../runtimes/types.ts';
import { runTool, truncateMiddle, type LimitWatch, type SandboxdCaller } from './run-tool.ts';

const signal = new AbortController().signal;

describe('runTool', () => {
  it('runs each tool through sandboxd and describes the result', async () => {
    const sandbox = new InMemorySandboxd({ shell: (command) => ({ output: `out of ${command}\n`, exit_code: 3 }) });
    const write = await runTool(sandbox, { name: 'write_file', input: { path: 'src/a.txt', content: 'one two' } }, { signal });
    expect(write).toMatchObject({ isError: false, output: 'Created src/a.txt (7 bytes).' });
    expect(write.durationMs).toBeGreaterThanOrEqual(0);
    expect((await runTool(sandbox, { name: 'write_file', input: { path: 'src/a.txt', content: 'one two' } }, { signal })).output).toMatch(/^Overwrote/);
    expect((await runTool(sandbox, { name: 'read_file', input: { path: 'src/a.txt' } }, { signal })).output).toBe('one two');
    expect((await runTool(sandbox, { name: 'edit_file', input: { path: 'src/a.txt', old_string: 'two', new_string: '2' } }, { signal })).output).toMatch(/^Edited src\/a.txt/);
    expect(sandbox.files.get('src/a.txt')).toBe('one 2');
    expect((await runTool(sandbox, { name: 'list_files', input: {} }, { signal })).output).toBe('src/\nsrc/a.txt  (5 bytes)');
    const shell = await runTool(sandbox, { name: 'shell', input: { command: 'make', timeout_ms: 5000 } }, { signal });
    expect(shell).toMatchObject({ isError: false, output: 'exit code: 3\noutput:\nout of make\n' });
    expect(sandbox.calls.at(-1)).toEqual({ route: 'shellExec', body: { command: 'make', timeout_ms: 5000 } });
    expect((await runTool(sandbox, { name: 'delete_file', input: { path: 'src' } }, { signal })).output).toBe('Deleted directory src.');
    expect(sandbox.files.size).toBe(0);
  });

  it('ends the job on a valid finish, without calling sandboxd', async () => {
    const sandbox = new InMemorySandboxd();
    const result = await runTool(sandbox, { name: 'finish', input: { summary: 'all done' } }, { signal });
    expect(result).toMatchObject({ isError: false, finishSummary: 'all done' });
    expect(sandbox.calls).toEqual([]);
  });

  it('answers an unknown tool with the list of tools', async () => {
    const result = await runTool(new InMemorySandboxd(), { name: 'run_python', input: {} }, { signal });
    expect(result.isError).toBe(true);
    expect(result.output).toMatch(/Unknown tool "run_python"/);
    expect(result.output).toContain(`The available tools are: ${toolNames.join(', ')}.`);
    expect(toolNames).toEqual(expect.arrayContaining(['shell', 'run_code', 'read_file', 'write_file', 'edit_file', 'list_files', 'delete_file', 'recall', 'finish']));
  });

  it('answers arguments that fail the schema with what to fix', async () => {
    const sandbox = new InMemorySandboxd();
    const result = await runTool(sandbox, { name: 'write_file', input: { path: 'a.txt', contents: 'x' } }, { signal });
    expect(result.isError).toBe(true);
    expect(result.output).toMatch(/Invalid arguments for write_file/);
    expect(result.output).toMatch(/- content: /);
    expect(result.output).toMatch(/contents/); // the unrecognized key is named
    expect(result.output).toMatch(/Expected: write_file \{path: string, content: string\}/);
    expect(sandbox.calls).toEqual([]);
    const finish = await runTool(sandbox, { name: 'finish', input: {} }, { signal });
    expect(finish.isError).toBe(true);
    expect(finish.finishSummary).toBeUndefined();
  });

  it('answers arguments that are not JSON, and accepts JSON encoded twice', async () => {
    const sandbox = new InMemorySandboxd();
    const broken = await runTool(sandbox, { name: 'read_file', input: '{"path": ' }, { signal });
    expect(broken.isError).toBe(true);
    expect(broken.output).toMatch(/not valid JSON/);
    expect(broken.output).toMatch(/Received: "\{\\"path\\": "/);
    expect(broken.output).toMatch(/read_file \{path: string\}/);
    const doubled = await runTool(sandbox, { name: 'write_file', input: JSON.stringify({ path: 'b', content: 'c' }) }, { signal });
    expect(doubled.isError).toBe(false);
    expect(sandbox.files.get('b')).toBe('c');
  });

  it('turns a sandboxd error into an error result with its code', async () => {
    const sandbox = new InMemorySandboxd({ files: { 'a.txt': 'x x' } });
    const missing = await runTool(sandbox, { name: 'read_file', input: { path: 'nope.txt' } }, { signal });
    expect(missing).toMatchObject({ isError: true, output: 'read_file failed: not_found: nope.txt does not exist' });
    const ambiguous = await runTool(sandbox, { name: 'edit_file', input: { path: 'a.txt', old_string: 'x', new_string: 'y' } }, { signal });
    expect(ambiguous.output).toMatch(/^edit_file failed: multiple_matches: /);
    const outside = await runTool(sandbox, { name: 'write_file', input: { path: '../etc/passwd', content: '' } }, { signal });
    expect(outside.output).toMatch(/^write_file failed: path_outside_workspace: /);
  });

  it('turns any other exception into an error result', async () => {
    const throwing: SandboxdCaller = {
      call: () => Promise.reject(new TypeError('socket exploded')),
    };
    const result = await runTool(throwing, { name: 'shell', input: { command: 'ls' } }, { signal });
    expect(result).toMatchObject({ isError: true, output: 'shell failed with an unexpected error: socket exploded' });
    const unreachable: SandboxdCaller = { call: () => Promise.reject(new SandboxdError('unreachable', 'cannot reach sandboxd: ECONNREFUSED')) };
    expect((await runTool(unreachable, { name: 'list_files', input: {} }, { signal })).output).toBe('list_files failed: unreachable: cannot reach sandboxd: ECONNREFUSED');
  });

  it('rejects with the abort reason when cancelled mid-call', async () => {
    const controller = new AbortController();
    const sandbox = new InMemorySandboxd({ shell: () => new Promise(() => {}) });
    const running = runTool(sandbox, { name: 'shell', input: { command: 'sleep 1000' } }, { signal: controller.signal });
    const reason = new Error('job cancelled');
    setTimeout(() => controller.abort(reason), 10);
    await expect(running).rejects.toBe(reason);
  });

  it('reports timeouts and restarts of the shell', async () => {
    const caller: SandboxdCaller = {
      call: async () => ({ output: 'partial', exit_code: null, timed_out: true, omitted_bytes: 10, session_restarted: true, duration_ms: 5 }) as never,
    };
    const result = await runTool(caller, { name: 'shell', input: { command: 'sleep 9', timeout_ms: 2000 } }, { signal });
    expect(result.isError).toBe(false);
    expect(result.output).toBe(
      'exit code: none\ntimed out after 2000 ms: the command was interrupted with Ctrl-C.\n' +
        'The shell session was restarted: the working directory and environment variables were reset.\n' +
        "10 bytes were dropped from the middle of the output (sandboxd's buffer limit).\noutput:\npartial",
    );
  });

  it('cuts long output for the model but returns it whole', async () => {
    const long = Array.from({ length: 10_000 }, (_, index) => `line ${index}`).join('\n');
    const sandbox = new InMemorySandboxd({ files: { 'big.txt': long } });
    const result = await runTool(sandbox, { name: 'read_file', input: { path: 'big.txt' } }, { signal });
    expect(result.output).toBe(long);
    expect(result.omittedChars).toBe(long.length - modelOutputMaxChars);
    expect(result.modelOutput.startsWith('line 0\nline 1\n')).toBe(true);
    expect(result.modelOutput.endsWith('line 9998\nline 9999')).toBe(true);
    expect(result.modelOutput).toMatch(new RegExp(`\\[\\.\\.\\. ${long.length - modelOutputMaxChars} characters \\(\\d+ lines\\) omitted`));
    expect(result.modelOutput.length).toBeLessThan(modelOutputMaxChars + 300);
  });
});

describe('truncateMiddle', () => {
  it('leaves short text alone and keeps head and tail of long text', () => {
    expect(truncateMiddle('abc', 3)).toEqual({ text: 'abc', omittedChars: 0 });
    const { text, omittedChars } = truncateMiddle('0123456789', 4);
    expect(omittedChars).toBe(6);
    expect(text.startsWith('01')).toBe(true);
    expect(text.endsWith('89')).toBe(true);
    expect(text).toMatch(/6 characters omitted/);
  });

  it('never splits a surrogate pair', () => {
    const { text } = truncateMiddle('😀😀😀😀😀😀', 5);
    expect(text).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])/);
    expect(text).not.toMatch(/(?<![\ud800-\udbff])[\udc00-\udfff]/);
  });
});

describe('limit notes', () => {
  const megabyte = 1024 * 1024;
  const calm: LimitCounters = { oomKills: 0, pidsRefused: 0, processes: 5, workspaceFreeBytes: 500 * megabyte, tmpFreeBytes: 100 * megabyte };

  /** A watch whose counters move from `before` to `after` during the call (the first reading is taken before it). */
  function watch(after: Partial<LimitCounters>, options: { before?: Partial<LimitCounters>; workspaceDiskMb?: number } = {}) {
    const readings = [{ ...calm, ...options.before }, { ...calm, ...after }];
    let stopped = 0;
    const limitWatch: LimitWatch = {
      limits: { memoryMb: 512, pids: 100, diskMb: 128, workspaceDiskMb: options.workspaceDiskMb },
      counters: async () => readings.shift() ?? { ...calm, ...after },
      stopProcesses: async () => {
        stopped++;
        return 42;
      },
    };
    return { limitWatch, stopped: () => stopped };
  }
  const shell = (output: string, limits: LimitWatch) =>
    runTool(new InMemorySandboxd({ shell: () => ({ output, exit_code: 1 }) }), { name: 'shell', input: { command: 'x' } }, { signal, limits });

  it('says nothing when no limit was hit', async () => {
    const result = await shell('fine\n', watch({}).limitWatch);
    expect(result.limitsHit).toBeUndefined();
    expect(result.output).not.toContain('[limit]');
  });

  it('names the memory limit when the OOM killer struck during the call', async () => {
    const result = await shell('Killed\n', watch({ oomKills: 1 }).limitWatch);
    expect(result.limitsHit).toEqual(['memory']);
    expect(result.output).toMatch(/Killed\n\n\n\[limit\] a process was killed: the sandbox's memory limit \(512 MB\) was reached\./);
    expect(result.modelOutput).toContain('[limit]');
    expect((await shell('', watch({ oomKills: 3 }).limitWatch)).output).toContain('3 processes were killed');
  });

  it('names the process limit, and stops the processes only when the sandbox is still crowded', async () => {
    const burst = watch({ pidsRefused: 1, processes: 10 });
    const passing = await shell('fork: retry', burst.limitWatch);
    expect(passing.limitsHit).toEqual(['pids']);
    expect(passing.output).toContain("[limit] fork failed: the sandbox's process limit (100 processes and threads) was reached. Run fewer");
    expect(burst.stopped()).toBe(0);
    const bomb = watch({ pidsRefused: 900, processes: 99 });
    const stuck = await shell('fork: retry', bomb.limitWatch);
    expect(stuck.output).toMatch(/still at the limit, so every process your commands started \(42\) was stopped/);
    expect(bomb.stopped()).toBe(1);
  });

  it('reports a limit hit between two calls at the next call, once', async () => {
    // A server left running in the background is OOM-killed while no call runs; then a bomb is stopped, and its
    // processes, still forking while they die, are not the next call's doing.
    let counters: LimitCounters = { ...calm };
    const limitWatch: LimitWatch = {
      limits: { memoryMb: 512, pids: 100, diskMb: 128 },
      counters: async () => counters,
      stopProcesses: async () => {
        counters = { ...counters, pidsRefused: counters.pidsRefused + 7, processes: 5 };
        return 90;
      },
    };
    expect((await shell('', limitWatch)).limitsHit).toBeUndefined();
    counters = { ...counters, oomKills: 1 };
    expect((await shell('', limitWatch)).limitsHit).toEqual(['memory']);
    expect((await shell('', limitWatch)).limitsHit).toBeUndefined();
    counters = { ...counters, pidsRefused: 300, processes: 100 };
    expect((await shell('', limitWatch)).output).toMatch(/every process your commands started \(90\) was stopped/);
    expect((await shell('', limitWatch)).limitsHit).toBeUndefined();
  });

  it('names a full disk when the call filled it or ran into it, not on every later call', async () => {
    const filled = await shell('', watch({ workspaceFreeBytes: 0 }, { workspaceDiskMb: 1024 }).limitWatch);
    expect(filled.limitsHit).toEqual(['workspace_disk']);
    expect(filled.output).toContain('[limit] no space left: the workspace disk limit (1024 MB) is full.');
    const stillFull = { workspaceFreeBytes: 0, tmpFreeBytes: 0 };
    expect((await shell('ok\n', watch(stillFull, { before: stillFull, workspaceDiskMb: 1024 }).limitWatch)).limitsHit).toBeUndefined();
    const again = await shell('cp: error writing: No space left on device\n', watch(stillFull, { before: stillFull, workspaceDiskMb: 1024 }).limitWatch);
    expect(again.limitsHit).toEqual(['workspace_disk', 'tmp_disk']);
    expect(again.output).toContain('[limit] no space left: /tmp is full (its limit is 128 MB).');
    // Without a disk of its own, a workspace is not reported against a limit it does not have.
    expect((await shell('', watch({ workspaceFreeBytes: 0 }).limitWatch)).limitsHit).toBeUndefined();
  });

  it('leaves finish alone and survives counters that cannot be read', async () => {
    const broken: LimitWatch = { limits: { memoryMb: 1, pids: 1, diskMb: 1 }, counters: () => Promise.reject(new Error('gone')) };
    expect((await shell('out\n', broken)).output).toBe('exit code: 1\noutput:\nout\n');
    const finish = await runTool(new InMemorySandboxd(), { name: 'finish', input: { summary: 'done' } }, { signal, limits: watch({ oomKills: 5 }).limitWatch });
    expect(finish.limitsHit).toBeUndefined();
  });
});

describe('file operations for the audit log', () => {
  it('reports each file tool call that reached sandboxd, refused ones with their error code, and nothing else', async () => {
    const sandbox = new InMemorySandboxd();
    const seen: unknown[] = [];
    const options = { signal, onFileOperation: (operation: unknown) => seen.push(operation) };
    await runTool(sandbox, { name: 'write_file', input: { path: 'a.txt', content: 'x' } }, options);
    await runTool(sandbox, { name: 'read_file', input: { path: 'a.txt' } }, options);
    await runTool(sandbox, { name: 'edit_file', input: { path: 'a.txt', old_string: 'x', new_string: 'y' } }, options);
    await runTool(sandbox, { name: 'list_files', input: {} }, options);
    await runTool(sandbox, { name: 'read_file', input: { path: 'missing.txt' } }, options);
    await runTool(sandbox, { name: 'delete_file', input: { path: 'a.txt' } }, options);
    // Not file operations, or not made: the shell, finish, a malformed call.
    await runTool(sandbox, { name: 'shell', input: { command: 'cat a.txt' } }, options);
    await runTool(sandbox, { name: 'finish', input: { summary: 's' } }, options);
    await runTool(sandbox, { name: 'read_file', input: { file: 'a.txt' } }, options);
    expect(seen).toEqual([
      { op: 'write', path: 'a.txt', ok: true },
      { op: 'read', path: 'a.txt', ok: true },
      { op: 'edit', path: 'a.txt', ok: true },
      { op: 'list', path: '.', ok: true },
      { op: 'read', path: 'missing.txt', ok: false, error: 'not_found' },
      { op: 'delete', path: 'a.txt', ok: true },
    ]);
  });
});

describe('runTool: shell sessions, search and listing notes', () => {
  it('passes the session to sandboxd and names it when it restarted', async () => {
    const sandbox = new InMemorySandboxd();
    await runTool(sandbox, { name: 'shell', input: { command: 'pwd', session: 'server' } }, { signal });
    expect(sandbox.calls.at(-1)).toEqual({ route: 'shellExec', body: { command: 'pwd', session: 'server' } });
    const hostile = await runTool(sandbox, { name: 'shell', input: { command: 'pwd', session: 'a; rm -rf /' } }, { signal });
    expect(hostile.isError).toBe(true);
    expect(hostile.output).toMatch(/session: a session name is 1 to 32 letters, digits/);
    const restarted = await runTool({ call: async () => ({ output: '', exit_code: null, timed_out: true, omitted_bytes: 0, session_restarted: true, duration_ms: 1, waiting_for_input: true }) } as unknown as SandboxdCaller, { name: 'shell', input: { command: 'read x', session: 'two', timeout_ms: 1000 } }, { signal });
    expect(restarted.output).toMatch(/timed out after 1000 ms/);
    expect(restarted.output).toMatch(/waiting for input from the terminal/);
    expect(restarted.output).toMatch(/The shell session "two" was restarted/);
  });

  it('formats search results with file and line, and the cap', async () => {
    const sandbox = new InMemorySandboxd({ files: { 'src/a.py': 'x = 1\ndef needle():\n', 'src/b.ts': 'const needle = 2;\n', 'c.md': 'nothing' } });
    const found = await runTool(sandbox, { name: 'search_files', input: { pattern: 'needle' } }, { signal });
    expect(found).toMatchObject({ isError: false, output: 'src/a.py:2: def needle():\nsrc/b.ts:1: const needle = 2;\n[2 matching lines in 2 files]' });
    expect((await runTool(sandbox, { name: 'search_files', input: { pattern: 'needle', glob: '*.ts' } }, { signal })).output).toMatch(/^src\/b.ts:1:/);
    expect((await runTool(sandbox, { name: 'search_files', input: { pattern: 'absent', path: 'src' } }, { signal })).output).toBe('No match for "absent" in src.');
    const invalid = await runTool(sandbox, { name: 'search_files', input: { pattern: '(' } }, { signal });
    expect(invalid).toMatchObject({ isError: true, output: expect.stringMatching(/^search_files failed: invalid_request: ripgrep refused/) as string });
    const many: SandboxdCaller = { call: async () => ({ path: '.', matches: [{ path: 'a', line: 1, text: 'x' }], truncated: true, files_with_matches: 1 }) } as unknown as SandboxdCaller;
    expect((await runTool(many, { name: 'search_files', input: { pattern: 'x' } }, { signal })).output).toMatch(/only the first 1 matching lines are shown/);
    expect((await runTool(sandbox, { name: 'search_files', input: {} }, { signal })).output).toMatch(/Invalid arguments for search_files/);
  });

  it('records searches in the audit log as file operations', async () => {
    const operations: unknown[] = [];
    const sandbox = new InMemorySandboxd({ files: { 'a.txt': 'x' } });
    await runTool(sandbox, { name: 'search_files', input: { pattern: 'x', path: 'a.txt' } }, { signal, onFileOperation: (operation) => operations.push(operation) });
    await runTool(sandbox, { name: 'search_files', input: { pattern: '(' } }, { signal, onFileOperation: (operation) => operations.push(operation) });
    expect(operations).toEqual([
      { op: 'search', path: 'a.txt', ok: true },
      { op: 'search', path: '.', ok: false, error: 'invalid_request' },
    ]);
  });

  it('names what a listing skipped and how to see it', async () => {
    const listing: SandboxdCaller = {
      call: async () => ({
        path: '.',
        entries: [{ path: 'src', type: 'directory', size: 0 }],
        truncated: false,
        ignored: [
          { path: 'node_modules', type: 'directory', reason: 'default' },
          { path: 'dist', type: 'directory', reason: 'ignore_file' },
          { path: 'app.log', type: 'file', reason: 'ignore_file' },
        ],
        ignored_count: 5,
      }),
    } as unknown as SandboxdCaller;
    const result = await runTool(listing, { name: 'list_files', input: { depth: 3 } }, { signal });
    expect(result.output).toBe('src/\n[not listed: node_modules/ (skipped by default); dist/, app.log (ignore files) and 2 more; pass include_ignored: true to list them]');
    const sandbox = new InMemorySandboxd();
    await runTool(sandbox, { name: 'list_files', input: { path: 'src', depth: 4, include_ignored: true } }, { signal });
    expect(sandbox.calls.at(-1)).toEqual({ route: 'listFiles', body: { path: 'src', depth: 4, include_ignored: true } });
    expect((await runTool(sandbox, { name: 'list_files', input: { depth: 0 } }, { signal })).isError).toBe(true);
  });
});
