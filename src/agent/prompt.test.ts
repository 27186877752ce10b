import { describe, expect, it } from 'vitest';
import { buildSystemPrompt } from './prompt.ts';

describe('buildSystemPrompt', () => {
  it('says there is no network when nothing is allowed', () => {
    expect(buildSystemPrompt()).toContain('- No network access: nothing can be downloaded');
    expect(buildSystemPrompt({ networkAllow: [] })).toBe(buildSystemPrompt());
  });

  it('lists the allowed destinations and how to reach them', () => {
    const prompt = buildSystemPrompt({ networkAllow: ['pypi.org', '*.pythonhosted.org'] });
    expect(prompt).toContain('- Network access only to these destinations: pypi.org, *.pythonhosted.org');
    expect(prompt).toContain('HTTP_PROXY');
    expect(prompt).not.toContain('No network access');
  });
});
