// run_code through the tool plumbing (argument checks, dispatch, formatting, images) against the in-memory sandboxd;
// the real kernels are in test/integration/code/.
import { describe, expect, it } from 'vitest';
import { InMemorySandboxd } from '../testing/in-memory-sandboxd.ts';
import { formatRunCode, imageSize, type RunCodeResult } from './run-code-output.ts';
import { runTool } from './run-tool.ts';

const signal = new AbortController().signal;

/** A 3x2 PNG's first 24 bytes (signature and IHDR) are all imageSize reads. */
function pngHeader(width: number, height: number): Buffer {
  const header = Buffer.alloc(24);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(header, 0);
  header.writeUInt32BE(13, 8);
  header.write('IHDR', 12, 'latin1');
  header.writeUInt32BE(width, 16);
  header.writeUInt32BE(height, 20);
  return header;
}

const base: RunCodeResult = {
  language: 'python',
  status: 'ok',
  outputs: [],
  execution_count: 3,
  kernel_started: false,
  state_lost: false,
  notes: [],
  omitted_bytes: 0,
  omitted_outputs: 0,
  startup_ms: 0,
  duration_ms: 12,
};

describe('run_code results', () => {
  it('read as a status line, then the outputs in order under labels; images become ToolImages with their size', () => {
    const png = pngHeader(640, 480);
    const { output, images } = formatRunCode({
      ...base,
      kernel_started: true,
      startup_ms: 2400,
      notes: ['The code ran longer than timeout_ms (1000 ms) and was interrupted; the kernel stopped and kept its state.'],
      outputs: [
        { type: 'stream', name: 'stdout', text: '42\n' },
        { type: 'image', mime_type: 'image/png', data_base64: png.toString('base64'), text: '<Figure size 640x480 with 1 Axes>' },
        { type: 'result', text: "'/workspace'" },
        { type: 'error', name: 'ZeroDivisionError', message: 'division by zero', traceback: 'Traceback ...\nZeroDivisionError: division by zero' },
      ],
    });
    expect(output).toBe(
      [
        'status: ok (python, execution 3, ran 12 ms)',
        'A new python kernel was started for this call (2.4 s).',
        'The code ran longer than timeout_ms (1000 ms) and was interrupted; the kernel stopped and kept its state.',
        '[stdout]\n42',
        '[image 1: image/png 640x480, 24 B] <Figure size 640x480 with 1 Axes>',
        "[result]\n'/workspace'",
        '[error] ZeroDivisionError: division by zero\nTraceback ...\nZeroDivisionError: division by zero',
      ].join('\n'),
    );
    expect(images).toEqual([{ mediaType: 'image/png', data: png, width: 640, height: 480 }]);
    expect(formatRunCode({ ...base, status: 'timeout', execution_count: null }).output).toBe('status: timeout (python, ran 12 ms)\n(no output before it ended)');
  });

  it('reads PNG and GIF sizes, and nothing from anything else', () => {
    expect(imageSize('image/png', pngHeader(3, 2))).toEqual({ width: 3, height: 2 });
    expect(imageSize('image/gif', Buffer.from('GIF89a\x05\x00\x07\x00', 'latin1'))).toEqual({ width: 5, height: 7 });
    expect(imageSize('image/png', Buffer.from('not a png at all, really not'))).toBeUndefined();
    expect(imageSize('image/jpeg', Buffer.alloc(100))).toBeUndefined();
  });

  it('go through runTool: sandboxd is called with the arguments, an exception in the code is a result, not a tool error', async () => {
    const sandbox = new InMemorySandboxd({
      code: (request) => ({ language: request.language, status: 'error', outputs: [{ type: 'error', name: 'NameError', message: "name 'y' is not defined", traceback: '' }] }),
    });
    const result = await runTool(sandbox, { name: 'run_code', input: { language: 'python', code: 'y', timeout_ms: 5000 } }, { signal });
    expect(sandbox.calls).toEqual([{ route: 'runCode', body: { language: 'python', code: 'y', timeout_ms: 5000 } }]);
    expect(result.isError).toBe(false);
    expect(result.output).toBe("status: error (python, execution 1, ran 1 ms)\n[error] NameError: name 'y' is not defined");
    expect(result.images).toBeUndefined();
  });

  it('refuse bad arguments with a message that says what to fix, without calling sandboxd', async () => {
    const sandbox = new InMemorySandboxd({ code: () => ({}) });
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ language: 'ruby', code: 'puts 1' }, /language: Invalid option: expected one of "python"\|"typescript"\|"javascript"/],
      [{ language: 'python', code: '' }, /code: Too small/],
      [{ language: 'python', code: 'x'.repeat(100_001) }, /code: Too big: expected string to have <=100000 characters/],
      [{ language: 'python', code: '1', timeout_ms: 10 }, /timeout_ms: Too small: expected number to be >=1000/],
      [{ language: 'python', code: '1', timeout_ms: 4_000_000 }, /timeout_ms: Too big/],
      [{ language: 'python', code: '1', cell: 2 }, /Unrecognized key: "cell"/],
      [{ code: '1' }, /language: Invalid option/],
    ];
    for (const [input, message] of cases) {
      const result = await runTool(sandbox, { name: 'run_code', input }, { signal });
      expect(result.isError, JSON.stringify(input).slice(0, 80)).toBe(true);
      expect(result.output).toMatch(message);
      expect(result.output).toMatch(/Expected: run_code \{language: string, code: string, timeout_ms\?: integer\}/);
    }
    expect(sandbox.calls).toEqual([]);
  });

  it('turn Jupyter failing to start into an error result that says so', async () => {
    const result = await runTool(new InMemorySandboxd(), { name: 'run_code', input: { language: 'typescript', code: 'const a = 1' } }, { signal });
    expect(result).toMatchObject({ isError: true, output: 'run_code failed: unavailable: the Jupyter server could not start: not in this test' });
  });
});
