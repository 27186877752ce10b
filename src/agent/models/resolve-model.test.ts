import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../config.ts';
import { WorkcellError } from '../../errors.ts';
import { resolveModel } from './resolve-model.ts';
import { ScriptModel } from './script-model.ts';

const trajectory = JSON.stringify({ turns: [{ text: 'hi' }] });

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'resolve-model-'));
  const scriptDir = join(root, 'scripts');
  mkdirSync(join(scriptDir, 'nested'), { recursive: true });
  writeFileSync(join(scriptDir, 'ok.json'), trajectory);
  writeFileSync(join(scriptDir, 'nested', 'deep.json'), trajectory);
  writeFileSync(join(root, 'outside.json'), trajectory);
  symlinkSync(join(root, 'outside.json'), join(scriptDir, 'escape.json'));
  symlinkSync(join(scriptDir, 'ok.json'), join(scriptDir, 'alias.json'));
  return { root, scriptDir, config: loadConfig({}, { scriptDir }) };
}

function failure(fn: () => unknown): WorkcellError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(WorkcellError);
    return error as WorkcellError;
  }
  throw new Error('expected resolveModel to throw');
}

describe('resolveModel', () => {
  const config: Config = loadConfig({});

  it('without a model says exactly how to configure one', () => {
    const error = failure(() => resolveModel(undefined, config));
    expect(error.code).toBe('model_not_configured');
    for (const hint of ['WORKCELL_MODEL', 'anthropic:<model>', 'ANTHROPIC_API_KEY', 'openai:<model>', 'OPENAI_API_KEY', 'openai-compatible:<model>', 'WORKCELL_OPENAI_COMPATIBLE_BASE_URL', 'script:<file.json>']) {
      expect(error.message).toContain(hint);
    }
    expect(failure(() => resolveModel('  ', config)).code).toBe('model_not_configured');
  });

  it('falls back to the configured model', () => {
    const resolved = resolveModel(undefined, { ...config, model: 'openai-compatible:llama3', openaiCompatibleBaseUrl: 'http://127.0.0.1:1/v1' });
    expect(resolved).toMatchObject({ provider: 'openai-compatible', modelId: 'llama3' });
    expect(resolved.model.modelId).toBe('llama3');
  });

  it('refuses unknown providers and malformed specs, listing the providers', () => {
    for (const spec of ['gemini:pro', 'claude-sonnet', 'anthropic:', ':gpt-5']) {
      const error = failure(() => resolveModel(spec, config));
      expect(error.code, spec).toBe('invalid_request');
      expect(error.message, spec).toContain('anthropic, openai, openai-compatible, script');
    }
  });

  it('builds anthropic and openai models from their usual variables, and asks for a missing key', () => {
    const env = { ANTHROPIC_API_KEY: 'sk-ant-test', OPENAI_API_KEY: 'sk-test' };
    expect(resolveModel('anthropic:claude-sonnet-4-5', config, { env })).toMatchObject({ provider: 'anthropic', modelId: 'claude-sonnet-4-5' });
    expect(resolveModel('openai:gpt-5', config, { env }).model.specificationVersion).toBe('v4');
    const anthropic = failure(() => resolveModel('anthropic:claude-sonnet-4-5', config, { env: {} }));
    expect(anthropic.code).toBe('model_not_configured');
    expect(anthropic.message).toMatch(/ANTHROPIC_API_KEY/);
    expect(failure(() => resolveModel('openai:gpt-5', config, { env: {} })).message).toMatch(/OPENAI_API_KEY/);
  });

  it('needs a base URL for openai-compatible', () => {
    const error = failure(() => resolveModel('openai-compatible:llama3', config));
    expect(error.code).toBe('model_not_configured');
    expect(error.message).toMatch(/set WORKCELL_OPENAI_COMPATIBLE_BASE_URL/);
  });

  it('loads script files given by the operator anywhere', () => {
    const { root } = setup();
    const resolved = resolveModel(`script:${join(root, 'outside.json')}`, config);
    expect(resolved.provider).toBe('script');
    expect(resolved.model).toBeInstanceOf(ScriptModel);
  });

  it('confines script files named by a job to the script folder', () => {
    const { root, scriptDir, config: withDir } = setup();
    expect(resolveModel('script:ok.json', withDir, { fromJob: true }).model).toBeInstanceOf(ScriptModel);
    expect(resolveModel('script:nested/deep.json', withDir, { fromJob: true }).provider).toBe('script');
    expect(resolveModel(`script:${join(scriptDir, 'ok.json')}`, withDir, { fromJob: true }).provider).toBe('script');
    expect(resolveModel('script:alias.json', withDir, { fromJob: true }).provider).toBe('script');

    for (const spec of [`script:${join(root, 'outside.json')}`, 'script:../outside.json', 'script:nested/../../outside.json', 'script:/etc/passwd']) {
      const error = failure(() => resolveModel(spec, withDir, { fromJob: true }));
      expect(error.code, spec).toBe('invalid_request');
      expect(error.message, spec).toMatch(/not allowed/);
      expect(error.message, spec).not.toContain(scriptDir);
    }
    const missing = failure(() => resolveModel('script:missing.json', withDir, { fromJob: true }));
    expect(missing.message).toMatch(/does not exist/);
    expect(missing.message).not.toContain(scriptDir);
  });

  it('refuses a symlink in the script folder that escapes it', () => {
    const { scriptDir, config: withDir } = setup();
    const error = failure(() => resolveModel('script:escape.json', withDir, { fromJob: true }));
    expect(error.message).toMatch(/not allowed/);
    expect(error.message).not.toContain(scriptDir);
    // The operator's own configuration may point anywhere.
    expect(resolveModel(`script:${join(scriptDir, 'escape.json')}`, withDir).provider).toBe('script');
  });

  it('refuses script models from jobs when no script folder is configured', () => {
    const { root } = setup();
    const error = failure(() => resolveModel(`script:${join(root, 'outside.json')}`, config, { fromJob: true }));
    expect(error.message).toMatch(/WORKCELL_SCRIPT_DIR/);
    // A job that gives no model gets the server's default, which is trusted.
    expect(resolveModel(undefined, { ...config, model: `script:${join(root, 'outside.json')}` }, { fromJob: true }).provider).toBe('script');
  });

  it('reports a malformed script file without echoing it', () => {
    const { scriptDir, config: withDir } = setup();
    writeFileSync(join(scriptDir, 'bad.json'), '{"turns": [TOP-SECRET]}');
    writeFileSync(join(scriptDir, 'shape.json'), '{"turns": [{"tool_calls": [{"name": "TOP-SECRET"}]}]}');
    for (const file of ['bad.json', 'shape.json']) {
      const error = failure(() => resolveModel(`script:${file}`, withDir, { fromJob: true }));
      expect(error.code).toBe('invalid_request');
      expect(error.message).toMatch(new RegExp(`script model file ${file.replace('.', '\\.')} is not (valid JSON|a valid trajectory)`));
      expect(error.message).not.toContain('TOP-SECRET');
    }
  });
});
