// A readable live view of a job's events for the terminal: one line per step, tool output abbreviated. Everything in an
// event may come from the model or the sandbox, so every value is escaped (terminal-safe.ts) before colours are added
// (on a terminal, unless NO_COLOR is set: output.ts).
import type { JobEvent } from '../client/index.ts';
import { colorEnabled } from './output.ts';
import { terminalSafe } from './terminal-safe.ts';

const clip = (text: string, max: number) => {
  const oneLine = text.replace(/\s+/g, ' ').trim();
  return terminalSafe(oneLine.length > max ? `${oneLine.slice(0, max - 1)}…` : oneLine);
};

/** One event as a line (or a few); undefined for events not shown. */
export function renderEvent(event: Pick<JobEvent, 'seq' | 'step' | 'time' | 'data'> & { type: string }, color = colorEnabled()): string | undefined {
  const dim = (s: string) => (color ? `\x1b[2m${s}\x1b[0m` : s);
  const bold = (s: string) => (color ? `\x1b[1m${s}\x1b[0m` : s);
  const red = (s: string) => (color ? `\x1b[31m${s}\x1b[0m` : s);
  const time = dim(terminalSafe(String(event.time).slice(11, 19)));
  const d = event.data;
  /** A value of the event as text, escaped; clip() escapes what it shortens itself. */
  const raw = (value: unknown) => (typeof value === 'string' ? value : value === undefined || value === null ? '' : (JSON.stringify(value) ?? ''));
  const text = (value: unknown) => terminalSafe(raw(value));
  switch (event.type) {
    case 'job-status':
      return `${time} ${bold(`job ${text(d.status)}`)}${d.error ? red(`: ${text(d.error)}`) : ''}${d.summary ? `\n${terminalSafe(raw(d.summary), { multiline: true })}` : ''}`;
    case 'sandbox-ready':
      return `${time} sandbox ready: ${text(d.isolation ?? d.runtime)}`;
    case 'user-message':
      return `${time} ${d.source === 'client' ? 'message' : d.source === 'nudge' ? 'nudge' : 'task'}: ${clip(raw(d.text), 200)}`;
    case 'context-summary': {
      const steps = Array.isArray(d.condensed_steps) ? ` steps ${text(d.condensed_steps[0])}-${text(d.condensed_steps[1])}` : '';
      const how = d.method === 'model' ? (d.compressed ? 'summary compressed' : 'summarized') : 'condensed without a summary';
      return `${time} ${dim(`context:${steps} ${how} (level ${text(d.level)})${d.error ? `: ${clip(raw(d.error), 120)}` : ''}`)}`;
    }
    case 'model-turn':
      return d.text ? `${time} ${bold(`step ${text(event.step)}`)} ${clip(raw(d.text), 300)}` : `${time} ${bold(`step ${text(event.step)}`)}`;
    case 'model-retry':
      return `${time} ${red(`model call failed, retry ${text(d.attempt)} in ${text(d.delay_ms)} ms: ${clip(raw(d.error), 200)}`)}`;
    case 'tool-call':
      return `${time}   ▸ ${text(d.name)} ${clip(JSON.stringify(d.args ?? {}), 200)}`;
    case 'tool-result': {
      const output = clip(raw(d.output), 200);
      return `${time}   ◂ ${d.is_error ? red(output || 'error') : dim(output)}`;
    }
    case 'log':
      return `${time} ${dim(text(d.message ?? d))}`;
    default:
      return undefined;
  }
}
