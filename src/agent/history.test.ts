import { describe, expect, it } from 'vitest';
import { History, historyFromEvents } from './history.ts';
import { MemoryEvents } from './testing/memory-events.ts';
import { modelOutputMaxChars } from './tools/definitions.ts';

describe('History', () => {
  it('renders user, assistant and tool messages, grouping the results of one turn', () => {
    const history = new History();
    history.addUser('build it', 'task');
    history.addAssistant('On it.', [
      { callId: 'c1', name: 'write_file', args: { path: 'a', content: 'b' } },
      { callId: 'c2', name: 'shell', args: { command: 'ls' } },
    ]);
    history.addToolResult('c1', 'write_file', false, 'Created a (1 bytes).');
    history.addToolResult('c2', 'shell', true, 'shell failed: unreachable: gone');
    expect(history.toMessages()).toEqual([
      { role: 'user', content: 'build it' },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'On it.' },
          { type: 'tool-call', toolCallId: 'c1', toolName: 'write_file', input: { path: 'a', content: 'b' } },
          { type: 'tool-call', toolCallId: 'c2', toolName: 'shell', input: { command: 'ls' } },
        ],
      },
      {
        role: 'tool',
        content: [
          { type: 'tool-result', toolCallId: 'c1', toolName: 'write_file', output: { type: 'text', value: 'Created a (1 bytes).' } },
          { type: 'tool-result', toolCallId: 'c2', toolName: 'shell', output: { type: 'error-text', value: 'shell failed: unreachable: gone' } },
        ],
      },
    ]);
  });

  it('answers calls that never got a result, so the prompt stays valid after a crash', () => {
    const history = new History();
    history.addUser('task', 'task');
    history.addAssistant('', [{ callId: 'c1', name: 'shell', args: { command: 'sleep 100' } }]);
    const messages = history.toMessages();
    expect(messages[1]).toEqual({ role: 'assistant', content: [{ type: 'tool-call', toolCallId: 'c1', toolName: 'shell', input: { command: 'sleep 100' } }] });
    expect(messages[2]).toMatchObject({ role: 'tool', content: [{ toolCallId: 'c1', output: { type: 'error-text', value: expect.stringMatching(/interrupted/) as unknown } }] });
  });

  it('sends unparsable arguments as an empty object, and cuts long results', () => {
    const history = new History();
    history.addAssistant('', [{ callId: 'c1', name: 'read_file', args: '{"path": ' }]);
    history.addToolResult('c1', 'read_file', false, 'x'.repeat(modelOutputMaxChars * 2));
    const [assistant, tool] = history.toMessages();
    expect(assistant).toMatchObject({ content: [{ input: {} }] });
    const value = (tool as { content: Array<{ output: { value: string } }> }).content[0]!.output.value;
    expect(value.length).toBeLessThan(modelOutputMaxChars + 300);
    expect(value).toMatch(/30000 characters omitted/);
  });

  it('is rebuilt from the events the loop records', () => {
    const events = new MemoryEvents();
    events.append('job-status', 0, { status: 'running' });
    events.append('user-message', 0, { text: 'task', source: 'task' });
    events.append('model-turn', 1, { text: 'hm', tool_calls: [], finish_reason: 'stop', usage: { input_tokens: 1, output_tokens: 1 } });
    events.append('user-message', 1, { text: 'use a tool', source: 'nudge' });
    events.append('model-turn', 2, { text: '', tool_calls: [{ call_id: 'c1', name: 'shell', args: { command: 'ls' } }], finish_reason: 'tool-calls', usage: {} });
    events.append('tool-call', 2, { call_id: 'c1', name: 'shell', args: { command: 'ls' } });
    events.append('tool-result', 2, { call_id: 'c1', name: 'shell', is_error: false, output: 'exit code: 0', duration_ms: 3 });
    const history = historyFromEvents(events.events);
    expect(history.entries).toEqual([
      { kind: 'user', text: 'task', source: 'task' },
      { kind: 'assistant', text: 'hm', toolCalls: [] },
      { kind: 'user', text: 'use a tool', source: 'nudge' },
      { kind: 'assistant', text: '', toolCalls: [{ callId: 'c1', name: 'shell', args: { command: 'ls' } }] },
      { kind: 'tool-result', callId: 'c1', name: 'shell', isError: false, output: 'exit code: 0' },
    ]);
  });
});
