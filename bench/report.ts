// What a benchmark run prints: the machine it ran on, when, with which command, and the results as a Markdown
// table (or JSON). Numbers from different machines or runs are not comparable; rows of the same run are.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg, release, type } from 'node:os';
import { findExecutable } from '../src/runtimes/probe.ts';
import type { Result } from './stats.ts';

export interface Machine {
  cpu: string;
  cores: number;
  kernel: string;
  node: string;
  /** `bwrap --version`, e.g. "bubblewrap 0.8.0". */
  bwrap: string;
  /** 1-minute load average when the run started and ended: how busy the machine was besides the benchmark. */
  loadAverage: { start: number; end?: number };
}

export function describeMachine(): Machine {
  const cpuinfo = (() => {
    try {
      return readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return '';
    }
  })();
  return {
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    cores: availableParallelism(),
    kernel: `${type()} ${release()}`,
    node: process.version,
    bwrap: bwrapVersion(),
    loadAverage: { start: loadavg()[0] ?? 0 },
  };
}

function bwrapVersion(): string {
  const bwrap = findExecutable('bwrap');
  if (bwrap === undefined) return 'bwrap not found';
  const result = spawnSync(bwrap, ['--version'], { encoding: 'utf8', timeout: 5000 });
  return result.stdout?.trim() || 'bwrap --version failed';
}

export interface Report {
  machine: Machine;
  date: string;
  command: string;
  results: Result[];
}

/** Three significant figures or so: 0.482, 4.82, 48.2, 482. */
function formatNumber(value: number): string {
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  if (value >= 1) return value.toFixed(2);
  return value.toFixed(3);
}

export function markdownReport(report: Report): string {
  const { machine } = report;
  const load = `${machine.loadAverage.start.toFixed(2)} at start, ${machine.loadAverage.end?.toFixed(2) ?? '?'} at end`;
  const lines = [
    `- machine: ${machine.cpu}, ${machine.cores} cores, ${machine.kernel}, Node ${machine.node}, ${machine.bwrap}; 1-min load average ${load}`,
    `- date: ${report.date}`,
    `- command: \`${report.command}\``,
    '',
    '| measurement | n | median ms | p95 ms | p99 ms | min ms | max ms | req/s |',
    '|---|--:|--:|--:|--:|--:|--:|--:|',
  ];
  let group: string | undefined;
  for (const result of report.results) {
    if (result.group !== group) {
      group = result.group;
      lines.push(`| **${group}** | | | | | | | |`);
    }
    const { n, median, p95, p99, min, max } = result.latencyMs;
    const rate = result.requestsPerSecond === undefined ? '' : formatNumber(result.requestsPerSecond);
    const errors = result.errors ? ` (${result.errors} errors)` : '';
    const name = result.baseline ? `&nbsp;&nbsp;${result.name}` : result.name;
    const unit = result.unit === undefined ? '' : ` ${result.unit}`;
    lines.push(`| ${name}${errors} | ${n} | ${[median, p95, p99, min, max].map((value) => `${formatNumber(value)}${unit}`).join(' | ')} | ${rate} |`);
  }
  return `${lines.join('\n')}\n`;
}

/** Runs a benchmark's main and prints its report (JSON with `json`); a failure goes to stderr with exit code 1. */
export async function printReport(main: () => Promise<Report>, json: boolean): Promise<void> {
  try {
    const report = await main();
    process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : markdownReport(report));
  } catch (error) {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  }
}
