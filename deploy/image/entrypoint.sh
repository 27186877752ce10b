#!/bin/sh
# The server image's entry point: `workcell "$@"`. For a process that runs sandboxes (`worker`, or `serve` without
# --no-worker) it first makes the container look like the host bwrap sandboxes expect, using only the privileges the
# deploy files grant a worker (CAP_SYS_ADMIN, AppArmor unconfined; see deploy/README.md):
#   - cgroups: Docker and Kubernetes mount the container's cgroup read-only; it is made writable (the sandboxes get
#     theirs below it). On cgroup v2 this container's processes also move into a leaf (`server`), because v2 enables
#     controllers for child cgroups (the sandboxes' /workcell/...) only in a cgroup that holds no processes itself.
#   - /proc: a new user namespace may mount procfs (bwrap does, for each sandbox's pid namespace) only where a proc
#     mount is fully visible; the container's /proc has masked and read-only paths over it. A fresh procfs is mounted
#     where only root can reach it (/run/workcell-proc, mode 700); the container's own /proc keeps its masks, but its
#     sys/ is made writable: bwrap --disable-userns writes each sandbox's user.max_user_namespaces there.
#   - the internal route: a worker listening on a wildcard address (WORKCELL_INTERNAL_HOST=0.0.0.0) without
#     WORKCELL_INTERNAL_URL is announced at this container's host name, which Docker's DNS resolves on user-defined
#     networks (compose); the Kubernetes and Nomad files set WORKCELL_INTERNAL_URL themselves.
# It never widens anything for an API replica (`serve --no-worker`), nor for any other command.
set -eu

runs_sandboxes() {
  case "${1:-}" in
    worker) return 0 ;;
    serve) for argument in "$@"; do [ "$argument" = --no-worker ] && return 1; done; return 0 ;;
    *) return 1 ;;
  esac
}

fail() { echo "workcell entrypoint: $*" >&2; exit 1; }

prepare_cgroups() {
  # Every cgroup mount (v2's one, or v1's one per controller) is made writable where the container got it read-only.
  grep -E ' - cgroup2? ' /proc/self/mountinfo | while read -r _ _ _ _ mount_point options _; do
    case ",$options," in
      *,ro,*) mount -o remount,rw "$mount_point" 2>/dev/null || mount -o remount,bind,rw "$mount_point" \
        || fail "cannot make $mount_point writable (the worker needs CAP_SYS_ADMIN and AppArmor unconfined; see deploy/README.md)" ;;
    esac
  done
  # cgroup v2 in a cgroup namespace of its own: this container's processes leave its root for a leaf.
  [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ] || return 0
  [ "$(cat /proc/self/cgroup)" = "0::/" ] || return 0   # not a cgroup namespace's root: a host's tree, as on a host
  mkdir -p /sys/fs/cgroup/server
  while read -r pid; do
    echo "$pid" > /sys/fs/cgroup/server/cgroup.procs 2>/dev/null || true   # a process that just exited
  done < /sys/fs/cgroup/cgroup.procs
  [ -z "$(cat /sys/fs/cgroup/cgroup.procs)" ] || fail "processes left in the container's root cgroup: $(tr '\n' ' ' < /sys/fs/cgroup/cgroup.procs)"
}

prepare_proc() {
  # bwrap --disable-userns writes the sandbox's user.max_user_namespaces through this /proc, whose sys/ Docker and
  # Kubernetes mount read-only.
  if grep -E '^[^ ]+ [^ ]+ [^ ]+ [^ ]+ /proc/sys (ro|ro,[^ ]*) ' /proc/self/mountinfo >/dev/null; then
    mount -o remount,bind,rw /proc/sys || fail "cannot make /proc/sys writable (the worker needs CAP_SYS_ADMIN and AppArmor unconfined; see deploy/README.md)"
  fi
  if ! grep -q ' /run/workcell-proc ' /proc/self/mountinfo; then
    mkdir -p /run/workcell-proc
    chmod 0700 /run/workcell-proc
    mount -t proc -o nosuid,nodev,noexec proc /run/workcell-proc || fail "cannot mount procfs at /run/workcell-proc (the worker needs CAP_SYS_ADMIN and AppArmor unconfined; see deploy/README.md)"
  fi
}

if runs_sandboxes "$@"; then
  prepare_cgroups
  prepare_proc
  case "${WORKCELL_INTERNAL_HOST:-}" in
    0.0.0.0 | :: | '[::]')
      if [ -z "${WORKCELL_INTERNAL_URL:-}" ]; then
        WORKCELL_INTERNAL_URL="http://$(hostname):${WORKCELL_INTERNAL_PORT:?set WORKCELL_INTERNAL_PORT with WORKCELL_INTERNAL_HOST=$WORKCELL_INTERNAL_HOST}"
        export WORKCELL_INTERNAL_URL
      fi
      ;;
  esac
fi
exec /usr/local/bin/workcell "$@"
