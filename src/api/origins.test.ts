import { describe, expect, it } from 'vitest';
import { HostPolicy, parseHost } from './origins.ts';

const id = 'job_01kbf0000000000000000000zz';
const label = 'job-01kbf0000000000000000000zz';

describe('HostPolicy', () => {
  const local = new HostPolicy({ allowedHosts: [], publicUrl: undefined, sandboxUrl: undefined });
  const deployed = new HostPolicy({ allowedHosts: ['10.0.0.5'], publicUrl: 'https://workcell.example.com', sandboxUrl: 'https://{job}.sandbox.example.net' });

  it('answers to loopback names, the public URL and the allowed hosts, and sends job hosts to their sandbox pages', () => {
    for (const host of ['localhost', 'localhost:8080', '127.0.0.1:1', '127.9.9.9', '[::1]:8080', 'LOCALHOST.']) expect(local.classify(host)).toEqual({ kind: 'api' });
    expect(local.classify(`${label}.localhost:8080`)).toEqual({ kind: 'sandbox', jobId: id });
    expect(local.classify(`${label}.sandbox.example.net`).kind).toBe('refused');
    expect(deployed.classify('workcell.example.com').kind).toBe('api');
    expect(deployed.classify('10.0.0.5:8080').kind).toBe('api');
    expect(deployed.classify(`${label}.sandbox.example.net`)).toEqual({ kind: 'sandbox', jobId: id });
    expect(deployed.classify(`${label}.localhost`).kind).toBe('refused');
    for (const host of [undefined, '', 'evil.example', 'workcell.example.com.evil.example', `${label}.evil.example`, 'job-zzzz.localhost', `x${label}.localhost`, 'a b', 'localhost:99999999', `${'a'.repeat(400)}.localhost`]) {
      expect(local.classify(host).kind).toBe('refused');
    }
  });

  it('lets requests through that no page of another origin sent', () => {
    const api = { kind: 'api' } as const;
    expect(local.checkOrigin({ host: 'localhost:8080' }, 'POST', api)).toBeUndefined();
    expect(local.checkOrigin({ host: 'localhost:8080', origin: 'http://localhost:8080' }, 'POST', api)).toBeUndefined();
    expect(deployed.checkOrigin({ host: 'internal:8080', origin: 'https://workcell.example.com' }, 'POST', api)).toBeUndefined();
    expect(local.checkOrigin({ host: 'localhost:8080', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }, 'GET', api)).toBeUndefined();
    for (const headers of [
      { host: 'localhost:8080', origin: 'http://localhost:3000' },
      { host: 'localhost:8080', origin: 'null' },
      { host: 'localhost:8080', origin: 'http://localhost:8080/path' },
      { host: 'localhost:8080', origin: `http://${label}.localhost:8080` },
      { host: 'localhost:8080', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'cors' },
      { host: 'localhost:8080', 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'no-cors' },
    ]) {
      expect(local.checkOrigin(headers, 'POST', api)).toMatch(/refused/);
    }
    expect(local.checkOrigin({ host: 'localhost:8080', 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }, 'POST', api)).toMatch(/refused/);
    // A job's pages may call only their own host.
    const sandbox = { kind: 'sandbox', jobId: id } as const;
    expect(deployed.checkOrigin({ host: `${label}.sandbox.example.net`, origin: `https://${label}.sandbox.example.net` }, 'GET', sandbox)).toBeUndefined();
    expect(deployed.checkOrigin({ host: `${label}.sandbox.example.net`, origin: 'https://workcell.example.com' }, 'GET', sandbox)).toMatch(/refused/);
  });

  it("names each job's origin: the template, or job-<id>.localhost on the API's port for a loopback server", () => {
    expect(local.sandboxOrigin(id, '127.0.0.1:8080')).toEqual({ origin: `http://${label}.localhost:8080`, secure: false });
    expect(local.sandboxOrigin(id, 'workcell.example.com')).toEqual({ error: expect.stringMatching(/WORKCELL_SANDBOX_URL/) as unknown });
    expect(deployed.sandboxOrigin(id, 'anything')).toEqual({ origin: `https://${label}.sandbox.example.net`, secure: true });
  });
});

describe('parseHost', () => {
  it('splits names and ports and refuses anything else', () => {
    expect(parseHost('Example.COM:80')).toEqual({ name: 'example.com', port: '80' });
    expect(parseHost('[::1]:8080')).toEqual({ name: '[::1]', port: '8080' });
    for (const bad of [undefined, '', ':80', 'a:b', 'a/b', 'a@b', 'x'.repeat(301)]) expect(parseHost(bad)).toBeUndefined();
  });
});
