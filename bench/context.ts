// The context-store benchmarks: `node bench/context.ts [--quick] [--json]` (npm run bench:context). Prints a
// Markdown report (or JSON) on stdout, progress on stderr. Needs no sandbox and no network.
import { parseArgs } from 'node:util';
import { benchStore, benchTrajectory, markdownContextReport, type StoreRow } from './context-bench.ts';
import { describeMachine } from './report.ts';

const { values: flags } = parseArgs({ options: { quick: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
const progress = (message: string) => process.stderr.write(`bench: ${message}\n`);
const sizes = flags.quick ? [1000, 10_000] : [1000, 10_000, 100_000];
const iterations = flags.quick ? 20 : 100;
const trajectorySteps = flags.quick ? 60 : 210;

try {
  const machine = describeMachine();
  const date = new Date().toISOString();
  const stores: StoreRow[] = [];
  for (const events of sizes) stores.push(await benchStore(events, { iterations, hybrid: events <= 10_000, progress }));
  const trajectory = await benchTrajectory(trajectorySteps, progress);
  if (flags.json) process.stdout.write(`${JSON.stringify({ machine, date, stores, trajectory }, null, 2)}\n`);
  else {
    process.stdout.write(`- machine: ${machine.cpu}, ${machine.cores} cores, ${machine.kernel}, Node ${machine.node}; 1-min load average ${machine.loadAverage.start.toFixed(2)} at start\n`);
    process.stdout.write(`- date: ${date}\n- command: \`node bench/context.ts${flags.quick ? ' --quick' : ''}\`\n\n`);
    process.stdout.write(markdownContextReport(stores, trajectory, trajectorySteps));
  }
} catch (error) {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
}
