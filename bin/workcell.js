#!/usr/bin/env node
// The `workcell` command. The sources are TypeScript that Node 24 runs directly (type stripping). An older node first
// on PATH would fail on them with an obscure error, so it is told what to do instead (this file stays plain
// JavaScript that any node since 14 parses). The `workcell` that scripts/setup.sh puts on PATH runs this file with
// the Node 24 it found or installed, whatever PATH says (scripts/install-command.sh).
/* global process */
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`workcell: needs Node.js 24 or newer, and ${process.execPath} is ${process.version}: use the workcell command scripts/setup.sh installs (/usr/local/bin/workcell), or put Node.js 24 first on PATH\n`);
  process.exit(1);
}
await import('../src/cli/main.ts');
