// The egress path in a real bwrap sandbox: sandboxd's bridge on 127.0.0.1:3128 inside, the worker's proxy on a unix
// socket bound read-only at /run/workcell-net. Only loopback listeners of this test are used as destinations.
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllowList } from '../../../src/runtimes/network/allow-list.ts';
import type { ConnectionRecord } from '../../../src/runtimes/network/egress-proxy.ts';
import { createSandboxFixture, waitUntil, type SandboxFixture } from '../../helpers/sandbox.ts';

let echo: Server;
let echoPort = 0;
let closedPort = 0;
let fixture: SandboxFixture | undefined;
const records: ConnectionRecord[] = [];
let step = 1;

/** A python3 program that opens a CONNECT tunnel through the bridge, sends a payload and prints what comes back. */
const tunnelScript = (authority: string, payload: string, then = 's.close()') =>
  `import socket
s = socket.create_connection(("127.0.0.1", 3128), 10)
s.sendall(b"CONNECT ${authority} HTTP/1.1\\r\\nHost: ${authority}\\r\\n\\r\\n")
head = b""
while b"\\r\\n\\r\\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
status, _, rest = head.partition(b"\\r\\n\\r\\n")
print("STATUS", status.split(b"\\r\\n")[0].decode())
if b" 200 " in status:
    s.sendall(b"${payload}")
    got = rest
    while len(got) < len(b"${payload}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    print("ECHO", got.decode())
else:
    print("BODY", rest.decode())
${then}
`;
const tunnel = (authority: string, payload: string) => `python3 - <<'EOF'\n${tunnelScript(authority, payload)}EOF`;

beforeAll(async () => {
  echo = createServer((socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as { port: number }).port;
  // A port with nothing behind it: take one and close it.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  closedPort = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  fixture = await createSandboxFixture({
    network: {
      allow: parseAllowList([`127.0.0.1:${echoPort}`, `127.0.0.1:${closedPort}`, 'localhost', `localhost:${echoPort}`]),
      onConnection: (record) => records.push(record),
      currentStep: () => step,
    },
  });
});

afterAll(async () => {
  await fixture?.dispose();
  await new Promise((resolve) => echo.close(resolve));
});

const sh = (command: string) => fixture!.sh(command);

/** The audit record of a connection: reported when the proxy has closed it, which may be after the command returned. */
async function recordOf(predicate: (record: ConnectionRecord) => boolean, what: string): Promise<ConnectionRecord> {
  await waitUntil(async () => records.some(predicate), 60_000, what);
  return records.findLast(predicate)!;
}

describe('egress through the proxy (bwrap)', () => {
  it('tunnels bytes both ways with CONNECT to an allowed host:port', async () => {
    step = 4;
    const result = await sh(tunnel(`127.0.0.1:${echoPort}`, 'ping-through-the-tunnel'));
    expect(result.output).toContain('STATUS HTTP/1.1 200 Connection Established');
    expect(result.output).toContain('ECHO ping-through-the-tunnel');
    const record = await recordOf((each) => each.method === 'CONNECT' && each.port === echoPort, 'the tunnel\'s audit record');
    expect(record).toMatchObject({ host: '127.0.0.1', ip: '127.0.0.1', allowed: true, step: 4, bytes_in: 23, bytes_out: 23 });
  });

  it('curl tunnels through HTTPS_PROXY (CONNECT) when asked to', async () => {
    // telnet:// keeps reading until the peer closes; the echo server never does, so curl stops at --max-time.
    const result = await sh(`env -u NO_PROXY -u no_proxy curl -sS --max-time 2 --proxytunnel -x "$HTTPS_PROXY" telnet://127.0.0.1:${echoPort} <<< 'hello via curl' ; echo "exit=$?"`);
    expect(result.output).toContain('hello via curl');
  });

  it('refuses a name that resolves to a loopback address unless the name is listed with its port', async () => {
    const bare = await sh(tunnel('localhost:443', 'x'));
    expect(bare.output).toContain('STATUS HTTP/1.1 403 Forbidden');
    expect(bare.output).toMatch(/localhost resolves to (127\.0\.0\.1|::1), a loopback address/);
    const exact = await sh(tunnel(`localhost:${echoPort}`, 'by-name'));
    expect(exact.output).toContain('STATUS HTTP/1.1 200');
    expect(exact.output).toContain('ECHO by-name');
    expect(await recordOf((each) => each.host === 'localhost' && each.port === 443, 'the refusal\'s audit record')).toMatchObject({ allowed: false });
    expect(await recordOf((each) => each.host === 'localhost' && each.port === echoPort, 'the tunnel\'s audit record')).toMatchObject({ allowed: true, ip: '127.0.0.1' });
  });

  it('answers 502 for an allowed destination with nothing listening', async () => {
    const result = await sh(tunnel(`127.0.0.1:${closedPort}`, 'x'));
    expect(result.output).toContain('STATUS HTTP/1.1 502 Bad Gateway');
    expect(result.output).toContain('ECONNREFUSED');
  });

  it('still has no DNS and no route out: only the proxy leads anywhere', async () => {
    const dns = await sh(`python3 -c "import socket; socket.getaddrinfo('localhost.localdomain.invalid', 443)"; getent hosts deb.debian.org; echo "exit=$?"`);
    expect(dns.output).toMatch(/gaierror/);
    expect(dns.output).toContain('exit=2');
    const direct = await sh(`python3 -c "import socket; socket.create_connection(('1.1.1.1', 443), 3)"`);
    expect(direct.exit_code).not.toBe(0);
    expect(direct.output).toMatch(/Network is unreachable|OSError/);
    const links = await sh('ip -o link show | cut -d: -f2 | tr -d " "');
    expect(links.output.trim()).toBe('lo');
  });

  it('cannot replace, remove or add anything next to the proxy socket, and cannot list it', async () => {
    const result = await sh(
      [
        'rm -f /run/workcell-net/proxy.sock; echo "rm=$?"',
        'ln -s /run/workcell/sandboxd.sock /run/workcell-net/other 2>&1; echo "ln=$?"',
        'mv /run/workcell-net /run/workcell-net2 2>&1; echo "mv=$?"',
        'chmod 777 /run/workcell-net/proxy.sock 2>&1; echo "chmod=$?"',
        'ls /run/workcell-net 2>&1; echo "ls=$?"',
        'test -S /run/workcell-net/proxy.sock && echo socket-still-there',
      ].join('\n'),
    );
    expect(result.output).toMatch(/rm=1/);
    expect(result.output).toMatch(/ln=1/);
    expect(result.output).toMatch(/mv=1/);
    expect(result.output).toMatch(/chmod=1/);
    expect(result.output).toMatch(/ls=2/);
    expect(result.output).toContain('socket-still-there');
    // And the tunnel still works afterwards.
    expect((await sh(tunnel(`127.0.0.1:${echoPort}`, 'still'))).output).toContain('ECHO still');
  });

  it('the proxy socket is reachable only by the sandbox user on the host', async () => {
    const { sandbox } = fixture!;
    const { lstat, stat } = await import('node:fs/promises');
    const info = await lstat(`${sandbox.runDir}-net/proxy.sock`);
    expect(info.isSocket()).toBe(true);
    expect(info.mode & 0o777).toBe(0o600);
    expect(info.uid).toBe(sandbox.hostUid);
    expect((await stat(`${sandbox.runDir}-net`)).mode & 0o777).toBe(0o711);
  });
});

describe('destroying a sandbox with egress', () => {
  it('closes its proxy, reports open tunnels and removes the socket directory', async () => {
    const own: ConnectionRecord[] = [];
    const sandboxFixture = await createSandboxFixture({ network: { allow: parseAllowList([`127.0.0.1:${echoPort}`]), onConnection: (record) => own.push(record) } });
    const netDir = `${sandboxFixture.sandbox.runDir}-net`;
    try {
      // A tunnel left open in the background when the sandbox goes.
      await sandboxFixture.sh(`cat > /tmp/t.py <<'EOF'\n${tunnelScript(`127.0.0.1:${echoPort}`, 'x', 'import sys, time; sys.stdout.flush(); time.sleep(600)')}EOF\nnohup python3 -u /tmp/t.py > /tmp/t.log 2>&1 &`);
      await waitUntil(async () => (await sandboxFixture.sh('cat /tmp/t.log')).output.includes('ECHO x'), 60_000, 'the tunnel to open');
    } finally {
      await sandboxFixture.dispose();
    }
    expect(own).toHaveLength(1);
    expect(own[0]).toMatchObject({ allowed: true, bytes_in: 1, bytes_out: 1 });
    const { stat } = await import('node:fs/promises');
    await expect(stat(netDir)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
