// What workcell knows about common models: context window, longest answer, tokenizer and price. The window decides
// every prompt's budget, so an unknown model gets a conservative default (32k tokens) and the operator can say
// better with WORKCELL_CONTEXT_WINDOW or a job's `context_window`. Prices are list prices in US dollars per million
// tokens, used for the cost shown in GET /jobs/:id; a model without a known price has cost null, never a guess.
// Self-hosted servers (openai-compatible) are never priced: the same model name costs what the operator pays.
import type { EncodingName } from './tokens.ts';

export interface ModelInfo {
  /** Tokens the model can attend to: prompt and answer together. */
  contextWindow: number;
  /** Largest prompt the provider accepts when it is less than the window (e.g. GPT-5: 272k of 400k). */
  maxInputTokens?: number;
  /** Largest answer the model can give. */
  maxOutputTokens: number;
  /** The model's own tokenizer when js-tiktoken has it; otherwise counts are a calibrated estimate. */
  encoding?: EncodingName;
  /** US dollars per million tokens. */
  price?: { input: number; output: number };
  /** Takes images in tool results (gui screenshots): known for Anthropic and OpenAI models; WORKCELL_MODEL_VISION says for others. */
  vision?: boolean;
}

/** The window assumed for a model nobody told us about. */
export const defaultContextWindow = 32_768;
const defaultMaxOutputTokens = 8192;

interface Entry extends ModelInfo {
  pattern: RegExp;
}

// First match wins: more specific names come first. Matched against the model id in lower case, without a vendor
// prefix ("openai/gpt-4o" → "gpt-4o") or an Ollama tag (":8b" is kept for the size patterns that need it).
const table: Entry[] = [
  // Anthropic
  { pattern: /^claude-opus-4-(5|6)/, contextWindow: 200_000, maxOutputTokens: 64_000, price: { input: 5, output: 25 }, vision: true },
  { pattern: /^claude-opus-4/, contextWindow: 200_000, maxOutputTokens: 32_000, price: { input: 15, output: 75 }, vision: true },
  { pattern: /^claude-sonnet-4/, contextWindow: 200_000, maxOutputTokens: 64_000, price: { input: 3, output: 15 }, vision: true },
  { pattern: /^claude-haiku-4/, contextWindow: 200_000, maxOutputTokens: 64_000, price: { input: 1, output: 5 }, vision: true },
  { pattern: /^claude-3-7-sonnet/, contextWindow: 200_000, maxOutputTokens: 64_000, price: { input: 3, output: 15 }, vision: true },
  { pattern: /^claude-3-5-sonnet/, contextWindow: 200_000, maxOutputTokens: 8192, price: { input: 3, output: 15 }, vision: true },
  { pattern: /^claude-3-5-haiku/, contextWindow: 200_000, maxOutputTokens: 8192, price: { input: 0.8, output: 4 }, vision: true },
  { pattern: /^claude-3-opus/, contextWindow: 200_000, maxOutputTokens: 4096, price: { input: 15, output: 75 }, vision: true },
  { pattern: /^claude-3-haiku/, contextWindow: 200_000, maxOutputTokens: 4096, price: { input: 0.25, output: 1.25 }, vision: true },
  { pattern: /^claude/, contextWindow: 200_000, maxOutputTokens: 8192, vision: true },
  // OpenAI
  { pattern: /^gpt-5(\.\d+)?-nano/, contextWindow: 400_000, maxInputTokens: 272_000, maxOutputTokens: 128_000, encoding: 'o200k_base', price: { input: 0.05, output: 0.4 }, vision: true },
  { pattern: /^gpt-5(\.\d+)?-mini/, contextWindow: 400_000, maxInputTokens: 272_000, maxOutputTokens: 128_000, encoding: 'o200k_base', price: { input: 0.25, output: 2 }, vision: true },
  { pattern: /^gpt-5/, contextWindow: 400_000, maxInputTokens: 272_000, maxOutputTokens: 128_000, encoding: 'o200k_base', price: { input: 1.25, output: 10 }, vision: true },
  { pattern: /^gpt-4\.1-nano/, contextWindow: 1_047_576, maxOutputTokens: 32_768, encoding: 'o200k_base', price: { input: 0.1, output: 0.4 }, vision: true },
  { pattern: /^gpt-4\.1-mini/, contextWindow: 1_047_576, maxOutputTokens: 32_768, encoding: 'o200k_base', price: { input: 0.4, output: 1.6 }, vision: true },
  { pattern: /^gpt-4\.1/, contextWindow: 1_047_576, maxOutputTokens: 32_768, encoding: 'o200k_base', price: { input: 2, output: 8 }, vision: true },
  { pattern: /^gpt-4o-mini/, contextWindow: 128_000, maxOutputTokens: 16_384, encoding: 'o200k_base', price: { input: 0.15, output: 0.6 }, vision: true },
  { pattern: /^gpt-4o/, contextWindow: 128_000, maxOutputTokens: 16_384, encoding: 'o200k_base', price: { input: 2.5, output: 10 }, vision: true },
  { pattern: /^gpt-4-turbo/, contextWindow: 128_000, maxOutputTokens: 4096, encoding: 'cl100k_base', price: { input: 10, output: 30 }, vision: true },
  { pattern: /^gpt-4(-\d{4})?$/, contextWindow: 8192, maxOutputTokens: 8192, encoding: 'cl100k_base', price: { input: 30, output: 60 } },
  { pattern: /^gpt-3\.5-turbo/, contextWindow: 16_385, maxOutputTokens: 4096, encoding: 'cl100k_base', price: { input: 0.5, output: 1.5 } },
  { pattern: /^o1-mini/, contextWindow: 128_000, maxOutputTokens: 65_536, encoding: 'o200k_base', price: { input: 1.1, output: 4.4 } },
  { pattern: /^o1/, contextWindow: 200_000, maxOutputTokens: 100_000, encoding: 'o200k_base', price: { input: 15, output: 60 }, vision: true },
  { pattern: /^o3-mini/, contextWindow: 200_000, maxOutputTokens: 100_000, encoding: 'o200k_base', price: { input: 1.1, output: 4.4 } },
  { pattern: /^o3/, contextWindow: 200_000, maxOutputTokens: 100_000, encoding: 'o200k_base', price: { input: 2, output: 8 }, vision: true },
  { pattern: /^o4-mini/, contextWindow: 200_000, maxOutputTokens: 100_000, encoding: 'o200k_base', price: { input: 1.1, output: 4.4 }, vision: true },
  { pattern: /^gpt-oss/, contextWindow: 131_072, maxOutputTokens: 32_768, encoding: 'o200k_base' },
  // Open-weight models as openai-compatible servers (vLLM, llama.cpp, LM Studio, Ollama) name them. These are the
  // models' own windows: a server may be started with less (Ollama's default num_ctx is small), which the operator
  // states with WORKCELL_CONTEXT_WINDOW.
  { pattern: /^(meta-)?llama-?3\.[123]/, contextWindow: 131_072, maxOutputTokens: 8192 },
  { pattern: /^(meta-)?llama-?4/, contextWindow: 131_072, maxOutputTokens: 8192 },
  { pattern: /^(meta-)?llama-?3/, contextWindow: 8192, maxOutputTokens: 4096 },
  { pattern: /^(meta-)?llama-?2/, contextWindow: 4096, maxOutputTokens: 2048 },
  { pattern: /^codellama/, contextWindow: 16_384, maxOutputTokens: 4096 },
  { pattern: /^qwen-?3/, contextWindow: 32_768, maxOutputTokens: 8192 },
  { pattern: /^qwen-?2\.5/, contextWindow: 32_768, maxOutputTokens: 8192 },
  { pattern: /^qwq/, contextWindow: 32_768, maxOutputTokens: 8192 },
  { pattern: /^(mistral-large|mistral-medium|mistral-small-3|mistral-nemo|ministral|devstral)/, contextWindow: 131_072, maxOutputTokens: 8192 },
  { pattern: /^codestral/, contextWindow: 262_144, maxOutputTokens: 8192 },
  { pattern: /^(mistral|mixtral)/, contextWindow: 32_768, maxOutputTokens: 4096 },
  { pattern: /^deepseek/, contextWindow: 131_072, maxOutputTokens: 8192 },
  { pattern: /^gemma-?3/, contextWindow: 131_072, maxOutputTokens: 8192 },
  { pattern: /^gemma/, contextWindow: 8192, maxOutputTokens: 4096 },
  { pattern: /^phi-?4/, contextWindow: 16_384, maxOutputTokens: 4096 },
];

/** The model id as the table matches it: lower case, without "vendor/" prefixes. */
function normalize(modelId: string): string {
  const id = modelId.trim().toLowerCase();
  return id.slice(id.lastIndexOf('/') + 1);
}

/**
 * What is known about `provider:modelId`. `provider` matters for prices only: self-hosted (openai-compatible) and
 * script models are never priced.
 */
export function modelInfo(provider: string, modelId: string): ModelInfo {
  const id = normalize(modelId);
  const entry = provider === 'script' ? undefined : table.find((candidate) => candidate.pattern.test(id));
  if (entry === undefined) return { contextWindow: defaultContextWindow, maxOutputTokens: defaultMaxOutputTokens };
  const { pattern: _pattern, price, vision, ...info } = entry;
  // Prices and vision as listed hold for the vendors' own APIs; a self-hosted server of the same name may differ.
  const vendor = provider === 'anthropic' || provider === 'openai';
  return { ...info, ...(vendor && price !== undefined ? { price } : {}), ...(vendor && vision === true ? { vision } : {}) };
}

/** Splits "provider:model" (the job row's model_used); undefined when it is not one. */
export function splitModelSpec(spec: string | null | undefined): { provider: string; modelId: string } | undefined {
  if (spec === null || spec === undefined) return undefined;
  const colon = spec.indexOf(':');
  if (colon <= 0) return undefined;
  return { provider: spec.slice(0, colon), modelId: spec.slice(colon + 1) };
}

/** The window a job works with: the job's own setting, else the server's, else the table's. */
export function effectiveContextWindow(info: ModelInfo, jobWindow: number | null | undefined, serverWindow: number | undefined): number {
  return jobWindow ?? serverWindow ?? info.contextWindow;
}

/** Cost in US dollars of the given tokens, or null when the model's price is unknown. Rounded to 1/10 000 cent. */
export function costUsd(info: ModelInfo, inputTokens: number, outputTokens: number): number | null {
  if (info.price === undefined) return null;
  const dollars = (inputTokens * info.price.input + outputTokens * info.price.output) / 1_000_000;
  return Math.round(dollars * 1e6) / 1e6;
}
