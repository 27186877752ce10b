// The key store, against every implementation (SQLite and a real Postgres): tokens are checked against a hash,
// revoked keys stop working but still count, and server secrets are made once and shared.
import { beforeEach, describe, expect, it } from 'vitest';
import { storeBackends, useStore } from '../../test/helpers/stores.ts';
import type { KeyStore } from './types.ts';

describe.each(storeBackends())('KeyStore (%s)', (_name, backend) => {
  const fixture = useStore(backend);
  let keys: KeyStore;
  beforeEach(() => {
    keys = fixture.store.keys;
  });

  it('verifies the tokens of live keys only', async () => {
    expect(await keys.hasKeys()).toBe(false);
    const alice = await keys.create('alice', new Date('2026-01-01T00:00:00Z'));
    const bob = await keys.create('bob', new Date('2026-01-02T00:00:00Z'));
    expect(alice.token).toMatch(/^wc_key_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(await keys.hasKeys()).toBe(true);
    expect(await keys.verify(alice.token)).toBe(alice.id);
    expect(await keys.verify(bob.token)).toBe(bob.id);
    // Another key's secret, a made-up key, and no token at all.
    expect(await keys.verify(`wc_${alice.id}_${bob.token.slice(-43)}`)).toBeUndefined();
    expect(await keys.verify(`wc_key_0123456789abcdef_${alice.token.slice(-43)}`)).toBeUndefined();
    expect(await keys.verify('not a token')).toBeUndefined();
    expect(await keys.list()).toEqual([
      { id: alice.id, name: 'alice', created_at: '2026-01-01T00:00:00.000Z', revoked_at: null },
      { id: bob.id, name: 'bob', created_at: '2026-01-02T00:00:00.000Z', revoked_at: null },
    ]);
  });

  it('revokes a key once; a revoked key still counts as keys in use', async () => {
    const alice = await keys.create('alice');
    expect(await keys.isLive(alice.id)).toBe(true);
    expect(await keys.revoke(alice.id, new Date('2026-02-01T00:00:00Z'))).toBe(true);
    expect(await keys.revoke(alice.id)).toBe(false);
    expect(await keys.revoke('key_0123456789abcdef')).toBe(false);
    expect(await keys.isLive(alice.id)).toBe(false);
    expect(await keys.isLive('key_0123456789abcdef')).toBe(false);
    expect(await keys.verify(alice.token)).toBeUndefined();
    expect(await keys.hasKeys()).toBe(true);
    expect((await keys.list())[0]?.revoked_at).toBe('2026-02-01T00:00:00.000Z');
  });

  it('makes each server secret once, the same for every store opened on it', async () => {
    const secret = await keys.serverSecret('browser-token');
    expect(secret).toBeInstanceOf(Buffer);
    expect(secret).toHaveLength(32);
    expect(await keys.serverSecret('browser-token')).toEqual(secret);
    expect(await keys.serverSecret('other')).not.toEqual(secret);
    const second = await fixture.openAnother();
    try {
      expect(await second.keys.serverSecret('browser-token')).toEqual(secret);
    } finally {
      await second.close();
    }
    keys = (await fixture.reopen()).keys;
    expect(await keys.serverSecret('browser-token')).toEqual(secret);
  });
});
