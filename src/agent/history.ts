// The conversation of one job, in one structure: user messages (the task, nudges, later follow-ups), assistant
// turns (text and tool calls) and tool results (whole), rebuilt from a job's events (`historyFromEvents`).
// `toMessages()` renders all of it for the model: tool results cut to modelOutputMaxChars, and every tool call
// answered (a call whose result was never recorded gets an "interrupted" result), since providers reject a tool call
// without a result. The agent loop does not use it: its prompts are built under a token budget by
// agent/context/prompt-builder.ts. This whole-history rendering is the baseline the tests and benchmarks compare with.
import type { ModelMessage, ToolCallPart, ToolResultPart } from 'ai';
import type { JobEvent } from '../jobs/event-log.ts';
import { asObject } from './context/prompt-builder.ts';
import { modelOutputMaxChars } from './tools/definitions.ts';
import { truncateMiddle } from './tools/run-tool.ts';

export type UserMessageSource = 'task' | 'nudge' | 'client';

export interface HistoryToolCall {
  callId: string;
  name: string;
  /** The arguments as the model sent them (an object, or the raw text when they were not valid JSON). */
  args: unknown;
}

export type HistoryEntry =
  | { kind: 'user'; text: string; source: UserMessageSource }
  | { kind: 'assistant'; text: string; toolCalls: HistoryToolCall[] }
  | { kind: 'tool-result'; callId: string; name: string; isError: boolean; output: string };

export class History {
  readonly entries: HistoryEntry[] = [];

  addUser(text: string, source: UserMessageSource): void {
    this.entries.push({ kind: 'user', text, source });
  }

  addAssistant(text: string, toolCalls: HistoryToolCall[]): void {
    this.entries.push({ kind: 'assistant', text, toolCalls });
  }

  addToolResult(callId: string, name: string, isError: boolean, output: string): void {
    this.entries.push({ kind: 'tool-result', callId, name, isError, output });
  }

  toMessages(): ModelMessage[] {
    const messages: ModelMessage[] = [];
    let pending: HistoryToolCall[] = [];
    let results: ToolResultPart[] = [];
    // Closes the tool message that answers the last assistant turn, filling in calls that have no result.
    const flush = () => {
      const answered = new Set(results.map((result) => result.toolCallId));
      for (const call of pending) {
        if (!answered.has(call.callId)) {
          results.push(toolResult(call.callId, call.name, true, 'This tool call was interrupted before it returned a result; its effects, if any, are unknown. Check the state before retrying.'));
        }
      }
      if (results.length > 0) messages.push({ role: 'tool', content: results });
      pending = [];
      results = [];
    };
    for (const entry of this.entries) {
      switch (entry.kind) {
        case 'user':
          flush();
          messages.push({ role: 'user', content: entry.text });
          break;
        case 'assistant': {
          flush();
          const parts: Array<{ type: 'text'; text: string } | ToolCallPart> = [];
          if (entry.text !== '') parts.push({ type: 'text', text: entry.text });
          for (const call of entry.toolCalls) parts.push({ type: 'tool-call', toolCallId: call.callId, toolName: call.name, input: asObject(call.args) });
          if (parts.length === 0) parts.push({ type: 'text', text: '(no response)' });
          messages.push({ role: 'assistant', content: parts });
          pending = entry.toolCalls;
          break;
        }
        case 'tool-result':
          results.push(toolResult(entry.callId, entry.name, entry.isError, truncateMiddle(entry.output, modelOutputMaxChars).text));
          break;
      }
    }
    flush();
    return messages;
  }
}

function toolResult(callId: string, name: string, isError: boolean, text: string): ToolResultPart {
  return { type: 'tool-result', toolCallId: callId, toolName: name, output: isError ? { type: 'error-text', value: text } : { type: 'text', value: text } };
}

/** Rebuilds a job's history from its events (user-message, model-turn, tool-result; other events are ignored). */
export function historyFromEvents(events: Iterable<Pick<JobEvent, 'type' | 'data'>>): History {
  const history = new History();
  for (const event of events) {
    const data = event.data;
    switch (event.type) {
      case 'user-message':
        history.addUser(text(data.text), (data.source as UserMessageSource | undefined) ?? 'client');
        break;
      case 'model-turn': {
        const calls = Array.isArray(data.tool_calls) ? (data.tool_calls as Array<{ call_id: string; name: string; args: unknown }>) : [];
        history.addAssistant(text(data.text), calls.map((call) => ({ callId: call.call_id, name: call.name, args: call.args })));
        break;
      }
      case 'tool-result':
        history.addToolResult(text(data.call_id), text(data.name), data.is_error === true, text(data.output));
        break;
      default:
        break;
    }
  }
  return history;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}
