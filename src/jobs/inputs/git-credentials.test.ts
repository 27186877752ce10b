import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { basicAuthorization, findGitCredential, parseGitCredentials, readGitCredentials, type GitCredentialsFile } from './git-credentials.ts';

const team = { username: 'team', token: 'team-token' };
const hostWide = { username: 'ci', token: 'host-token' };
const onPort = { username: 'ci', token: 'port-token' };
const file: GitCredentialsFile = {
  hosts: { 'Git.Example.com': hostWide, 'git.example.com:8443': onPort, '127.0.0.1:3000': onPort },
  keys: { key_team: { 'git.example.com': team }, key_other: { 'elsewhere.example': team } },
};
const find = (url: string, owner: string | null = null) => findGitCredential(file, new URL(url), owner);

describe('git credentials', () => {
  it("takes the owner's API key's entry for the host first, then the host's", () => {
    expect(find('https://git.example.com/a.git', 'key_team')).toEqual({ credential: team, entry: 'keys["key_team"]["git.example.com"]' });
    // Another key, or a key without an entry for this host, falls back to the host's.
    expect(find('https://git.example.com/a.git', 'key_other')).toEqual({ credential: hostWide, entry: 'hosts["Git.Example.com"]' });
    expect(find('https://git.example.com/a.git', 'key_unknown')?.credential).toBe(hostWide);
    expect(find('https://git.example.com/a.git')?.credential).toBe(hostWide);
  });

  it('matches a bare host on its default port only, and host:port on that port only', () => {
    expect(find('http://GIT.example.com/a.git')?.credential).toBe(hostWide);
    expect(find('https://git.example.com:443/a.git')?.credential).toBe(hostWide);
    expect(find('https://git.example.com:8443/a.git')?.credential).toBe(onPort);
    // The team's bare-host entry is not for another port: the host's own port entry is used.
    expect(find('https://git.example.com:8443/a.git', 'key_team')?.credential).toBe(onPort);
    expect(find('https://git.example.com:9000/a.git')).toBeUndefined();
    expect(find('http://127.0.0.1:3000/a.git')?.credential).toBe(onPort);
    expect(find('http://127.0.0.1/a.git')).toBeUndefined();
    // Never for another host, nor a subdomain.
    expect(find('https://other.example.com/a.git')).toBeUndefined();
    expect(find('https://sub.git.example.com/a.git')).toBeUndefined();
    expect(findGitCredential({}, new URL('https://git.example.com/'), 'key_team')).toBeUndefined();
  });

  it('refuses a malformed file naming the entry at fault, never a token', () => {
    expect(parseGitCredentials('{"hosts": {"h": {"username": "u", "token": "t"}}}', '/etc/c.json')).toEqual({ hosts: { h: { username: 'u', token: 't' } } });
    expect(() => parseGitCredentials('{"hosts": ', '/etc/c.json')).toThrow(/WORKCELL_GIT_CREDENTIALS \(\/etc\/c\.json\) is not valid JSON/);
    const bad = (json: unknown) => {
      try {
        parseGitCredentials(JSON.stringify(json), '/etc/c.json');
      } catch (error) {
        return (error as Error).message;
      }
      throw new Error('not refused');
    };
    const noUser = bad({ hosts: { 'git.example.com': { token: 'secret-value-1' } } });
    expect(noUser).toMatch(/hosts\.git\.example\.com\.username/);
    expect(noUser).not.toContain('secret-value-1');
    const colon = bad({ keys: { key_1: { h: { username: 'a:b', token: 'secret-value-2' } } } });
    expect(colon).toMatch(/keys\.key_1\.h\.username: no ":"/);
    expect(colon).not.toContain('secret-value-2');
    const newline = bad({ hosts: { h: { username: 'u', token: 'secret\nvalue-3' } } });
    expect(newline).toMatch(/hosts\.h\.token: no control characters/);
    expect(newline).not.toContain('value-3');
    expect(bad({ host: {} })).toMatch(/Unrecognized key/);
  });

  it('reads the file at each call, and says when it cannot', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'workcell-git-credentials-'));
    try {
      const path = join(dir, 'credentials.json');
      expect(await readGitCredentials(undefined)).toBeUndefined();
      await expect(readGitCredentials(path)).rejects.toThrow(/WORKCELL_GIT_CREDENTIALS \(.*credentials\.json\) cannot be read \(ENOENT\)/);
      writeFileSync(path, JSON.stringify({ hosts: { h: hostWide } }));
      chmodSync(path, 0o644);
      const warnings: unknown[] = [];
      expect(await readGitCredentials(path, { warn: (...args: unknown[]) => warnings.push(args) })).toEqual({ hosts: { h: hostWide } });
      expect(warnings).toHaveLength(1);
      writeFileSync(path, JSON.stringify({ hosts: { h: onPort } }));
      chmodSync(path, 0o600);
      expect(await readGitCredentials(path, { warn: (...args: unknown[]) => warnings.push(args) })).toEqual({ hosts: { h: onPort } });
      expect(warnings).toHaveLength(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('makes the Basic authorization header value', () => {
    expect(basicAuthorization({ username: 'alice', token: 'sekrit' })).toBe(`Basic ${Buffer.from('alice:sekrit').toString('base64')}`);
  });
});
