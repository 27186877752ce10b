// The sandbox can write to the directory holding sandboxd's socket. If it swaps the socket for a symlink to some
// other socket on the host, the worker must not follow it: it keeps talking to the socket it saw at start-up.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { withSandbox } from '../../helpers/sandbox.ts';

describe('sandboxd socket', () => {
  it('is pinned: replacing it with a symlink to a host socket does not redirect the worker', async () => {
    const trapDir = await mkdtemp(join(tmpdir(), 'workcell-trap-'));
    await chmod(trapDir, 0o755);
    const trapPath = join(trapDir, 'trap.sock');
    let trapped = 0;
    const trap = createServer((socket) => {
      trapped++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => trap.listen(trapPath, resolve));
    await chmod(trapPath, 0o777);
    try {
      await withSandbox(async ({ sandbox }) => {
        const swap = await sandbox.client.call('shellExec', {
          command: `mv /run/workcell/sandboxd.sock /run/workcell/moved.sock && ln -s ${trapPath} /run/workcell/sandboxd.sock && ls -l /run/workcell`,
        });
        expect(swap.exit_code, swap.output).toBe(0);
        expect(swap.output).toContain(`sandboxd.sock -> ${trapPath}`);
        // Concurrent calls open new connections beyond the one kept alive: each must still reach sandboxd.
        const results = await Promise.all([1, 2, 3, 4, 5].map((n) => sandbox.client.call('shellExec', { command: `echo still-sandboxd-${n}` })));
        results.forEach((result, i) => expect(result.output).toContain(`still-sandboxd-${i + 1}`));
        expect(await sandbox.client.healthy()).toBe(true);
      });
      expect(trapped).toBe(0);
    } finally {
      trap.close();
      await rm(trapDir, { recursive: true, force: true });
    }
  });
});
