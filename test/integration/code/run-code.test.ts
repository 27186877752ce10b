// run_code against the real thing: a bwrap sandbox on the built rootfs, sandboxd inside it starting the image's
// jupyter-server on first use, and the real ipykernel and tslab kernels. Through sandboxd's route (the structured
// result) and through the agent's tool plumbing (what the model reads, images included).
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { imageSize } from '../../../src/agent/tools/run-code-output.ts';
import { runTool } from '../../../src/agent/tools/run-tool.ts';
import { parseAllowList } from '../../../src/runtimes/network/allow-list.ts';
import { SandboxdError } from '../../../src/runtimes/sandboxd-client.ts';
import type { CodeLanguage, CodeOutput, RouteRequest, RouteResponse } from '../../../src/sandboxd/protocol.ts';
import { createSandboxFixture, useSandbox, type SandboxFixture } from '../../helpers/sandbox.ts';

type Result = RouteResponse<'runCode'>;

const signal = new AbortController().signal;
const pngSignature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function textOf(result: Result, type: 'stdout' | 'stderr' | 'result' | 'error'): string {
  const parts = result.outputs.filter((output: CodeOutput) =>
    type === 'stdout' || type === 'stderr' ? output.type === 'stream' && output.name === type : output.type === type,
  );
  return parts.map((output) => (output.type === 'error' ? `${output.name}: ${output.message}\n${output.traceback}` : 'text' in output ? (output.text ?? '') : '')).join('');
}

describe('run_code in a real sandbox', () => {
  const fixture = useSandbox();
  const run = (language: CodeLanguage, code: string, timeout_ms = 60_000): Promise<Result> => fixture().sandbox.client.call('runCode', { language, code, timeout_ms });
  const failure = async (request: RouteRequest<'runCode'>): Promise<SandboxdError> => {
    try {
      await fixture().sandbox.client.call('runCode', request);
    } catch (error) {
      if (error instanceof SandboxdError) return error;
      throw error;
    }
    throw new Error('expected the call to fail');
  };

  it('python: state persists from one call to the next, in /workspace', async () => {
    const first = await run('python', 'x = 21');
    expect(first).toMatchObject({ status: 'ok', kernel_started: true, state_lost: false, outputs: [] });
    const second = await run('python', 'print(x * 2)');
    expect(second).toMatchObject({ status: 'ok', kernel_started: false, outputs: [{ type: 'stream', name: 'stdout', text: '42\n' }] });
    expect(second.execution_count).toBe((first.execution_count ?? 0) + 1);
    const cwd = await run('python', 'import os\nopen("from-kernel.txt", "w").write("hi")\nos.getcwd()');
    expect(cwd.outputs).toEqual([{ type: 'result', text: "'/workspace'" }]);
    expect(await readFile(join(fixture().workspace, 'from-kernel.txt'), 'utf8')).toBe('hi');
    // The server's token is not in the kernels' environment.
    const env = await run('python', 'import os\nsorted(k for k in os.environ if "TOKEN" in k or "JUPYTER" in k)');
    expect(env.outputs).toEqual([{ type: 'result', text: '[]' }]);
  });

  it('python: a matplotlib plot comes back as a PNG, and reaches the tool layer as an image', async () => {
    const code = 'import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 3), dpi=100)\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title("squares")\nplt.show()';
    const result = await run('python', code);
    expect(result.status).toBe('ok');
    const images = result.outputs.filter((output) => output.type === 'image');
    expect(images).toHaveLength(1);
    const png = Buffer.from(images[0]!.type === 'image' ? images[0]!.data_base64 : '', 'base64');
    expect(png.subarray(0, 8)).toEqual(pngSignature);
    // A 4x3-inch figure at 100 dpi, cropped to its content by the inline backend (bbox_inches="tight").
    const size = imageSize('image/png', png)!;
    expect(size.width).toBeGreaterThan(300);
    expect(size.width).toBeLessThanOrEqual(400);
    expect(size.height).toBeGreaterThan(220);
    expect(size.height).toBeLessThanOrEqual(300);
    expect(png.length).toBeGreaterThan(5_000);
    expect(png.length).toBeLessThan(200_000);

    const tool = await runTool(fixture().sandbox.client, { name: 'run_code', input: { language: 'python', code: 'plt.plot([3, 2, 1]);' } }, { signal });
    expect(tool.isError).toBe(false);
    expect(tool.output).toMatch(/^status: ok \(python, execution \d+, ran \d+/);
    expect(tool.output).toMatch(/\[image 1: image\/png \d+x\d+, [\d.]+ KB\] <Figure size 640x480 with 1 Axes>/);
    expect(tool.images).toHaveLength(1);
    expect(tool.images![0]).toMatchObject({ mediaType: 'image/png', width: expect.any(Number), height: expect.any(Number) });
    expect(tool.images![0]!.width).toBeGreaterThan(400);
    expect(tool.images![0]!.data.subarray(0, 8)).toEqual(pngSignature);
  });

  it('python: an infinite loop is interrupted at its timeout, and the kernel still answers with its state', async () => {
    await run('python', 'x = 21');
    // Interrupted, not replaced: the kernel kept its state (a kernel that does not stop is replaced, state_lost).
    const looped = await run('python', 'while True: pass', 2000);
    expect(looped.status).toBe('timeout');
    expect(looped.state_lost).toBe(false);
    expect(looped.outputs).toEqual([expect.objectContaining({ type: 'error', name: 'KeyboardInterrupt' })]);
    expect(looped.notes.join(' ')).toMatch(/longer than timeout_ms \(2000 ms\) and was interrupted; the kernel stopped and kept its state/);
    expect(looped.duration_ms).toBeGreaterThanOrEqual(2000);
    const after = await run('python', 'print(x)');
    expect(after).toMatchObject({ status: 'ok', state_lost: false, outputs: [{ type: 'stream', name: 'stdout', text: '21\n' }] });
  });

  it('python: an exception is a result with its traceback, without colours', async () => {
    const result = await run('python', 'def f():\n    return 1 / 0\nf()');
    expect(result.status).toBe('error');
    const error = result.outputs.find((output) => output.type === 'error');
    expect(error).toMatchObject({ type: 'error', name: 'ZeroDivisionError', message: 'division by zero' });
    expect(error?.type === 'error' && error.traceback).toMatch(/----> 3 f\(\)[\s\S]*return 1 \/ 0[\s\S]*ZeroDivisionError: division by zero/);
    expect(JSON.stringify(result)).not.toContain('\\u001b');
    // input() has no frontend to ask: an error, not a hang.
    const input = await run('python', 'input("name? ")', 10_000);
    expect(input.outputs).toEqual([expect.objectContaining({ type: 'error', name: 'StdinNotImplementedError' })]);
  });

  it('typescript: an interface and a function typed with it run; a type error is reported as an error', async () => {
    const ok = await run('typescript', 'interface Point { x: number; y: number }\nfunction norm(p: Point): number { return Math.hypot(p.x, p.y) }\nconsole.log(norm({ x: 3, y: 4 }))');
    expect(ok).toMatchObject({ status: 'ok', kernel_started: true });
    expect(textOf(ok, 'stdout')).toBe('5\n');
    const typeError = await run('typescript', 'const n: number = "not a number";\nconsole.log("never printed")');
    expect(typeError.status).toBe('error');
    expect(textOf(typeError, 'stderr')).toMatch(/Type 'string' is not assignable to type 'number'/);
    expect(textOf(typeError, 'stdout')).toBe('');
    // Definitions persist, and Node's types and modules are there.
    const again = await run('typescript', 'import { existsSync } from "fs";\nconsole.log(norm({ x: 6, y: 8 }), existsSync("/workspace"))');
    expect(again).toMatchObject({ status: 'ok', state_lost: false });
    expect(textOf(again, 'stdout')).toBe('10 true\n');
  });

  it('javascript: state persists across calls; an infinite loop is interrupted and the kernel keeps it', async () => {
    expect((await run('javascript', 'let count = 40;\nfunction bump() { return ++count }')).status).toBe('ok');
    expect(textOf(await run('javascript', 'bump(); console.log(bump())'), 'stdout')).toBe('42\n');
    const looped = await run('javascript', 'while (true) {}', 2000);
    expect(looped).toMatchObject({ status: 'timeout', state_lost: false });
    expect(textOf(looped, 'stderr')).toMatch(/interrupted/);
    const after = await run('javascript', 'console.log(count)');
    expect(after).toMatchObject({ status: 'ok', outputs: [{ type: 'stream', name: 'stdout', text: '42\n' }] });
  });

  it('refuses bad input with a message that says what to fix, and the next call works', async () => {
    const cases: Array<[RouteRequest<'runCode'>, RegExp]> = [
      [{ language: 'ruby' as CodeLanguage, code: 'puts 1' }, /language: Invalid option: expected one of "python"\|"typescript"\|"javascript"/],
      [{ language: 'python', code: '' }, /code: must not be empty/],
      [{ language: 'python', code: `# ${'x'.repeat(100_000)}` }, /code: Too big: expected string to have <=100000 characters/],
      [{ language: 'python', code: '1', timeout_ms: 0 }, /timeout_ms: Too small/],
      [{ language: 'python', code: '1', timeout_ms: 7_200_000 }, /timeout_ms: Too big/],
    ];
    for (const [request, message] of cases) {
      const error = await failure(request);
      expect(error.code).toBe('invalid_request');
      expect(error.message).toMatch(message);
    }
    expect(await run('python', '6 * 7')).toMatchObject({ status: 'ok', outputs: [{ type: 'result', text: '42' }] });
  });

  it('caps code that prints megabytes, keeping the beginning and the end', async () => {
    const result = await run('python', 'for i in range(400_000):\n    print(f"line {i}")\nprint("done")');
    expect(result.status).toBe('ok');
    const stdout = textOf(result, 'stdout');
    expect(stdout.startsWith('line 0\nline 1\n')).toBe(true);
    expect(stdout.endsWith('line 399999\ndone\n')).toBe(true);
    expect(result.omitted_bytes).toBeGreaterThan(3_000_000);
    expect(Buffer.byteLength(stdout)).toBeLessThan(800 * 1024);
    expect(stdout).toMatch(/\[\.\.\. \d+ bytes of output omitted \.\.\.\]/);
    expect((await run('python', 'print("next")')).outputs).toEqual([{ type: 'stream', name: 'stdout', text: 'next\n' }]);
  });

  // The restarted kernel is made slow to start (a startup file that sleeps 10 s, as a busy machine makes any start
  // slow): the next call's timeout (8 s) is for its code, not for Jupyter's restart of the kernel. The case's own
  // ceiling covers that restart (a kernel start) on a loaded machine.
  it('reports code that kills its kernel, and the next call runs on a restarted kernel', async () => {
    const startupFile = 'os.path.join(get_ipython().profile_dir.startup_dir, "00-slow-start.py")';
    await run('python', `import os\nx = 21\nopen(${startupFile}, "w").write("import time\\ntime.sleep(10)\\n")`);
    const died = await run('python', 'import os\nos._exit(1)');
    expect(died).toMatchObject({ status: 'kernel_died', state_lost: true });
    expect(died.notes.join(' ')).toMatch(/kernel process exited while running this code .* gone/);
    const next = await run('python', `import os\nos.remove(${startupFile})\nprint("alive")\n"x" in globals()`, 8000);
    expect(next.status).toBe('ok');
    expect(next.outputs).toEqual([
      { type: 'stream', name: 'stdout', text: 'alive\n' },
      { type: 'result', text: 'False' },
    ]);
  }, 240_000);

  it('runs the languages side by side, each in its own kernel', async () => {
    const [python, javascript] = await Promise.all([run('python', 'import time\ntime.sleep(0.5)\nprint("py")'), run('javascript', 'console.log("js")')]);
    expect(textOf(python, 'stdout')).toBe('py\n');
    expect(textOf(javascript, 'stdout')).toBe('js\n');
  });
});

describe('run_code in a sandbox with a network allow-list', () => {
  let host: Server;
  let fixture: SandboxFixture | undefined;
  beforeAll(async () => {
    host = createServer((request, response) => response.end(`hello ${request.url}`));
    await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
    const { port } = host.address() as AddressInfo;
    fixture = await createSandboxFixture({ network: { allow: parseAllowList([`127.0.0.1:${port}`]) } });
  });
  afterAll(async () => {
    await fixture?.dispose();
    await new Promise((resolve) => host.close(resolve));
  });

  it("gives the kernels the egress proxy's variables, and the proxy lets them through to what is allowed", async () => {
    const { port } = host.address() as AddressInfo;
    // 127.0.0.1 is in NO_PROXY (the sandbox's own loopback stays direct): drop that for this request to the host.
    const code = `import os, urllib.request\nos.environ.pop("NO_PROXY"); os.environ.pop("no_proxy")\nprint(os.environ["HTTP_PROXY"], urllib.request.urlopen("http://127.0.0.1:${port}/from-kernel").read().decode())`;
    const python = await fixture!.sandbox.client.call('runCode', { language: 'python', code });
    expect(python.outputs).toEqual([{ type: 'stream', name: 'stdout', text: 'http://127.0.0.1:3128 hello /from-kernel\n' }]);
    const javascript = await fixture!.sandbox.client.call('runCode', { language: 'javascript', code: 'console.log(process.env.HTTPS_PROXY, process.env.NO_PROXY)' });
    expect(javascript.outputs).toEqual([{ type: 'stream', name: 'stdout', text: 'http://127.0.0.1:3128 localhost,127.0.0.1\n' }]);
  });
});
