// The sandbox image as the agent meets it, in a real bwrap sandbox: every tool DESIGN.md section 5 promises is on
// PATH and runs as uid 1000 on the read-only rootfs, the X stack draws, node-pty (sandboxd's PTYs) spawns a shell,
// and Jupyter with the image's configuration runs Python, TypeScript and JavaScript kernels.
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { readNpmPackageList, sandboxNativeModulesDir } from '../../../src/runtimes/image.ts';
import { useSandbox } from '../../helpers/sandbox.ts';
import type { JupyterReport } from './jupyter-client.mts';

const npmVersion = (name: string) => readNpmPackageList().find((p) => p.name === name)?.version;

describe('sandbox image', () => {
  const fixture = useSandbox();

  it.each([
    ['node', 'node -p process.version', process.version],
    ['npm', 'npm --version && npx --version', `${npmVersion('npm')}\n${npmVersion('npm')}`],
    ['tsc', 'tsc --version', `Version ${npmVersion('typescript')}`],
    ['tsx', `tsx -e 'const n: number = 6 * 7; console.log(n)'`, '42'],
    ['python libraries', `python3 -c 'import numpy, pandas, matplotlib, requests; print("imported")'`, 'imported'],
    ['pip', 'python3 -m pip --version', /^pip \d+/],
    ['jupyter server', 'jupyter server --version', /^1\.\d+\.\d+$/],
    ['git', 'git --version', /^git version 2\./],
    ['ripgrep', 'rg --version', /^ripgrep \d+/],
    ['gcc and make', 'gcc --version && g++ --version && make --version', /^gcc .*\n[\s\S]*g\+\+ [\s\S]*GNU Make/],
    ['Xvfb', 'Xvfb -help 2>&1 | head -1', /^use: X \[:<display>\] \[option\]/],
    ['xdotool', 'xdotool --version', /^xdotool version \d/],
    ['scrot', 'scrot --version', /^scrot version \d/],
    ['x11vnc', 'x11vnc -version', /x11vnc: \d/],
    ['websockify', 'websockify --help 2>&1 | head -1', /^Usage:/],
    ['openbox', 'openbox --version | head -1', /^Openbox \d/],
    ['xterm', 'xterm -version', /^XTerm\(\d+\)/],
    ['noVNC', 'ls /usr/share/novnc/vnc.html', '/usr/share/novnc/vnc.html'],
    ['tini', 'tini --version', /^tini version \d/],
  ])('has %s', async (_name, command, expected) => {
    const result = await fixture().sh(command);
    expect(result.exit_code, result.output).toBe(0);
    if (typeof expected === 'string') expect(result.output.trim()).toBe(expected);
    else expect(result.output.trim()).toMatch(expected);
  });

  it('lists the python3, tslab and jslab Jupyter kernels', async () => {
    // stderr aside: importing ipykernel makes debugpy print a warning about frozen modules there.
    const result = await fixture().sh('jupyter kernelspec list --json 2>/dev/null');
    expect(result.exit_code, result.output).toBe(0);
    const { kernelspecs } = JSON.parse(result.output) as { kernelspecs: Record<string, { spec: { argv: string[]; language: string } }> };
    expect(Object.keys(kernelspecs).sort()).toEqual(['jslab', 'python3', 'tslab']);
    expect(kernelspecs.tslab?.spec).toMatchObject({ language: 'typescript', argv: ['/usr/local/bin/tslab', 'kernel', '--config-path', '{connection_file}'] });
    expect(kernelspecs.jslab?.spec.language).toBe('javascript');
  });

  it('compiles TypeScript against Node types from any folder', async () => {
    const { sh } = fixture();
    await sh(`mkdir -p /workspace/ts && printf '%s\\n' 'import { readFileSync } from "node:fs";' 'const pid: number = process.pid;' 'console.log(typeof readFileSync, pid > 0);' > /workspace/ts/main.ts`);
    const result = await sh('cd /workspace/ts && tsc --strict --types node --module nodenext --outDir /tmp/ts-out main.ts && node /tmp/ts-out/main.js');
    expect(result.exit_code, result.output).toBe(0);
    expect(result.output.trim()).toBe('function true');
  });

  it('draws an X desktop: Xvfb, xdotool and scrot', async () => {
    const { sh } = fixture();
    const result = await sh(
      [
        // Ready once it writes its display number on -displayfd; -noreset: without it the server resets when its last
        // client (xdotool) leaves, and a connection made during the reset (scrot's) is refused.
        'Xvfb :7 -screen 0 800x600x24 -nolisten tcp -noreset -displayfd 3 3>/tmp/xvfb.ready >/tmp/xvfb.log 2>&1 & xvfb=$!',
        'for i in $(seq 1200); do [ -s /tmp/xvfb.ready ] && break; sleep 0.05; done',
        'export DISPLAY=:7',
        'xdotool getdisplaygeometry',
        'scrot /tmp/shot.png && head -c 8 /tmp/shot.png | od -An -tx1 | tr -d " \\n"; echo',
        'kill $xvfb; wait $xvfb 2>/dev/null; true',
      ].join('\n'),
    );
    expect(result.exit_code, result.output).toBe(0);
    // (An interactive shell may add job-control lines such as "[1] 116" around these.)
    const lines = result.output.trim().split('\n');
    expect(lines, result.output).toContain('800 600');
    expect(lines, result.output).toContain('89504e470d0a1a0a');
  });

  it('has node-pty for sandboxd, which runs a shell in a PTY', async () => {
    const { sh, workspace } = fixture();
    const loaded = await sh(`node -e "require('${sandboxNativeModulesDir}/node-pty').spawn('bash',[],{}).onData(d=>{console.log(JSON.stringify(d));process.exit(0)})"`);
    expect(loaded.exit_code, loaded.output).toBe(0);
    expect(loaded.output).toMatch(/^".+"\n$/);
    // A round trip: what is typed reaches bash through the terminal and its output comes back.
    const script = [
      `const pty = require(${JSON.stringify(`${sandboxNativeModulesDir}/node-pty`)});`,
      "const shell = pty.spawn('bash', ['--norc', '--noprofile'], { cols: 80, rows: 24, cwd: '/workspace' });",
      "let output = '';",
      // The expected texts are not in what is typed (the terminal echoes that back too), only in what bash prints.
      "shell.onData((data) => { output += data; if (output.includes('pty-42') && output.includes('tty-2')) { console.log('round trip'); process.exit(0); } });",
      "shell.write('echo pty-$((6 * 7)); test -t 0 && echo tty-$((1 + 1))\\r');",
      "setTimeout(() => { console.log('timed out: ' + JSON.stringify(output)); process.exit(1); }, 10000);",
    ].join('\n');
    await writeFile(join(workspace, 'pty-check.cjs'), script);
    const result = await sh('node /workspace/pty-check.cjs');
    expect(result.exit_code, result.output).toBe(0);
    expect(result.output.trim()).toBe('round trip');
  });

  // A Jupyter server and three kernel starts, one after the other: bounded for a hang, not timed (a busy machine
  // makes each start take tens of seconds).
  it('runs Python, TypeScript and JavaScript kernels under Jupyter with the image configuration', async () => {
    const { sh, workspace } = fixture();
    await copyFile(fileURLToPath(new URL('jupyter-client.mts', import.meta.url)), join(workspace, 'jupyter-client.mts'));
    const result = await sh('node /workspace/jupyter-client.mts', 300_000);
    const line = result.output.split('\n').findLast((text) => text.startsWith('{')) ?? result.output;
    expect(result.exit_code, line).toBe(0);
    const report = JSON.parse(line) as JupyterReport;
    expect(report.serverVersion).toMatch(/^1\./);
    const byKernel = Object.fromEntries(report.kernels.map((kernel) => [kernel.kernel, kernel]));
    for (const kernel of report.kernels) {
      expect(kernel.firstExecute, kernel.kernel).toMatchObject({ status: 'ok', stdout: '42\n' });
      expect(kernel.check.status, `${kernel.kernel}: ${kernel.check.error}`).toBe('ok');
    }
    expect(byKernel.python3?.check.stdout).toBe('45 2\n');
    expect(byKernel.tslab?.check.stdout).toBe('true true\n');
    expect(byKernel.jslab?.check.stdout).toBe('2,4,6\n');
    // TCP_NODELAY on the kernel websocket (jupyter_server_config.py): without it every round trip waits out the
    // client's delayed ACK (never under 43 ms, median about 52; with it 7-25 ms). Round trips are only reported below:
    // on a busy machine even the fastest of ten can take longer than the delayed ACK. What is checked is that the
    // image's configuration, loaded as Jupyter loads it, makes the installed server's kernel websocket handler turn
    // TCP_NODELAY on before anything else when a connection opens.
    const nodelay = await sh(`python3 - <<'EOF'
import runpy
from traitlets.config import Config
config = Config()
runpy.run_path("/etc/jupyter/jupyter_server_config.py", init_globals={"get_config": lambda: config})
from jupyter_server.services.kernels.handlers import ZMQChannelsHandler
class Opened(Exception):
    pass
class Connection:
    def set_nodelay(self, value):
        print("set_nodelay", value)
        raise Opened()
try:
    ZMQChannelsHandler.open(Connection(), "kernel-id")
except Opened:
    pass
EOF`);
    expect(nodelay.output).toBe('set_nodelay True\n');
    const timings = report.kernels.map((k) => `${k.kernel}: session ${k.sessionMs} ms, first execute ${k.firstExecute.durationMs} ms, warm ${k.warmRoundTripsMs.join('/')} ms`);
    console.info(`jupyter server ready in ${report.serverReadyMs} ms; ${timings.join('; ')}`);
  }, 330_000);
});
