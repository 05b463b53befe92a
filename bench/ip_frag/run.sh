#!/bin/bash
# bench/ip_frag/run.sh: what the ip_frag tuner costs.
#
# 1. BPF: with the daemon running only ip_frag, the run_cnt and run_time_ns
#    (the tuner's only program is a task iterator run once per tick, so its
#    count is processes x ticks whatever the traffic: compare each phase
#    with the idle one)
#    (kernel.bpf_stats_enabled, restored afterwards) of every BPF program
#    the daemon holds (found through the prog_id lines of its fds'
#    fdinfo, so nothing is missed whatever its name) and of any program
#    named bpftune_ip_frag* on the machine, under TCP bulk, non-fragmented
#    UDP and fragmented UDP between two namespaces made here; plus the
#    daemon's CPU time in each phase.
#    CPU time is the usage_usec of a cgroup v2 made here for the daemon
#    alone: it counts the tuner's short-lived helper threads too, which the
#    per-thread schedstat of lib.sh's daemon_cpu_ms misses once they exit.
# 2. Detection: the time from the start of a fragment flood into a namespace
#    with small thresholds (8192/4096) to the tuner's change line.
# 3. Userspace: the daemon's CPU time per second with NS_EXTRA idle
#    namespaces (ip netns add) against none, alternating ROUNDS times.
#
# Usage (root): bench/ip_frag/run.sh [BUILD_DIR]   (default target/release)
# Knobs: SECS (3), NS_EXTRA (200), IDLE_SECS (20), ROUNDS (3).
# Needs: bpftune, libip_frag_tuner.so in BUILD_DIR; bpftool, jq, iperf3,
# python3, ethtool.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require bpftool jq iperf3 python3 ethtool ip

SECS=${SECS:-3}
NS_EXTRA=${NS_EXTRA:-200}
IDLE_SECS=${IDLE_SECS:-20}
ROUNDS=${ROUNDS:-3}
TAG=ipfb$$
TX=$TAG-tx
RX=$TAG-rx
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)

bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"
bench_on_exit "extra_ns_del"
bench_plugin "$PLUG" ip_frag
bench_netns_pair "$TAG" 10.251.7
ip netns exec "$TX" ethtool -K "${TAG}a" gro off tso off gso off >/dev/null
ip netns exec "$RX" ethtool -K "${TAG}b" gro off tso off gso off >/dev/null

# ip_frag loads no BPF program, so lib.sh's daemon_start (which waits for
# one) does not fit: wait until the daemon's query socket lists the tuner.
start_daemon() {
	"$BUILD/bpftune" -s --system-libdir "$PLUG" -l "$PLUG" "$@" >"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 300); do
		"$BUILD/bpftune" -q tuners 2>/dev/null | grep -qE 'ip_frag +active' && { sleep "$SETTLE_SECS"; return 0; }
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "daemon did not start:" >&2
	grep -v 'libbpf:' "$WORK/daemon.log" >&2 || true
	exit 1
}

# "id name run_cnt run_time_ns" for each BPF program the daemon holds (a
# program fd or a link to it) and each program named bpftune_ip_frag*.
progs() {
	local ids
	ids=$( (grep -h '^prog_id:' /proc/"$DAEMON_PID"/fdinfo/* 2>/dev/null || true) | awk '{print $2}' | sort -un | paste -sd, -)
	bpftool prog show -j | jq -r --arg ids "${ids:-}" \
		'($ids | split(",") | map(select(. != "") | tonumber)) as $mine
		 | .[] | select((.id as $i | $mine | index($i)) or (.name // "" | startswith("bpftune_ip_frag")))
		 | "\(.id) \(.name) \(.run_cnt // 0) \(.run_time_ns // 0)"'
}

# udp SIZE: send UDP datagrams of SIZE bytes for SECS seconds, PMTU discovery off.
udp() {
	ip netns exec "$TX" python3 - "$1" "$SECS" <<'PY'
import socket, sys, time
size, secs = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
buf, end, n = b"x" * size, time.time() + secs, 0
while time.time() < end:
    for _ in range(100):
        try:
            s.sendto(buf, ("10.251.7.2", 9)); n += 1
        except OSError:
            pass
    time.sleep(0.001)
print(n)
PY
}

tcp() {
	ip netns exec "$RX" iperf3 -s -1 -D -B 10.251.7.2 >/dev/null
	sleep 0.3
	ip netns exec "$TX" iperf3 -c 10.251.7.2 -t "$SECS" -J | jq -r '.end.sum_received.bytes'
}

frag_mem() { ip netns exec "$RX" awk '/^FRAG:/ {print $5}' /proc/net/sockstat; }

extra_ns_del() {
	local i
	for i in $(seq "$NS_EXTRA"); do ip netns del "$TAG-x$i" 2>/dev/null || true; done
}

# A cgroup v2 for the daemon alone (removed at exit, after the daemon).
CG_ROOT=$(awk '$3 == "cgroup2" && $2 !~ /bpftune/ {print $2; exit}' /proc/self/mounts)
[ -n "$CG_ROOT" ] || { echo "no cgroup2 mount" >&2; exit 1; }
CG=$CG_ROOT/bpftune-bench-ipfrag-$$
mkdir "$CG"
bench_on_exit "rmdir $CG 2>/dev/null"
cg_cpu_ms() { awk '$1 == "usage_usec" {printf "%.1f\n", $2 / 1000}' "$CG/cpu.stat"; }
# CPU ms per s over $1 seconds.
cg_idle() {
	local c0
	c0=$(cg_cpu_ms)
	sleep "$1"
	awk -v a="$c0" -v b="$(cg_cpu_ms)" -v s="$1" 'BEGIN {printf "%.1f %.3f\n", b - a, (b - a) / s}'
}

echo "kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'), SECS=$SECS NS_EXTRA=$NS_EXTRA IDLE_SECS=$IDLE_SECS ROUNDS=$ROUNDS"
start_daemon
echo "$DAEMON_PID" >"$CG/cgroup.procs"
sysctl -q -w kernel.bpf_stats_enabled=1

echo
echo "## 1. BPF programs under traffic (daemon running ip_frag only)"
echo
printf '| traffic (%s s) | sent | BPF programs held by the daemon or named bpftune_ip_frag* | run_cnt | run_time_ns | daemon CPU ms | rx FRAG memory after |\n|---|---|---|---|---|---|---|\n' "$SECS"
for phase in "idle (no traffic)" "tcp bulk (no fragments)" "udp 1000 B (no fragments)" "udp 8192 B (6 fragments each)"; do
	progs >"$WORK/p0"
	cpu0=$(cg_cpu_ms)
	case $phase in
	idle*)
		sleep "$SECS"
		sent=0
		;;
	tcp*) sent="$(tcp) bytes" ;;
	"udp 1000"*) sent="$(udp 1000) datagrams" ;;
	*) sent="$(udp 8192) datagrams" ;;
	esac
	cpu1=$(cg_cpu_ms)
	progs >"$WORK/p1"
	names=$(awk '{print $2}' "$WORK/p1" | sort -u | paste -sd' ' -)
	# Sum of the per-program deltas (programs present at both ends).
	read -r dc dt < <(join "$WORK/p0" "$WORK/p1" 2>/dev/null | awk '{c += $6 - $3; t += $7 - $4} END {print c + 0, t + 0}')
	printf '| %s | %s | %s | %d | %d | %.1f | %s |\n' "$phase" "$sent" "${names:-none}" "$dc" "$dt" \
		"$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print b - a}')" "$(frag_mem)"
done

echo
echo "## 2. Detection: fragment flood into $RX with high/low thresholds 8192/4096"
echo
ip netns exec "$RX" sysctl -q -w net.ipv4.ipfrag_low_thresh=4096
ip netns exec "$RX" sysctl -q -w net.ipv4.ipfrag_high_thresh=8192
# Let the queues of the previous phase time out (ipfrag_time, 30 s), so the
# flood starts from an empty reassembly memory.
for _ in $(seq 40); do [ "$(frag_mem)" = 0 ] && break; sleep 1; done
t0=$(date +%s.%N)
SECS=15 udp 8192 >/dev/null &
sender=$!
seen=
for _ in $(seq 150); do
	if grep -q 'change net.ipv4.ipfrag_high_thresh from (8192)' "$WORK/daemon.log"; then
		seen=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
		break
	fi
	sleep 0.1
done
kill "$sender" 2>/dev/null || true
wait "$sender" 2>/dev/null || true
echo "first change ${seen:-NOT SEEN} s after the flood started (polled every 0.1 s):"
grep -E 'Scenario|Due to' "$WORK/daemon.log" | sed 's/^/    /' | head -4

echo
echo "## 3. Daemon CPU with $NS_EXTRA idle namespaces, alternating with none ($ROUNDS rounds, $IDLE_SECS s each)"
echo
printf '| round | namespaces besides the bench pair | daemon CPU ms | ms per s |\n|---|---|---|---|\n'
for r in $(seq "$ROUNDS"); do
	read -r ms per < <(cg_idle "$IDLE_SECS")
	printf '| %d | 0 | %s | %s |\n' "$r" "$ms" "$per"
	for i in $(seq "$NS_EXTRA"); do ip netns add "$TAG-x$i"; done
	# inotify finds them at the next tick; then every tick reads those due.
	sleep 6
	read -r ms per < <(cg_idle "$IDLE_SECS")
	printf '| %d | %d | %s | %s |\n' "$r" "$NS_EXTRA" "$ms" "$per"
	extra_ns_del
	sleep 6
done
echo
echo "BPF programs the daemon holds at the end: $(progs | wc -l)"
