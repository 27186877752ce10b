#!/usr/bin/env node
// The `workcell` command. The sources are TypeScript that Node 24 runs directly (type stripping).
await import('../src/cli/main.ts');
