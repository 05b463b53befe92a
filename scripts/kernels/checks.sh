#!/usr/bin/env bash
# The checks `make test-kernels` runs on one kernel: inside a virtme-ng guest
# (scripts/test-kernels.sh boots it), or on the running kernel for "host".
#
#   scripts/kernels/checks.sh OUTDIR
#
# Environment (set by test-kernels.sh):
#   KT_MODE          vm | host
#   KT_TREE          the source tree (the guest sees the host's root fs)
#   KT_DAEMON_SECS   length of the all-tuner daemon run (20)
#   KT_TEST_SPECS    test binaries to run, "name=path" separated by spaces
#   KT_TEST_TIMEOUT  seconds per test binary
#   KT_SKIP          tests left out, "binary:test_name ..." (libtest --skip)
#   KT_BIN, KT_PLUGINS  the daemon and the staged tuners (default: the tree's)
#
# Writes into OUTDIR (a --rwdir in the guest): env.txt, support.txt (+ .rc),
# daemon.log (+ daemon.rc), test-<name>.log (+ .rc, .secs), and done.
set -uo pipefail

out=${1:?usage: checks.sh OUTDIR}
# The settings, when test-kernels.sh passed them in a file: the guest's
# kernel command line (which carries the command) is limited to 2048 bytes
# on x86, and a longer one stops the boot before the kernel prints a line.
# shellcheck disable=SC1091
[ -f "$out/settings.sh" ] && . "$out/settings.sh"
mode=${KT_MODE:-vm}
tree=${KT_TREE:-$(cd "$(dirname "$0")/../.." && pwd)}
secs=${KT_DAEMON_SECS:-20}
test_timeout=${KT_TEST_TIMEOUT:-900}
bin=${KT_BIN:-$tree/target/release/bpftune}
plugins=${KT_PLUGINS:-$tree/target/plugins}
mkdir -p "$out"
cd "$tree" || exit 1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

now() { date +%s; }

# Host mode shares the machine with `make test`: hold the integration
# tests' lock (/run/bpftune-tests/lock) while the daemon runs, and keep the
# host's rollback journal as it was.
lock_tests() {
    [ "$mode" = host ] || return 0
    mkdir -p /run/bpftune-tests
    exec 9>/run/bpftune-tests/lock
    flock -w 1800 9 || echo "harness: test lock busy for 30 min; running anyway" >&2
}
unlock_tests() {
    [ "$mode" = host ] || return 0
    flock -u 9; exec 9>&-
}

{
    echo "mode: $mode"
    echo "uname: $(uname -a)"
    echo "cpus: $(nproc)"
    [ -e /sys/kernel/btf/vmlinux ] && echo "btf: yes" || echo "btf: no"
    if [ "$mode" = vm ]; then
        # virtme-ng mounts cgroup2 and tracefs; bpffs is not mounted.
        grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || grep -q ' cgroup2 ' /proc/mounts \
            || mount -t cgroup2 none /sys/fs/cgroup
        grep -q ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf
        grep -q ' /sys/kernel/tracing ' /proc/mounts || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
        grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
        # The tests build veth pairs and may use these; autoload works too,
        # loading them here only records what is available.
        for m in veth ifb sch_htb sch_tbf nf_tables; do
            if modprobe "$m" 2>/dev/null; then echo "module $m: loaded"; else echo "module $m: not available"; fi
        done
        ip link set lo up 2>/dev/null
    fi
    echo "mounts:"; grep -E ' (cgroup2|bpf|tracefs|debugfs) ' /proc/mounts | sed 's/^/  /'
    echo "memlock: $(ulimit -l)"
    echo "congestion control: $(cat /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null)"
    for f in /proc/sys/net/core/flow_limit_cpu_bitmap /proc/sys/net/ipv6/route/max_size; do
        [ -e "$f" ] && echo "$f: present" || echo "$f: absent"
    done
} > "$out/env.txt" 2>&1

echo "checks_start=$(now) uptime=$(cut -d' ' -f1 /proc/uptime)" > "$out/times"

# (a) bpftune -S
t0=$(now)
timeout 300 "$bin" -S --system-libdir "$plugins" -l "$plugins" > "$out/support.txt" 2>&1
echo $? > "$out/support.rc"
echo $(( $(now) - t0 )) > "$out/support.secs"

# (b) the daemon with every staged tuner for KT_DAEMON_SECS, then SIGTERM.
daemon_run() {
    local extra=() journal=/var/lib/bpftune/journal saved=
    if [ "$mode" = host ]; then
        # Roll back what it changed; keep the host's journal as it was.
        extra=(-R)
        if [ -f "$journal" ]; then saved=$(mktemp); cp -a "$journal" "$saved"; fi
    fi
    "$bin" -s -d --system-libdir "$plugins" -l "$plugins" "${extra[@]}" > "$out/daemon.log" 2>&1 &
    local pid=$! alive=yes rc
    sleep "$secs"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "harness: still running 60 s after SIGTERM; SIGKILL" >> "$out/daemon.log"
            kill -KILL "$pid"
        fi
    else
        alive=no
    fi
    wait "$pid"; rc=$?
    echo "$rc $alive" > "$out/daemon.rc"
    if [ "$mode" = host ]; then
        if [ -n "$saved" ]; then cp -a "$saved" "$journal"; rm -f "$saved"; else rm -f "$journal"; fi
    fi
}
t0=$(now)
lock_tests
daemon_run
unlock_tests
echo $(( $(now) - t0 )) > "$out/daemon.secs"
echo "daemon_end=$(now)" >> "$out/times"

# (c) integration test binaries, one at a time, each bounded. They take the
# test lock themselves.
for spec in ${KT_TEST_SPECS:-}; do
    name=${spec%%=*}; path=${spec#*=}
    skips=()
    for s in ${KT_SKIP:-}; do
        [ "${s%%:*}" = "$name" ] && skips+=(--skip "${s#*:}")
    done
    t0=$(now)
    timeout -k 30 "$test_timeout" "$path" --test-threads=1 --show-output "${skips[@]}" > "$out/test-$name.log" 2>&1
    echo $? > "$out/test-$name.rc"
    echo $(( $(now) - t0 )) > "$out/test-$name.secs"
done

# Leftovers a killed test may leave behind (guest only: on the host the
# tests' own guards clean up, and other runs may be using these).
if [ "$mode" = vm ]; then
    dmesg > "$out/dmesg.txt" 2>&1
fi
date +%s > "$out/done"
