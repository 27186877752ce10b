#!/bin/busybox sh
# /init of the workcell microVM (runtimes/microvm/initramfs.ts packs it with a static busybox, the virtio modules,
# sandboxd and the guest agent). It loads the modules, mounts the rootfs disk (read-only) under a tmpfs
# overlay, the workspace disk at /workspace and sized tmpfs at /tmp, /home/agent and /run, then becomes
# tini running the guest agent, which starts sandboxd as uid 1000 in a cgroup with the sandbox's limits, under the
# sandbox's seccomp filter (the guest agent, root, stays outside it to keep its vsock channel), and carries
# its traffic over the host channel (virtio-serial port "workcell.mux", or vsock under Firecracker).
# Its settings come from the kernel command line (workcell.*=...): nothing secret is there (the token comes over
# the channel). Any failure powers the VM off, so the host sees the VM exit instead of a hang.
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "workcell-init: $*" >&2
  sleep 1
  poweroff -f
}

cmdline="$(cat /proc/cmdline)"
param() {
  for word in $cmdline; do
    case "$word" in "workcell.$1="*) echo "${word#*=}"; return ;; esac
  done
  echo "$2"
}
mmio=""
for word in $cmdline; do
  case "$word" in virtio_mmio.device=*) mmio="$mmio device=${word#virtio_mmio.device=}" ;; esac
done
# Each module after those it depends on (initramfs.ts put them in that order); virtio_mmio takes the devices QEMU put
# on the command line (a module does not see its kernel parameters unless given them).
for module in $(cat /modules.order); do
  args=""
  [ "$module" = virtio_mmio ] && args="$mmio"
  insmod "/lib/modules/$module.ko" $args || echo "workcell-init: cannot load the module $module" >&2
done
# stdin is not a terminal: tini would try to make it the foreground terminal and fail. stdout and stderr stay on the
# console (the serial port ttyS0, whose driver is built in).
exec </dev/null

# The disks by label: the order of virtio-mmio devices is not the order they were given to the VMM.
for i in $(seq 500); do
  root_disk="$(findfs LABEL=workcell-root 2>/dev/null)" && workspace_disk="$(findfs LABEL=workcell-ws 2>/dev/null)" && break
  sleep 0.01
done
[ -b "$root_disk" ] || fail "no rootfs disk (label workcell-root); block devices: $(ls /sys/block 2>&1 | tr '\n' ' '); modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
[ -b "$workspace_disk" ] || fail "no workspace disk (label workcell-ws)"

tmp_mb="$(param tmp 1024)"
mkdir -p /lower /rw /newroot
mount -t ext4 -o ro,noatime "$root_disk" /lower || fail "cannot mount the rootfs disk"
mount -t tmpfs -o size=64m,mode=0755 rw /rw && mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "cannot mount the overlay"
mount -t ext4 -o nosuid,nodev,noatime "$workspace_disk" /newroot/workspace || fail "cannot mount the workspace disk"
rmdir /newroot/workspace/lost+found 2>/dev/null
mount -t tmpfs -o "nosuid,nodev,size=${tmp_mb}m,mode=1777" tmp /newroot/tmp
mount -t tmpfs -o "nosuid,nodev,size=${tmp_mb}m,uid=1000,gid=1000,mode=0755" home /newroot/home/agent
mount -t tmpfs -o nosuid,nodev,size=64m,mode=0755 run /newroot/run
mkdir -p /newroot/run/workcell /newroot/run/workcell-bin /newroot/dev
chown 1000:1000 /newroot/run/workcell && chmod 0700 /newroot/run/workcell
cp /workcell/sandboxd.mjs /workcell/guest-agent.mjs /newroot/run/workcell-bin/
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail "cannot mount cgroup2"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o nosuid,nodev,size=64m,mode=1777 shm /newroot/dev/shm
hostname workcell
ip link set lo up

label="$(param label sb-microvm)"
job="$(param job job)"
carrier="$(param carrier name=workcell.mux)"
proxy=""
[ "$(param proxy 0)" = 1 ] && proxy="--proxy-socket /run/workcell/proxy.sock"
sandboxd_proxy=""
[ "$(param proxy 0)" = 1 ] && sandboxd_proxy="--proxy-socket /run/workcell/proxy.sock --proxy-port 3128"
jupyter_start=""
[ -n "$(param jupyter_start_ms '')" ] && jupyter_start="--jupyter-start-timeout-ms $(param jupyter_start_ms '')"

export HOME=/home/agent USER=agent LOGNAME=agent LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd /newroot/workspace 2>/dev/null
exec switch_root /newroot /usr/bin/tini -s -- /usr/local/bin/node /run/workcell-bin/guest-agent.mjs \
  --carrier "$carrier" --sandboxd-socket /run/workcell/sandboxd.sock $proxy \
  --cgroup sandbox --memory-mb "$(param memory 1024)" --pids "$(param pids 512)" --cpus "$(param cpus 1)" --run-as 1000:1000 --seccomp \
  -- /usr/local/bin/node /run/workcell-bin/sandboxd.mjs --socket /run/workcell/sandboxd.sock --workspace /workspace \
  --label "$label" $sandboxd_proxy $jupyter_start --jupyter-base-url "/jobs/$job/jupyter/"
