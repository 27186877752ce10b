// No network: the sandbox has its own loopback only, cannot reach the host's, and cannot resolve names. (With an
// allow-list, the egress proxy is the one way out: test/integration/network/.)
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useSandbox } from '../../helpers/sandbox.ts';

// Cold, and started ahead as the warm pool does (runtimes/pool/): nothing of the handover may open a way out.
describe.each([{ pooled: false }, { pooled: true }])('bwrap sandbox network (pooled: $pooled)', ({ pooled }) => {
  const fixture = useSandbox({ pooled });
  let server: Server;
  let port = 0;
  let connections = 0;

  beforeAll(async () => {
    server = createServer((socket) => {
      connections++;
      socket.end('hello from the host\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it("cannot reach a listener on the host's loopback", async () => {
    const result = await fixture().sh(`python3 -c "import socket; socket.create_connection(('127.0.0.1', ${port}), 2)"`);
    expect(result.exit_code).not.toBe(0);
    expect(result.output).toMatch(/ConnectionRefusedError|Connection refused/);
    expect(connections).toBe(0);
  });

  it('has only the lo interface', async () => {
    const { sh } = fixture();
    const names = await sh(`python3 -c "import socket; print(' '.join(name for _, name in socket.if_nameindex()))"`);
    expect(names.output.trim()).toBe('lo');
    const links = await sh('ip -o link show | cut -d: -f2 | tr -d " "');
    expect(links.output.trim()).toBe('lo');
    // The host's sysfs is not mounted (it would list the host's interfaces).
    expect((await sh('test -e /sys/class/net')).exit_code).not.toBe(0);
  });

  it('cannot resolve names or reach outside addresses', async () => {
    const { sh } = fixture();
    const dns = await sh(`python3 -c "import socket; socket.getaddrinfo('deb.debian.org', 443)"`);
    expect(dns.exit_code).not.toBe(0);
    expect(dns.output).toMatch(/gaierror/);
    const outside = await sh('curl -sS --max-time 3 http://1.1.1.1/');
    expect(outside.exit_code).not.toBe(0);
  });

  it('has no egress proxy without an allow-list: no proxy variables, no socket, nothing on 3128', async () => {
    const { sh } = fixture();
    expect((await sh('env | grep -ci proxy')).output.trim()).toBe('0');
    expect((await sh('test -e /run/workcell-net')).exit_code).not.toBe(0);
    const bridge = await sh(`python3 -c "import socket; socket.create_connection(('127.0.0.1', 3128), 2)"`);
    expect(bridge.output).toMatch(/ConnectionRefusedError/);
  });
});
