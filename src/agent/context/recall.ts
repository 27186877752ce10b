// The `recall` tool, run on the host over the job's context store: a search of the whole history (BM25, fused with
// embeddings when configured), or, for a `handle:` query, the next page of one stored output. Every answer fits in
// what the prompt shows of one output uncut, and says how to go on.
import type { ContextStore } from './context-store.ts';
import type { PromptBuilder } from './prompt-builder.ts';
import { cutMiddle } from './summarize.ts';

export const recallDefaultLimit = 5;
const handlePattern = /^\s*handle:\s*([A-Za-z0-9_.-]+)(?:@(\d+))?\s*$/;

export class Recall {
  readonly #store: ContextStore;
  readonly #builder: Pick<PromptBuilder, 'recallPageChars' | 'shownHead'>;
  /** Where the next bare `handle:` read of each handle starts. */
  readonly #cursors = new Map<string, number>();

  constructor(store: ContextStore, builder: Pick<PromptBuilder, 'recallPageChars' | 'shownHead'>) {
    this.#store = store;
    this.#builder = builder;
  }

  async run(input: { query: string; limit?: number | undefined }, signal: AbortSignal): Promise<string> {
    const handle = handlePattern.exec(input.query);
    if (handle !== null) return this.#read(handle[1]!, handle[2] === undefined ? undefined : Number(handle[2]));
    return this.#search(input.query, input.limit ?? recallDefaultLimit, signal);
  }

  #read(handle: string, explicitOffset: number | undefined): string {
    const offset = explicitOffset ?? this.#cursors.get(handle) ?? this.#builder.shownHead(handle) ?? 0;
    const page = this.#store.readHandle(handle, offset, this.#builder.recallPageChars);
    if (page === undefined) {
      return `No stored output has the handle "${handle}". Handles look like handle:step-12-call-3 and appear in the notes where your prompt cut or masked an output; or search with words instead.`;
    }
    if (page.text === '') {
      return `handle:${handle} (${page.source}, step ${page.step}) has nothing after character ${offset}: it is ${page.totalChars} characters long. Read it from the start with recall("handle:${handle}@0").`;
    }
    this.#cursors.set(handle, page.end);
    const more = page.end < page.totalChars ? `[continues: recall("handle:${handle}@${page.end}") reads the next part]` : '[end of this output]';
    return `handle:${handle}: ${page.source}, step ${page.step}, characters ${page.start}-${page.end} of ${page.totalChars}\n\n${page.text}\n\n${more}`;
  }

  async #search(query: string, limit: number, signal: AbortSignal): Promise<string> {
    const { hits, mode } = await this.#store.search(query, limit, signal);
    if (hits.length === 0) {
      return `Nothing in this job's history matches "${query}". Try other words (exact identifiers, file names, error text), or read an output by its handle.`;
    }
    const perHit = Math.max(300, Math.floor(this.#builder.recallPageChars / hits.length) - 120);
    const blocks = hits.map((hit, index) => {
      const text = cutMiddle(hit.text, perHit, (omitted) => `\n[... ${omitted} characters; recall("handle:${hit.handle}@${hit.start}") reads this passage whole ...]\n`).text;
      return `[${index + 1}] step ${hit.step} · ${hit.source} · handle:${hit.handle} (characters ${hit.start}-${hit.end} of ${hit.totalChars})\n${text}`;
    });
    return `${hits.length} passage${hits.length === 1 ? '' : 's'} for "${query}" (${mode === 'hybrid' ? 'BM25 and embeddings' : 'BM25'}), best first:\n\n${blocks.join('\n\n')}`;
  }
}
