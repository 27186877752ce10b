import { describe, expect, it } from 'vitest';
import { MemoryContext } from '../testing/memory-context.ts';
import { chunkText } from './chunking.ts';
import { reciprocalRankFusion, type Embedder } from './embeddings.ts';
import { costUsd, defaultContextWindow, effectiveContextWindow, modelInfo } from './model-info.ts';
import { PromptBuilder } from './prompt-builder.ts';
import { Recall } from './recall.ts';
import { estimateCounter, tiktokenCounter } from './tokens.ts';

describe('token counters', () => {
  // Counted whole, BPE on a 100 000-character run would take a quarter of an hour (quadratic: 10 s for 10 000, 38 s
  // for 20 000, measured), far past this test's ceiling; in slices it takes well under a second idle. No wall-clock
  // bound on it: loading o200k_base (2.6 s idle) and counting are CPU work that a busy machine stretches tenfold and
  // more (the unit timeout of 20 s was exceeded with five suites running), so the ceiling is 120 s.
  it('count with tiktoken, and count long unbroken runs in slices', async () => {
    const counter = await tiktokenCounter('o200k_base');
    expect(counter.count('hello world')).toBe(2);
    const run = counter.count('x'.repeat(100_000) + ' ' + 'QUJD'.repeat(25_000));
    expect(run).toBeGreaterThan(100_000 / 32);
  }, 120_000);

  it('estimate from characters, calibrated from above by what the provider reports', () => {
    const counter = estimateCounter();
    expect(counter.count('a'.repeat(300))).toBe(100);
    for (let i = 0; i < 10; i++) counter.observe(40_000, 10_000); // the provider sees 4 characters a token
    expect(counter.charsPerToken).toBeGreaterThan(3.2);
    expect(counter.charsPerToken).toBeLessThan(4); // still counts high
    counter.observe(20_000, 10_000); // a denser text: the estimate drops at once
    expect(counter.charsPerToken).toBeLessThan(3.2);
  });
});

describe('model info', () => {
  it('knows common windows and prices, and is conservative about unknown models', () => {
    expect(modelInfo('anthropic', 'claude-sonnet-4-5')).toMatchObject({ contextWindow: 200_000, price: { input: 3, output: 15 } });
    expect(modelInfo('openai', 'gpt-4o-mini')).toMatchObject({ contextWindow: 128_000, encoding: 'o200k_base' });
    expect(modelInfo('openai', 'gpt-5')).toMatchObject({ contextWindow: 400_000, maxInputTokens: 272_000 });
    expect(modelInfo('openai-compatible', 'meta-llama/Llama-3.1-8B-Instruct')).toMatchObject({ contextWindow: 131_072 });
    expect(modelInfo('openai-compatible', 'qwen2.5-coder:7b')).toMatchObject({ contextWindow: 32_768 });
    expect(modelInfo('openai-compatible', 'my-own-model').contextWindow).toBe(defaultContextWindow);
    // Self-hosted and script models are never priced.
    expect(modelInfo('openai-compatible', 'gpt-4o').price).toBeUndefined();
    expect(costUsd(modelInfo('openai', 'gpt-4o'), 1_000_000, 100_000)).toBe(3.5);
    expect(costUsd(modelInfo('script', 'x.json'), 10, 10)).toBeNull();
    expect(effectiveContextWindow(modelInfo('openai', 'gpt-4o'), 8192, 16_384)).toBe(8192);
    expect(effectiveContextWindow(modelInfo('openai', 'gpt-4o'), null, 16_384)).toBe(16_384);
  });
});

describe('chunking', () => {
  it('tiles the text exactly, at line breaks where it can', () => {
    const text = Array.from({ length: 500 }, (_, i) => `line ${i} ${'word '.repeat(i % 17)}`).join('\n');
    const chunks = chunkText(text);
    expect(chunks.map((chunk) => chunk.text).join('')).toBe(text);
    expect(chunks.every((chunk) => chunk.text.length <= 1200)).toBe(true);
    expect(chunks.slice(0, -1).every((chunk) => chunk.text.endsWith('\n'))).toBe(true);
    expect(chunkText('😀'.repeat(1000)).every((chunk) => !/^[\udc00-\udfff]/.test(chunk.text))).toBe(true);
  });
});

function recordCall(context: MemoryContext, step: number, name: string, args: Record<string, unknown>, output: string) {
  const handle = `step-${step}-call-1`;
  context.append('model-turn', step, { text: '', tool_calls: [{ call_id: `c${step}`, name, args }], finish_reason: 'tool-calls', usage: {} });
  context.append('tool-call', step, { call_id: `c${step}`, name, args, handle });
  context.append('tool-result', step, { call_id: `c${step}`, name, is_error: false, output, handle });
}

describe('the context store', () => {
  it('indexes outputs, files read and files written, and finds them by BM25 with their step and source', async () => {
    const context = new MemoryContext();
    context.append('user-message', 0, { text: 'the task', source: 'task' });
    recordCall(context, 1, 'shell', { command: 'cat /etc/app.conf' }, `${'noise line\n'.repeat(300)}database_port = 6543\n${'noise line\n'.repeat(300)}`);
    recordCall(context, 2, 'read_file', { path: 'src/parser.py' }, 'def parse_args(argv):\n    raise TypeError("bad flag")\n');
    recordCall(context, 3, 'write_file', { path: 'README.md', content: `# Frobnicator\n\n${'It frobnicates widgets. '.repeat(20)}` }, 'Created README.md (500 bytes).');
    const port = await context.store.search('database port', 3);
    expect(port.mode).toBe('bm25');
    expect(port.hits[0]).toMatchObject({ step: 1, handle: 'step-1-call-1', source: 'shell: cat /etc/app.conf' });
    expect(port.hits[0]!.text).toContain('database_port = 6543');
    expect((await context.store.search('TypeError parse_args', 3)).hits[0]).toMatchObject({ step: 2, source: 'read_file src/parser.py' });
    expect((await context.store.search('frobnicates widgets', 3)).hits[0]).toMatchObject({ step: 3, handle: 'step-3-call-1-content', source: 'write_file README.md (content)' });
    expect((await context.store.search('!!!', 3)).hits).toEqual([]);
    // Every event is measured.
    expect(context.store.tail(0).every((event) => event.tokens > 0 && event.chars > 0)).toBe(true);
  });

  it('reads a handle page by page, from where the prompt cut it', async () => {
    const context = new MemoryContext();
    const output = Array.from({ length: 2000 }, (_, i) => `row ${i}`).join('\n');
    recordCall(context, 1, 'shell', { command: 'seq' }, output);
    const recall = new Recall(context.store, { recallPageChars: 4000, shownHead: () => 1000 });
    const first = await recall.run({ query: 'handle:step-1-call-1' }, new AbortController().signal);
    expect(first).toMatch(new RegExp(`^handle:step-1-call-1: shell: seq, step 1, characters 1000-\\d+ of ${output.length}\\n`));
    expect(first).toMatch(/\[continues: recall\("handle:step-1-call-1@\d+"\)/);
    const end = Number(/characters 1000-(\d+)/.exec(first)![1]);
    const second = await recall.run({ query: 'handle:step-1-call-1' }, new AbortController().signal);
    expect(second).toContain(`characters ${end}-`);
    const last = await recall.run({ query: 'handle:step-1-call-1@15000' }, new AbortController().signal);
    expect(last).toMatch(/\[end of this output\]$/);
    expect(last.split('\n\n')[1]).toBe(output.slice(15000));
    expect(await recall.run({ query: 'handle:step-9-call-9' }, new AbortController().signal)).toMatch(/No stored output has the handle/);
  });

  it('fuses BM25 with embeddings by reciprocal rank fusion', async () => {
    // A deterministic "embedding": which of a few topics the text is about.
    const topics = ['fruit', 'vehicle', 'weather'];
    const words: Record<string, string[]> = { fruit: ['apple', 'banana', 'fruit', 'pear'], vehicle: ['car', 'truck', 'vehicle', 'bus'], weather: ['rain', 'sun', 'weather', 'storm'] };
    const embedder: Embedder = {
      model: 'test:topics',
      embed: async (values) => values.map((value) => topics.map((topic) => 0.01 + words[topic]!.filter((word) => value.toLowerCase().includes(word)).length)),
    };
    const context = new MemoryContext({ embedder });
    recordCall(context, 1, 'shell', { command: 'cat a' }, 'I bought a banana and a pear at the market.');
    recordCall(context, 2, 'shell', { command: 'cat b' }, 'The truck and the bus were late because of traffic.');
    recordCall(context, 3, 'shell', { command: 'cat c' }, 'A storm brought rain all day.');
    // No word of "fruit" occurs in step 1's output: BM25 alone misses it, the embedding finds it.
    const bm25 = await new MemoryContext().store.search('fruit', 3);
    expect(bm25.hits).toEqual([]);
    const hybrid = await context.store.search('fruit', 3);
    expect(hybrid.mode).toBe('hybrid');
    expect(hybrid.hits[0]).toMatchObject({ step: 1 });
    expect(reciprocalRankFusion([['a', 'b', 'c'], ['c', 'a']]).map((entry) => entry.item)).toEqual(['a', 'c', 'b']);
  });
});

describe('the prompt builder', () => {
  it('masks old outputs before condensing, keeps the task and the newest step verbatim, and stays in budget', async () => {
    const context = new MemoryContext({ counter: estimateCounter() });
    context.append('user-message', 0, { text: 'THE TASK, verbatim', source: 'task' });
    const builder = new PromptBuilder({ store: context.store, system: 'system prompt', toolsJson: '[]', window: 4096, modelMaxOutputTokens: 4096 });
    const signal = new AbortController().signal;
    let masked = false;
    for (let step = 1; step <= 60; step++) {
      recordCall(context, step, 'shell', { command: `step ${step}` }, `output of step ${step}\n${'data '.repeat(300)}`);
      const prompt = await builder.build(step + 1, signal);
      expect(prompt.estimatedTokens).toBeLessThanOrEqual(builder.budget);
      expect(prompt.maxOutputTokens + prompt.estimatedTokens).toBeLessThanOrEqual(4096);
      const text = JSON.stringify(prompt.messages);
      expect(text).toContain('THE TASK, verbatim');
      expect(text).toContain(`output of step ${step}`);
      if (text.includes('output masked to save context')) masked = true;
      // Nothing is summarized before masking has been tried.
      if (context.ofType('context-summary').length === 0) expect(prompt.stats.steps_masked + prompt.stats.steps_verbatim).toBe(step);
    }
    expect(masked).toBe(true);
    // Without a summarizer, condensation is the digest.
    expect(context.ofType('context-summary').every((event) => event.data.method === 'fallback')).toBe(true);
    expect(context.ofType('context-summary').length).toBeGreaterThan(0);
  });
});
