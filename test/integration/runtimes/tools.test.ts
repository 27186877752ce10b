// The tools the agent uses, on every runtime, through sandboxd in a real sandbox: the shell (state persists between
// calls), the file tools, run_code with the Python kernel, and a GUI screenshot. One sandbox per runtime for the file.
// microvm (QEMU TCG here) skips the GUI desktop: under emulation Xvfb, openbox and x11vnc take minutes to start.
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { deleteSandboxFile, getSandboxFile, putSandboxFile } from '../../../src/runtimes/sandboxd-files.ts';
import { runtimeCases, skipReason, useRuntimeSandbox } from './runtimes.ts';

for (const runtimeCase of runtimeCases) {
  const skip = await skipReason(runtimeCase.name);
  if (skip !== undefined) console.warn(`skipping the ${runtimeCase.name} tools tests: ${skip}`);
  const timeout = runtimeCase.slow ? 600_000 : 180_000;

  describe.skipIf(skip !== undefined)(`tools on ${runtimeCase.name}`, () => {
    const sandbox = useRuntimeSandbox(runtimeCase.name, timeout);

    it('says which runtime and isolation it is', () => {
      expect(sandbox().sandbox.runtime).toBe(runtimeCase.name);
      expect(sandbox().sandbox.isolation).toMatch(new RegExp(`^${runtimeCase.name}`));
      expect(sandbox().sandbox.isolation).toMatch(/no network/);
    });

    it('shell: runs as uid 1000 in /workspace, keeps state between calls, reports exit codes', async () => {
      const first = await sandbox().sh('id -u; pwd; cd /tmp && export GREETING=hello; false');
      expect(first.output.trim().split('\n')).toEqual(['1000', '/workspace']);
      expect(first.exit_code).toBe(1);
      const second = await sandbox().sh('pwd; echo $GREETING');
      expect(second.output.trim().split('\n')).toEqual(['/tmp', 'hello']);
      expect(second.exit_code).toBe(0);
    }, timeout);

    it('files: write, read, edit and list in /workspace; paths outside are refused', async () => {
      const { client } = sandbox().sandbox;
      await client.call('writeFile', { path: 'notes/a.txt', content: 'one\ntwo\n' });
      await client.call('editFile', { path: 'notes/a.txt', old_string: 'two', new_string: 'three' });
      expect((await client.call('readFile', { path: 'notes/a.txt' })).content).toBe('one\nthree\n');
      const listed = await client.call('listFiles', { path: '.' });
      expect(listed.entries.map((entry) => entry.path)).toContain('notes/a.txt');
      await expect(client.call('readFile', { path: '../etc/passwd' })).rejects.toMatchObject({ code: 'path_outside_workspace' });
      expect((await sandbox().sh('cat /workspace/notes/a.txt')).output).toBe('one\nthree\n');
    }, timeout);

    it("the API's file routes: bytes in and out through sandboxd, ETags and If-Match, links refused", async () => {
      const { client } = sandbox().sandbox;
      const body = Buffer.from('raw bytes\u0000 through the route\n');
      const written = await putSandboxFile(client, 'raw/data.bin', Readable.from([body]), { maxBytes: 1 << 20, declaredBytes: body.length });
      expect(written).toMatchObject({ path: 'raw/data.bin', size: body.length, created: true });
      const read = await getSandboxFile(client, 'raw/data.bin');
      if (read.kind !== 'file') throw new Error(`expected a file, got ${read.kind}`);
      expect(read.etag).toBe(written.etag);
      expect(await buffer(read.body)).toEqual(body);
      await expect(putSandboxFile(client, 'raw/data.bin', Readable.from([Buffer.from('x')]), { maxBytes: 1 << 20, ifMatch: '"0000"' })).rejects.toMatchObject({ code: 'precondition_failed' });
      await sandbox().sh('ln -s /etc/passwd /workspace/raw/link');
      await expect(getSandboxFile(client, 'raw/link')).rejects.toMatchObject({ code: 'path_outside_workspace' });
      expect(await deleteSandboxFile(client, 'raw/data.bin', { ifMatch: written.etag })).toEqual({ path: 'raw/data.bin', type: 'file' });
      expect((await sandbox().sh("find /workspace/raw -mindepth 1 -printf '%f\\n'")).output.trim()).toBe('link');
    }, timeout);

    it('run_code: Python keeps its state from one call to the next', async () => {
      const { client } = sandbox().sandbox;
      const first = await client.call('runCode', { language: 'python', code: 'x = 6 * 7\nprint("ready")', timeout_ms: timeout - 10_000 });
      expect(first.status, JSON.stringify(first)).toBe('ok');
      const second = await client.call('runCode', { language: 'python', code: 'x + 1', timeout_ms: 60_000 });
      expect(second.outputs).toContainEqual({ type: 'result', text: '43' });
    }, timeout);

    it.skipIf(!runtimeCase.gui)('gui: the desktop starts and a screenshot is a PNG of the screen', async () => {
      const shot = await sandbox().sandbox.client.call('gui', { action: 'screenshot' });
      expect(shot.screenshot).toMatchObject({ media_type: 'image/png', width: 1280, height: 800 });
      expect(Buffer.from(shot.screenshot!.data, 'base64').subarray(1, 4).toString('ascii')).toBe('PNG');
      // gVisor's desktop has no window manager (see runtimes.ts), and the agent is told so.
      if (runtimeCase.name === 'gvisor') expect(shot.output).toContain('No window manager runs in this sandbox');
      else expect(shot.output).not.toContain('No window manager');
      const moved = await sandbox().sandbox.client.call('gui', { action: 'move', x: 640, y: 400, screenshot: false });
      expect(moved.output).toMatch(/640/);
    }, timeout);
  });
}
