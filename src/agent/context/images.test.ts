import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LanguageModelV4, LanguageModelV4Prompt } from '@ai-sdk/provider';
import type { ModelMessage, ToolResultPart } from 'ai';
import { afterEach, describe, expect, it } from 'vitest';
import { runAgent } from '../loop.ts';
import { ScriptModel, parseScript } from '../models/script-model.ts';
import { InMemorySandboxd } from '../testing/in-memory-sandboxd.ts';
import { MemoryContext } from '../testing/memory-context.ts';
import type { SandboxdCaller } from '../tools/run-tool.ts';
import { imageTokens, jobImageStore, memoryImageStore, type ImageStore } from './images.ts';
import { modelInfo } from './model-info.ts';
import { PromptBuilder } from './prompt-builder.ts';
import { estimateCounter } from './tokens.ts';

const png = (n: number) => Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.from(`image ${n}`)]);

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('the job image store', () => {
  it('stores images under logs/screenshots by call handle and reads back only its own files', async () => {
    dir = mkdtempSync(join(tmpdir(), 'workcell-images-'));
    const store = jobImageStore(dir);
    const ref = await store.save('step-3-call-1', { mediaType: 'image/png', data: png(1), width: 1280, height: 800 });
    expect(ref).toEqual({ path: 'logs/screenshots/step-3-call-1.png', media_type: 'image/png', width: 1280, height: 800, bytes: png(1).length });
    expect(readFileSync(join(dir, ref.path))).toEqual(png(1));
    expect(store.load(ref.path)).toEqual(png(1));
    for (const path of ['input.txt', '/etc/passwd', 'logs/screenshots/../../input.txt', 'logs/screenshots/x/../../../etc/passwd', 'logs/screenshots/missing.png']) expect(store.load(path), path).toBeUndefined();
    // A handle can never become a path elsewhere.
    expect((await store.save('../../evil', { mediaType: 'image/png', data: png(2) })).path).toBe('logs/screenshots/.._.._evil.png');
  });

  it('knows which models take images', () => {
    expect(modelInfo('anthropic', 'claude-sonnet-4-5').vision).toBe(true);
    expect(modelInfo('openai', 'gpt-4o').vision).toBe(true);
    expect(modelInfo('openai', 'gpt-5-mini').vision).toBe(true);
    expect(modelInfo('openai', 'gpt-3.5-turbo').vision).toBeUndefined();
    expect(modelInfo('openai', 'o3-mini').vision).toBeUndefined();
    // Self-hosted servers and scripts: only when configured (WORKCELL_MODEL_VISION).
    expect(modelInfo('openai-compatible', 'gpt-4o').vision).toBeUndefined();
    expect(modelInfo('script', 'x.json').vision).toBeUndefined();
    expect(imageTokens(1280, 800)).toBe(1366);
  });
});

/** Records a step with one gui call whose result carries a stored screenshot. */
async function screenshotStep(context: MemoryContext, images: ImageStore, step: number, options: { isError?: boolean } = {}) {
  const handle = `step-${step}-call-1`;
  const ref = await images.save(handle, { mediaType: 'image/png', data: png(step), width: 1280, height: 800 });
  context.append('model-turn', step, { text: '', tool_calls: [{ call_id: `c${step}`, name: 'gui', args: { action: 'screenshot' } }], finish_reason: 'tool-calls', usage: {} });
  context.append('tool-call', step, { call_id: `c${step}`, name: 'gui', args: { action: 'screenshot' }, handle });
  context.append('tool-result', step, { call_id: `c${step}`, name: 'gui', is_error: options.isError ?? false, output: `screen at step ${step}`, handle, images: [ref] });
}

function toolResults(messages: ModelMessage[]): ToolResultPart[] {
  return messages.flatMap((message) => (message.role === 'tool' ? message.content.filter((part): part is ToolResultPart => part.type === 'tool-result') : []));
}

describe('images in prompts', () => {
  it('sends the latest screenshots as images to models with vision, and a note for older ones', async () => {
    const context = new MemoryContext({ counter: estimateCounter() });
    const images = memoryImageStore();
    context.append('user-message', 0, { text: 'the task', source: 'task' });
    for (let step = 1; step <= 4; step++) await screenshotStep(context, images, step);
    const builder = new PromptBuilder({ store: context.store, system: 'system', toolsJson: '[]', window: 200_000, modelMaxOutputTokens: 8192, images: { store: images, latest: 2 } });
    const prompt = await builder.build(5, new AbortController().signal);
    const results = toolResults(prompt.messages);
    expect(results).toHaveLength(4);
    for (const [index, result] of results.entries()) {
      const step = index + 1;
      if (step >= 3) {
        expect(result.output.type, `step ${step}`).toBe('content');
        const value = (result.output as { type: 'content'; value: Array<Record<string, unknown>> }).value;
        expect(value[0]).toEqual({ type: 'text', text: `screen at step ${step}` });
        expect(value[1]).toEqual({ type: 'file', mediaType: 'image/png', data: { type: 'data', data: png(step).toString('base64') } });
      } else {
        expect(result.output).toEqual({
          type: 'text',
          value: `screen at step ${step}\n[image logs/screenshots/step-${step}-call-1.png (1280x800) not shown: only the latest 2 images stay in your context; take a new screenshot to see the screen as it is now]`,
        });
      }
    }
    // Image tokens are counted, and kept apart for calibration.
    expect(prompt.imageTokens).toBe(2 * imageTokens(1280, 800));
    expect(prompt.estimatedTokens).toBeGreaterThan(prompt.imageTokens);
    // The next screenshot pushes the oldest image out.
    await screenshotStep(context, images, 5);
    const next = toolResults((await builder.build(6, new AbortController().signal)).messages);
    expect(next.map((result) => result.output.type)).toEqual(['text', 'text', 'text', 'content', 'content']);
  });

  it('sends no images to models without vision, and none for failed calls', async () => {
    const context = new MemoryContext({ counter: estimateCounter() });
    const images = memoryImageStore();
    context.append('user-message', 0, { text: 'the task', source: 'task' });
    await screenshotStep(context, images, 1);
    const plain = new PromptBuilder({ store: context.store, system: 'system', toolsJson: '[]', window: 200_000, modelMaxOutputTokens: 8192 });
    const prompt = await plain.build(2, new AbortController().signal);
    expect(toolResults(prompt.messages)[0]?.output).toEqual({ type: 'text', value: 'screen at step 1' });
    expect(prompt.imageTokens).toBe(0);
    await screenshotStep(context, images, 2, { isError: true });
    const vision = new PromptBuilder({ store: context.store, system: 'system', toolsJson: '[]', window: 200_000, modelMaxOutputTokens: 8192, images: { store: images, latest: 1 } });
    const results = toolResults((await vision.build(3, new AbortController().signal)).messages);
    expect(results.map((result) => result.output.type)).toEqual(['content', 'error-text']);
  });
});

describe('screenshots through the agent loop', () => {
  it('stores each screenshot as a file, records its path (not its bytes) and shows it to a vision model', async () => {
    const turns = [
      { tool_calls: [{ name: 'gui', args: { action: 'screenshot' } }] },
      { tool_calls: [{ name: 'finish', args: { summary: 'looked at the screen' } }] },
    ];
    const script = new ScriptModel(parseScript(JSON.stringify({ turns }), 'inline.json'), 'inline.json');
    const prompts: LanguageModelV4Prompt[] = [];
    const model: LanguageModelV4 = {
      specificationVersion: 'v4',
      provider: 'script',
      modelId: 'inline.json',
      supportedUrls: {},
      doGenerate: (options) => (prompts.push(options.prompt), script.doGenerate(options)),
      doStream: (options) => (prompts.push(options.prompt), script.doStream(options)),
    };
    const sandbox = new InMemorySandboxd();
    const shot = png(7);
    const client: SandboxdCaller = {
      call: (async (route: string, body: unknown, options?: { signal?: AbortSignal }) => {
        if (route !== 'gui') return sandbox.call(route as 'readFile', body as { path: string }, options);
        return { output: 'The screen is 1280x800 pixels.\nNo windows are open.', screenshot: { media_type: 'image/png', data: shot.toString('base64'), width: 1280, height: 800 }, screen: { width: 1280, height: 800 }, duration_ms: 5 };
      }) as SandboxdCaller['call'],
    };
    const context = new MemoryContext();
    const images = memoryImageStore();
    const outcome = await runAgent({
      jobId: 'job_test',
      task: 'look at the screen',
      model,
      client,
      events: context,
      context: context.store,
      images,
      modelInfo: { contextWindow: 128_000, maxOutputTokens: 8192, vision: true },
      maxSteps: 5,
      stream: false,
      retry: { maxRetries: 0, baseMs: 1 },
      signal: new AbortController().signal,
    });
    expect(outcome.status).toBe('complete');
    const result = context.ofType('tool-result').find((event) => event.data.name === 'gui')!;
    expect(result.data.images).toEqual([{ path: 'logs/screenshots/step-1-call-1.png', media_type: 'image/png', width: 1280, height: 800, bytes: shot.length }]);
    expect(JSON.stringify(result.data)).not.toContain(shot.toString('base64'));
    expect(images.files.get('logs/screenshots/step-1-call-1.png')).toEqual(shot);
    // The second model call saw the screenshot as an image.
    expect(JSON.stringify(prompts[1])).toContain(shot.toString('base64'));
    expect(JSON.stringify(prompts[0])).not.toContain(shot.toString('base64'));
  });
});
