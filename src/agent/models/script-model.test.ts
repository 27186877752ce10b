import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateText, streamText, tool } from 'ai';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { WorkcellError } from '../../errors.ts';
import { ScriptModel, loadScript, parseScript } from './script-model.ts';

const fixtures = join(import.meta.dirname, '../../../test/fixtures/trajectories');
const tools = {
  write_file: tool({ description: 'write', inputSchema: z.object({ path: z.string(), content: z.string() }) }),
  shell: tool({ description: 'shell', inputSchema: z.object({ command: z.string() }) }),
};

describe('ScriptModel', () => {
  it('replays one turn per generate call, then says it is exhausted', async () => {
    const model = new ScriptModel(
      parseScript(JSON.stringify({ turns: [{ text: 'first', tool_calls: [{ name: 'shell', args: { command: 'ls' } }] }, { text: 'second' }] }), 't.json'),
      't.json',
    );
    const first = await generateText({ model, tools, prompt: 'go', maxRetries: 0 });
    expect(first.text).toBe('first');
    expect(first.toolCalls).toMatchObject([{ toolName: 'shell', input: { command: 'ls' }, toolCallId: 'script_1_1' }]);
    expect(first.finishReason).toBe('tool-calls');
    expect(first.usage.inputTokens).toBeGreaterThan(0);
    expect(first.usage.outputTokens).toBeGreaterThan(0);
    const second = await generateText({ model, tools, prompt: 'go', maxRetries: 0 });
    expect(second.text).toBe('second');
    expect(second.finishReason).toBe('stop');
    const third = await generateText({ model, tools, prompt: 'go', maxRetries: 0 });
    expect(third.text).toMatch(/script t\.json is exhausted: all 2 recorded turns/);
    expect(third.toolCalls).toEqual([]);
    expect(model.turnsReplayed).toBe(3);
  });

  it('streams text and tool calls as proper stream parts', async () => {
    const model = new ScriptModel(loadScript(join(fixtures, 'two-files.json')), 'two-files.json');
    const result = streamText({ model, tools, prompt: 'go', maxRetries: 0 });
    const types: string[] = [];
    let text = '';
    for await (const part of result.fullStream) {
      types.push(part.type);
      if (part.type === 'text-delta') text += part.text;
    }
    expect(text).toBe('I will create the script and a notes file.');
    expect(types).toContain('tool-input-delta');
    expect(types.at(-1)).toBe('finish');
    const step = await result.finalStep;
    expect(step.toolCalls.map((call) => [call.toolName, call.input])).toEqual([
      ['write_file', { path: 'hello.py', content: 'print("Hello from workcell")\n' }],
      ['write_file', { path: 'notes.txt', content: 'status: draft\n' }],
    ]);
    expect(step.usage.outputTokens).toBeGreaterThan(0);
  });

  it('sends string args verbatim, malformed JSON included', async () => {
    const model = new ScriptModel(parseScript(JSON.stringify({ turns: [{ tool_calls: [{ name: 'shell', args: '{"command": ' }] }] }), 'x'), 'x');
    const result = await generateText({ model, tools, prompt: 'go', maxRetries: 0 });
    expect(result.toolCalls).toMatchObject([{ toolName: 'shell', input: '{"command": ', invalid: true }]);
  });

  it('honours an aborted signal', async () => {
    const model = new ScriptModel(parseScript('{"turns": [{"text": "x"}]}', 'x'), 'x');
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    await expect(generateText({ model, prompt: 'go', maxRetries: 0, abortSignal: controller.signal })).rejects.toThrow();
    expect(model.turnsReplayed).toBe(0);
  });
});

describe('parseScript and loadScript', () => {
  const secret = 'SECRET-CONTENT-1234';

  it('reject invalid JSON without quoting the content', () => {
    const error = catchError(() => parseScript(`{"turns": [${secret}]}`, 'bad.json'));
    expect(error).toBeInstanceOf(WorkcellError);
    expect(error.code).toBe('invalid_request');
    expect(error.message).toMatch(/^script model file bad\.json is not valid JSON/);
    expect(error.message).not.toContain(secret);
    expect(error.message).not.toContain('SECRET');
  });

  it('reject a wrong shape, naming where, not what', () => {
    const error = catchError(() => parseScript(JSON.stringify({ turns: [{ tool_calls: [{ name: secret, args: 42 }] }, {}] }), 'shape.json'));
    expect(error.message).toMatch(/not a valid trajectory/);
    expect(error.message).toMatch(/turns\.0\.tool_calls\.0\.args/);
    expect(error.message).toMatch(/turns\.1: a turn needs "text" or at least one tool call/);
    expect(error.message).not.toContain(secret);
    expect(catchError(() => parseScript('{"turns": []}', 'empty.json')).message).toMatch(/turns/);
    expect(catchError(() => parseScript('[1, 2]', 'array.json')).message).toMatch(/not a valid trajectory/);
  });

  it('report unreadable files by error code', () => {
    const dir = mkdtempSync(join(tmpdir(), 'script-model-'));
    expect(catchError(() => loadScript(join(dir, 'missing.json'), 'missing.json')).message).toBe('script model file missing.json cannot be read: ENOENT');
    expect(catchError(() => loadScript(dir, 'dir')).message).toBe('script model file dir is not a regular file');
    writeFileSync(join(dir, 'ok.json'), '{"turns": [{"text": "hi"}]}');
    expect(loadScript(join(dir, 'ok.json')).turns).toEqual([{ text: 'hi' }]);
  });

  it('accept every fixture trajectory', async () => {
    const { readdirSync } = await import('node:fs');
    const files = readdirSync(fixtures).filter((file) => file.endsWith('.json'));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const file of files) expect(() => loadScript(join(fixtures, file)), file).not.toThrow();
  });
});

function catchError(fn: () => unknown): WorkcellError {
  try {
    fn();
  } catch (error) {
    return error as WorkcellError;
  }
  throw new Error('expected an error');
}
