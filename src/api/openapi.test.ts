// docs/openapi.json is generated from the route schemas (`npm run openapi`); this keeps the committed copy true.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openApiDocument } from '../cli/serve.ts';

describe('docs/openapi.json', () => {
  it('matches the document the routes generate (run `npm run openapi` after changing a route)', async () => {
    const committed: unknown = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8'));
    expect(await openApiDocument()).toEqual(committed);
  });
});
