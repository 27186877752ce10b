import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'vitest';
import { withSandbox } from '../../helpers/sandbox.ts';

it('explores', async () => {
  await withSandbox(async ({ sandbox, logDir }) => {
    const run = async (language: 'python' | 'typescript' | 'javascript', code: string, timeout_ms = 30_000) => {
      const t = performance.now();
      try {
        const r = await sandbox.client.call('runCode', { language, code, timeout_ms });
        const short = { ...r, outputs: r.outputs.map((o) => (o.type === 'image' ? { ...o, data_base64: o.data_base64.length } : 'text' in o && o.text !== undefined && o.text.length > 300 ? { ...o, text: `${o.text.slice(0, 150)}...${o.text.slice(-150)} (${o.text.length})` } : o)) };
        console.log(Math.round(performance.now() - t), JSON.stringify(short));
      } catch (e) { console.log('ERR', e); }
    };
    await run('python', 'x = 1');
    await run('python', 'print("y" * 30_000_000)');
    await run('python', 'import sys\nwhile True: sys.stdout.write("x" * 1000 + "\\n")', 3000);
    await run('python', 'print("still here")');
    await run('python', 'import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(100)', 2000);
    await run('python', 'print("again")');
    console.log(readFileSync(join(logDir, 'sandbox.log'), 'utf8').split('\n').filter((l) => !l.includes('"jupyter"')).join('\n'));
  });
}, 300_000);
