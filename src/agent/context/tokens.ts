// Token counting for prompt budgets. OpenAI-family models get their real tokenizer (js-tiktoken: pure JS, the BPE
// ranks ship inside the npm package, so it works offline); every other model gets an estimate from characters per
// token, calibrated against the input_tokens the provider reports for each request. Counts are only ever used to
// stay under a budget, so the estimate errs high (fewer characters per token than observed).
//
// js-tiktoken's BPE is quadratic in the length of one pre-tokenizer piece: a 10 000-character run without
// whitespace (base64, minified code) takes seconds. Such runs are counted in short slices, which can only add a few
// tokens (a merge never spans a cut), never remove them.
import type { Tiktoken } from 'js-tiktoken/lite';

export type EncodingName = 'o200k_base' | 'cl100k_base';

export interface TokenCounter {
  /** 'tiktoken:o200k_base' or 'estimate'. */
  readonly kind: string;
  /** True when counts come from the model's own tokenizer. */
  readonly exact: boolean;
  count(text: string): number;
  /**
   * Feeds back what the provider reported for a request whose text was `chars` characters long, so that an
   * estimate can calibrate itself. Exact counters ignore it.
   */
  observe(chars: number, reportedTokens: number): void;
  /** Starts an estimate from a calibration saved earlier. */
  restore?(charsPerToken: number): void;
  /** Characters per token this counter currently assumes (for cutting text to a token budget). */
  readonly charsPerToken: number;
}

/** Runs of non-whitespace longer than this are counted in slices (see the header). */
const longRunChars = 64;
const sliceChars = 32;
const longRun = new RegExp(`\\S{${longRunChars + 1},}`, 'g');
/** Texts longer than this are counted from a sample of their head and tail, scaled up (with a margin). */
const exactCountMaxChars = 200_000;

const encodings = new Map<EncodingName, Promise<Tiktoken>>();

async function loadEncoding(name: EncodingName): Promise<Tiktoken> {
  let pending = encodings.get(name);
  if (pending === undefined) {
    pending = (async () => {
      const { Tiktoken } = await import('js-tiktoken/lite');
      const ranks = name === 'o200k_base' ? (await import('js-tiktoken/ranks/o200k_base')).default : (await import('js-tiktoken/ranks/cl100k_base')).default;
      return new Tiktoken(ranks);
    })();
    encodings.set(name, pending);
  }
  return pending;
}

/** Counts with tiktoken; loading the ranks takes a second or two the first time in a process. */
export async function tiktokenCounter(name: EncodingName): Promise<TokenCounter> {
  const encoding = await loadEncoding(name);
  const countGuarded = (text: string): number => {
    let total = 0;
    let last = 0;
    for (const match of text.matchAll(longRun)) {
      if (match.index > last) total += encoding.encode(text.slice(last, match.index)).length;
      const run = match[0];
      for (let start = 0; start < run.length; start += sliceChars) total += encoding.encode(run.slice(start, start + sliceChars)).length;
      last = match.index + run.length;
    }
    if (last < text.length) total += encoding.encode(last === 0 ? text : text.slice(last)).length;
    return total;
  };
  return {
    kind: `tiktoken:${name}`,
    exact: true,
    charsPerToken: 3,
    count(text: string): number {
      if (text.length === 0) return 0;
      if (text.length <= exactCountMaxChars) return countGuarded(text);
      const half = exactCountMaxChars / 2;
      const sampled = countGuarded(text.slice(0, half)) + countGuarded(text.slice(-half));
      return Math.ceil((sampled / exactCountMaxChars) * text.length * 1.1);
    },
    observe() {},
  };
}

/** The estimate's starting point: about 3 characters a token, lower than English prose or code usually needs. */
export const defaultCharsPerToken = 3;
const minCharsPerToken = 1.5;
const maxCharsPerToken = 5;

/**
 * Counts as ceil(characters / charsPerToken). `observe` moves charsPerToken towards 90 % of the observed ratio
 * (an exponential average), so that the estimate tracks the real tokenizer from above.
 */
export function estimateCounter(initialCharsPerToken = defaultCharsPerToken): TokenCounter {
  let charsPerToken = clamp(initialCharsPerToken);
  let observed: number | undefined;
  return {
    kind: 'estimate',
    exact: false,
    get charsPerToken() {
      return charsPerToken;
    },
    count(text: string): number {
      return Math.ceil(text.length / charsPerToken);
    },
    observe(chars: number, reportedTokens: number) {
      if (!(chars > 1000 && reportedTokens > 0)) return;
      const ratio = chars / reportedTokens;
      observed = observed === undefined ? ratio : observed * 0.7 + ratio * 0.3;
      // Never trust one observation above the current value by much: move up slowly, down at once.
      const target = clamp(observed * 0.9);
      charsPerToken = target < charsPerToken ? target : charsPerToken + (target - charsPerToken) * 0.5;
    },
    restore(saved: number) {
      charsPerToken = clamp(saved);
    },
  };
}

function clamp(value: number): number {
  return Math.min(maxCharsPerToken, Math.max(minCharsPerToken, value));
}
