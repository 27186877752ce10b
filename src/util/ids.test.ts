import { describe, expect, it } from 'vitest';
import { isJobId, newJobId } from './ids.ts';

describe('newJobId', () => {
  it('sorts in creation order within one millisecond and while the clock steps back', () => {
    const ids = [newJobId(5_000), ...Array.from({ length: 200 }, () => newJobId(5_000)), newJobId(4_000), newJobId(6_000)];
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(isJobId(id)).toBe(true);
  });

  it('carries the increment into the next digit', () => {
    const ids = Array.from({ length: 2000 }, () => newJobId(7_000));
    expect([...ids].sort()).toEqual(ids);
  });
});
