#!/bin/bash
# Installs the Debian packages of packages.txt (next to this script) into the running system, as root: a fresh
# debootstrap chroot (src/runtimes/image.ts) or a Docker build on a Debian base (image/Dockerfile). Both run this
# same script, so both images get the same packages. Node is either at /usr/local/bin/node already (the builder
# copies it in first) or named by WORKCELL_NODE_VERSION (the Docker build: post-install.sh fetches it afterwards).
# Idempotent: when every package is installed already it changes nothing and needs no network.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true

# Documentation and translations are dead weight for an agent; the copyright files stay. (It applies to what is
# installed from here on: in the rootfs, debootstrap's base packages came before.)
cat > /etc/dpkg/dpkg.cfg.d/01-workcell-nodoc <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF

# Node 24 is not a Debian package, but novnc depends on `nodejs`: without this, apt would install Debian's Node 18
# (and libnode, about 50 MB) as a second node. An empty package that provides `nodejs` tells dpkg that Node is here.
node_version="${WORKCELL_NODE_VERSION:-$(/usr/local/bin/node -p process.versions.node)}"
if [ "$(dpkg-query -W -f='${Version}' workcell-node 2>/dev/null || true)" != "$node_version" ]; then
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/root/DEBIAN"
  cat > "$tmp/root/DEBIAN/control" <<EOF
Package: workcell-node
Version: $node_version
Architecture: all
Maintainer: workcell <workcell@localhost>
Provides: nodejs (= $node_version)
Conflicts: nodejs
Replaces: nodejs
Section: javascript
Priority: optional
Description: Node.js $node_version at /usr/local/bin/node (placed by the workcell image builder)
 Marks Node.js as installed so that packages depending on nodejs do not pull in Debian's.
EOF
  dpkg-deb --root-owner-group --build "$tmp/root" "$tmp/workcell-node.deb" >/dev/null
  dpkg -i "$tmp/workcell-node.deb"
  rm -rf "$tmp"
fi

mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$here/packages.txt")
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "all ${#packages[@]} packages of packages.txt are installed"
  exit 0
fi
echo "installing ${#missing[@]} of ${#packages[@]} packages: ${missing[*]}"
apt-get update -q
apt-get -o Dpkg::Options::=--force-unsafe-io install -y -q --no-install-recommends "${missing[@]}"
