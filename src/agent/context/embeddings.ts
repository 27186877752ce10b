// Optional embeddings for recall: WORKCELL_EMBEDDING_MODEL=provider:model through the AI SDK's embedMany (openai, or
// any OpenAI-compatible server's /v1/embeddings). Vectors are stored in context.db as float32 blobs and compared
// with sqlite-vec's vec_distance_cosine. Without an embedding model, or when sqlite-vec cannot load, recall is BM25
// alone: embeddings only ever add to it.
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import type { EmbeddingModelV4 } from '@ai-sdk/provider';
import { embedMany } from 'ai';
import type Database from 'better-sqlite3';
import type { Config } from '../../config.ts';
import { WorkcellError } from '../../errors.ts';

export interface Embedder {
  /** provider:model, stored with each vector so that vectors of another model are never compared. */
  readonly model: string;
  embed(values: string[], signal?: AbortSignal): Promise<number[][]>;
}

/** The embedder of WORKCELL_EMBEDDING_MODEL, or undefined when none is configured. */
export function resolveEmbedder(config: Config, env: NodeJS.ProcessEnv = process.env): Embedder | undefined {
  const spec = config.embeddingModel?.trim();
  if (spec === undefined || spec === '') return undefined;
  const colon = spec.indexOf(':');
  const provider = colon < 0 ? '' : spec.slice(0, colon);
  const modelId = colon < 0 ? '' : spec.slice(colon + 1);
  let model: EmbeddingModelV4;
  if (provider === 'openai' && modelId !== '') {
    const apiKey = env.OPENAI_API_KEY;
    if (!apiKey) throw new WorkcellError('model_not_configured', `Embedding model ${spec} needs OPENAI_API_KEY.`);
    const baseURL = env.OPENAI_BASE_URL || undefined;
    model = createOpenAI({ apiKey, ...(baseURL ? { baseURL } : {}) }).embeddingModel(modelId);
  } else if (provider === 'openai-compatible' && modelId !== '') {
    const baseURL = config.openaiCompatibleBaseUrl;
    if (baseURL === undefined) throw new WorkcellError('model_not_configured', `Embedding model ${spec} needs WORKCELL_OPENAI_COMPATIBLE_BASE_URL.`);
    const apiKey = config.openaiCompatibleApiKey || undefined;
    model = createOpenAICompatible({ name: 'openai-compatible', baseURL, ...(apiKey ? { apiKey } : {}) }).embeddingModel(modelId);
  } else {
    throw new WorkcellError('model_not_configured', `Invalid WORKCELL_EMBEDDING_MODEL "${spec}": expected openai:<model> or openai-compatible:<model>, e.g. openai:text-embedding-3-small.`);
  }
  return {
    model: spec,
    async embed(values, signal) {
      const { embeddings } = await embedMany({ model, values, maxRetries: 2, ...(signal ? { abortSignal: signal } : {}) });
      return embeddings;
    },
  };
}

/** Loads sqlite-vec into a connection; returns why it could not, or undefined when it did. */
export async function loadSqliteVec(db: Database.Database): Promise<string | undefined> {
  try {
    const sqliteVec = await import('sqlite-vec');
    sqliteVec.load(db);
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

export function vectorToBlob(vector: readonly number[]): Buffer {
  return Buffer.from(new Float32Array(vector).buffer);
}

/** Reciprocal rank fusion: each list adds 1 / (k + rank) to an item's score (rank from 1); higher is better. */
export function reciprocalRankFusion<T>(lists: ReadonlyArray<readonly T[]>, k = 60): Array<{ item: T; score: number }> {
  const scores = new Map<T, number>();
  for (const list of lists) {
    list.forEach((item, index) => scores.set(item, (scores.get(item) ?? 0) + 1 / (k + index + 1)));
  }
  return [...scores.entries()].map(([item, score]) => ({ item, score })).sort((a, b) => b.score - a.score);
}
