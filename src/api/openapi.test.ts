// docs/openapi.json and the client's types (src/client/schema.d.ts) are generated from the route schemas (`npm run
// openapi`); this keeps the committed copies true, and lints the document with Spectral's `oas` ruleset (.spectral.yaml).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';
import { beforeAll, describe, expect, it } from 'vitest';
import { openApiDocument } from '../app.ts';

const root = new URL('../../', import.meta.url).pathname;
let document: Record<string, unknown>;

beforeAll(async () => {
  document = (await openApiDocument()) as Record<string, unknown>;
});

describe('the OpenAPI document', () => {
  it('matches docs/openapi.json (run `npm run openapi` after changing a route)', async () => {
    const committed: unknown = JSON.parse(await readFile(join(root, 'docs/openapi.json'), 'utf8'));
    expect(document).toEqual(committed);
  });

  it('matches the client types in src/client/schema.d.ts (run `npm run openapi` after changing a route)', async () => {
    // What `openapi-typescript docs/openapi.json --output src/client/schema.d.ts` writes.
    const generated = `${COMMENT_HEADER}${astToString(await openapiTS(structuredClone(document) as never))}`;
    expect(await readFile(join(root, 'src/client/schema.d.ts'), 'utf8')).toBe(generated);
  });

  it('gives every operation an operationId, tags, a description and problem+json errors', () => {
    const paths = document.paths as Record<string, Record<string, { operationId?: string; tags?: string[]; description?: string; responses: Record<string, { content?: Record<string, unknown> }> }>>;
    const ids = new Set<string>();
    for (const [path, operations] of Object.entries(paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const where = `${method.toUpperCase()} ${path}`;
        expect(operation.operationId, where).toMatch(/^[a-z][A-Za-z]+$/);
        expect(ids.has(operation.operationId!), `${where}: operationId ${operation.operationId} is used twice`).toBe(false);
        ids.add(operation.operationId!);
        expect(operation.tags?.length, where).toBeGreaterThan(0);
        expect(operation.description, where).toBeTruthy();
        for (const [status, response] of Object.entries(operation.responses)) {
          if (Number(status) >= 400) expect(Object.keys(response.content ?? {}), `${where} ${status}`).toEqual(['application/problem+json']);
        }
      }
    }
    // The pages proxied into sandboxes and the document itself stay out of it.
    expect(Object.keys(paths).filter((path) => /desktop|jupyter|openapi/.test(path))).toEqual([]);
  });

  it("passes Spectral's oas ruleset with no error and no warning", { timeout: 120_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'workcell-spectral-'));
    try {
      const file = join(dir, 'openapi.json');
      await writeFile(file, JSON.stringify(document, null, 2));
      const output = await new Promise<string>((resolve, reject) => {
        // With this Node, whatever `node` PATH finds first.
        const spectral = join(root, 'node_modules/@stoplight/spectral-cli/dist/index.js');
        execFile(process.execPath, [spectral, 'lint', '--quiet', '--format', 'json', '--ruleset', join(root, '.spectral.yaml'), file], { cwd: root, timeout: 110_000 }, (error, stdout, stderr) => {
          // Spectral exits 1 when it finds errors: the JSON on stdout says which.
          if (stdout.trim().startsWith('[')) resolve(stdout);
          else reject(new Error(`spectral failed: ${error?.message ?? ''} ${stderr}`));
        });
      });
      // Severity 0 is an error, 1 a warning (2 and 3 are information and hints).
      const results = (JSON.parse(output) as Array<{ code: string; message: string; path: string[]; severity: number }>)
        .filter((result) => result.severity <= 1)
        .map((result) => `${result.code} at ${result.path.join('.')}: ${result.message}`);
      expect(results).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
