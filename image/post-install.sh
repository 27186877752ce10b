#!/bin/bash
# Runs inside the freshly built rootfs (chroot, as root) after the package list is installed. It must leave a
# tree that is world-readable (the sandbox runs as an unprivileged host user) except what Debian keeps private,
# and it must not depend on anything outside the chroot.
set -euo pipefail

# The agent's user: uid/gid 1000 inside every sandbox, home /home/agent (a tmpfs under bwrap).
getent group agent >/dev/null || groupadd --gid 1000 agent
getent passwd agent >/dev/null || useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent --shell /bin/bash agent
chmod 0755 /home/agent

# Mount points: bwrap binds onto these but cannot create them in a read-only rootfs.
install -d -m 0755 -o 1000 -g 1000 /workspace
install -d -m 0755 /run/workcell /run/workcell-bin

# The sandbox is not the host: its own name, no copy of the builder's resolver or hostname.
echo workcell > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tworkcell\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
: > /etc/resolv.conf

# git refuses repositories owned by another uid; inside the sandbox everything in /workspace is the agent's, but
# a workspace restored from elsewhere may not be.
git config --system --add safe.directory /workspace
git config --system init.defaultBranch main

# Caches and logs of the build itself.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old
find /var/log -type f -delete
rm -f /root/.bash_history
