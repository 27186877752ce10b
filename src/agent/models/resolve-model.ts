// Turns a model spec (`provider:model`) into an AI SDK language model. Providers: anthropic and openai (keys from
// their usual environment variables), any OpenAI-compatible server (WORKCELL_OPENAI_COMPATIBLE_BASE_URL), and
// `script:<file.json>`, which replays a recorded trajectory. Every failure is a WorkcellError whose message says how
// to fix it. A spec that came from a client (a job's `model`) may name a script file only inside
// WORKCELL_SCRIPT_DIR, checked after resolving symlinks, so that a client cannot make the server read arbitrary
// files; errors never echo a script file's content nor name server paths the client did not give.
import { realpathSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import type { LanguageModelV4 } from '@ai-sdk/provider';
import type { Config } from '../../config.ts';
import { WorkcellError } from '../../errors.ts';
import { ScriptModel, loadScript } from './script-model.ts';

export const providerNames = ['anthropic', 'openai', 'openai-compatible', 'script'] as const;
export type ProviderName = (typeof providerNames)[number];

export interface ResolvedModel {
  model: LanguageModelV4;
  provider: ProviderName;
  /** The model part of the spec (for `script:`, the file as given). */
  modelId: string;
}

export interface ResolveModelOptions {
  /** True when the spec came from a client (POST /schedule): `script:` is then confined to config.scriptDir. */
  fromJob?: boolean;
  /** Where provider keys are read from (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

export const howToConfigureModel =
  'Set WORKCELL_MODEL to one of: anthropic:<model> (with ANTHROPIC_API_KEY set), openai:<model> (with OPENAI_API_KEY set), ' +
  'openai-compatible:<model> (with WORKCELL_OPENAI_COMPATIBLE_BASE_URL set to the server, e.g. http://127.0.0.1:11434/v1 for Ollama), ' +
  'or script:<file.json> to replay a recorded trajectory; or give "model" when scheduling the job.';

/**
 * Resolves `spec`, or, when it is undefined, the server's default `config.model` (which is trusted: `fromJob`
 * applies only to a spec the job gave).
 */
export function resolveModel(spec: string | undefined, config: Config, options: ResolveModelOptions = {}): ResolvedModel {
  const fromJob = spec !== undefined && options.fromJob === true;
  const effective = (spec ?? config.model)?.trim();
  if (effective === undefined || effective === '') throw new WorkcellError('model_not_configured', `No model is configured. ${howToConfigureModel}`);

  const colon = effective.indexOf(':');
  const provider = colon < 0 ? effective : effective.slice(0, colon);
  const modelId = colon < 0 ? '' : effective.slice(colon + 1).trim();
  if (!isProviderName(provider) || modelId === '') {
    throw new WorkcellError(
      'invalid_request',
      `Invalid model "${effective}": expected provider:model, where provider is one of ${providerNames.join(', ')} ` +
        '(e.g. anthropic:claude-sonnet-4-5, openai:gpt-5, openai-compatible:llama3.1, script:trajectory.json).',
    );
  }
  const env = options.env ?? process.env;

  switch (provider) {
    case 'anthropic': {
      const apiKey = env.ANTHROPIC_API_KEY;
      if (!apiKey) throw new WorkcellError('model_not_configured', `Model ${effective} needs an Anthropic API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a proxy).`);
      const baseURL = env.ANTHROPIC_BASE_URL || undefined;
      return { model: createAnthropic({ apiKey, ...(baseURL ? { baseURL } : {}) })(modelId), provider, modelId };
    }
    case 'openai': {
      const apiKey = env.OPENAI_API_KEY;
      if (!apiKey) throw new WorkcellError('model_not_configured', `Model ${effective} needs an OpenAI API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for a proxy).`);
      const baseURL = env.OPENAI_BASE_URL || undefined;
      return { model: createOpenAI({ apiKey, ...(baseURL ? { baseURL } : {}) })(modelId), provider, modelId };
    }
    case 'openai-compatible': {
      const baseURL = config.openaiCompatibleBaseUrl;
      if (baseURL === undefined) {
        throw new WorkcellError(
          'model_not_configured',
          `Model ${effective} needs the server's address: set WORKCELL_OPENAI_COMPATIBLE_BASE_URL (e.g. http://127.0.0.1:11434/v1 for Ollama, ` +
            'http://127.0.0.1:8000/v1 for vLLM), and WORKCELL_OPENAI_COMPATIBLE_API_KEY if it needs a key.',
        );
      }
      const apiKey = config.openaiCompatibleApiKey || undefined;
      const provider_ = createOpenAICompatible({ name: 'openai-compatible', baseURL, includeUsage: true, ...(apiKey ? { apiKey } : {}) });
      return { model: provider_.chatModel(modelId), provider, modelId };
    }
    case 'script': {
      const path = scriptPath(modelId, config, fromJob);
      return { model: new ScriptModel(loadScript(path, modelId), modelId), provider, modelId };
    }
  }
}

function isProviderName(name: string): name is ProviderName {
  return (providerNames as readonly string[]).includes(name);
}

/** The real path of a script file, refusing (for jobs) anything outside config.scriptDir. */
function scriptPath(given: string, config: Config, fromJob: boolean): string {
  if (!fromJob) {
    try {
      return realpathSync(resolve(given));
    } catch (error) {
      throw new WorkcellError('invalid_request', `script model file ${given} cannot be read: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  const refused = () =>
    new WorkcellError(
      'invalid_request',
      `script model file ${given} is not allowed: jobs may only use script files inside the server's script folder (WORKCELL_SCRIPT_DIR); give a path relative to it.`,
    );
  if (config.scriptDir === undefined) {
    throw new WorkcellError('invalid_request', 'script models are not enabled for jobs on this server: its operator can set WORKCELL_SCRIPT_DIR to a folder of trajectory files.');
  }
  let root: string;
  try {
    root = realpathSync(config.scriptDir);
  } catch {
    throw new WorkcellError('invalid_request', 'script models are not available: the server\'s WORKCELL_SCRIPT_DIR does not exist.');
  }
  // Checked twice: on the path as written (so that nothing outside is even looked up), then after symlinks.
  const candidate = resolve(root, given);
  if (!isInside(root, candidate)) throw refused();
  let real: string;
  try {
    real = realpathSync(candidate);
  } catch {
    throw new WorkcellError('invalid_request', `script model file ${given} does not exist in the server's script folder.`);
  }
  if (!isInside(root, real)) throw refused();
  return real;
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}
