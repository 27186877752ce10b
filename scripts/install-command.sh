#!/usr/bin/env bash
# Puts the `workcell` command on PATH: BIN_DIR/workcell (default /usr/local/bin), a wrapper that runs this checkout's
# bin/workcell.js with Node.js 24 named by its absolute path (the node on PATH now, or $WORKCELL_NODE), so that another
# node earlier on a user's PATH does not matter. It `exec`s node, so `workcell serve` is the server's own process:
# Ctrl-C, `kill` and a service manager's SIGTERM reach it (through `npx` they reach only npm). Idempotent: the wrapper is
# rewritten only when it would change. scripts/setup.sh runs it; run it again if this checkout or Node moves.
# Usage: scripts/install-command.sh [BIN_DIR]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${1:-/usr/local/bin}"
die() { printf 'install-command: error: %s\n' "$*" >&2; exit 1; }

node="${WORKCELL_NODE:-$(command -v node || true)}"
[ -n "$node" ] || die "node not found on PATH: install Node.js 24 (scripts/setup.sh does)"
node="$(readlink -f "$node")"
major="$("$node" -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 24 ] || die "$node is Node.js $("$node" -v); workcell needs 24 or newer (scripts/setup.sh installs it)"
entry="$repo/bin/workcell.js"
[ -f "$entry" ] || die "$entry not found"
case "$node$entry" in *\'*) die "paths with a single quote are not supported: $node, $entry" ;; esac

wrapper="#!/bin/sh
# The workcell command: written by $repo/scripts/install-command.sh (run it again if the checkout or Node moves).
exec '$node' '$entry' \"\$@\""
target="$bin_dir/workcell"
if [ -f "$target" ] && [ ! -L "$target" ] && [ "$(cat "$target")" = "$wrapper" ]; then
  exit 0
fi
mkdir -p "$bin_dir"
tmp="$(mktemp "$bin_dir/.workcell.XXXXXX")"
printf '%s\n' "$wrapper" > "$tmp"
chmod 755 "$tmp"
mv -f "$tmp" "$target"
printf 'install-command: %s runs %s with %s\n' "$target" "$entry" "$node" >&2
