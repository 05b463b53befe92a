#!/bin/bash
# bench/tcp_buffer/run.sh: what the tcp_buffer tuner costs.
#
#  1. Bulk TCP throughput (iperf3) over a veth pair between two namespaces
#     and over loopback inside a namespace, without and with the daemon
#     running, interleaved (without, with, without, ...), medians and ratio.
#  2. Average run time per invocation of each tcp_buffer BPF program
#     (kernel.bpf_stats_enabled=1, run_time_ns / run_cnt from bpftool).
#  3. Daemon RSS and CPU time over 60 s idle with all built tuners loaded.
#
# Root only. Traffic stays inside namespaces this script creates. Every
# sysctl it changes is restored on exit. Holds the integration-test lock so
# it never runs alongside a test that starts a daemon.
#
# Usage: bench/tcp_buffer/run.sh [BUILD_DIR]   (default: target/release)
#   ROUNDS=5 SECS=5 IDLE_SECS=60 to change the sizes; DAEMON_ARGS=--advise
#   measures the daemon's overhead without the effect of its changes.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-${BPFTUNE_BUILD_DIR:-$ROOT/target/release}}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
IDLE_SECS=${IDLE_SECS:-60}
OUT=${OUT:-$HERE/RESULTS.md}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in iperf3 bpftool jq ip; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$BUILD/bpftune" ] || { echo "no $BUILD/bpftune: cargo build --release first" >&2; exit 1; }

if [ -z "${BENCH_LOCKED:-}" ]; then
	mkdir -p -m 0755 /run/bpftune-tests
	exec env BENCH_LOCKED=1 flock /run/bpftune-tests/lock "$0" "$@"
fi

TAG=tbb$$
TX=$TAG-tx
RX=$TAG-rx
PLUG=/run/bpftune-bench-$$
DAEMON_PID=
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)
LOGDIR=$(mktemp -d)

cleanup() {
	[ -n "$DAEMON_PID" ] && kill -INT "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
	sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED" || true
	ip netns pids "$RX" 2>/dev/null | xargs -r kill 2>/dev/null || true
	ip netns del "$TX" 2>/dev/null || true
	ip netns del "$RX" 2>/dev/null || true
	rm -rf "$PLUG" "$LOGDIR"
}
trap cleanup EXIT

# Plugins in a root-owned 0755 directory (the daemon refuses others).
install -d -m 0755 "$PLUG" "$PLUG/tcp" "$PLUG/all"
install -m 0644 "$BUILD/libtcp_buffer_tuner.so" "$PLUG/tcp/tcp_buffer_tuner.so"
install -m 0644 "$BUILD/libsysctl_tuner.so" "$PLUG/tcp/sysctl_tuner.so"
for so in "$BUILD"/lib*_tuner.so; do
	n=$(basename "$so" .so); n=${n#lib}
	install -m 0644 "$so" "$PLUG/all/$n.so"
done

ip netns add "$TX"
ip netns add "$RX"
ip link add "${TAG}a" type veth peer name "${TAG}b"
ip link set "${TAG}a" netns "$TX"
ip link set "${TAG}b" netns "$RX"
ip -n "$TX" addr add 10.252.9.1/24 dev "${TAG}a"
ip -n "$RX" addr add 10.252.9.2/24 dev "${TAG}b"
for ns in "$TX" "$RX"; do ip -n "$ns" link set lo up; done
ip -n "$TX" link set "${TAG}a" up
ip -n "$RX" link set "${TAG}b" up
ip netns exec "$RX" iperf3 -s -D -B 10.252.9.2 -p 5201
ip netns exec "$RX" iperf3 -s -D -B 127.0.0.1 -p 5202
sleep 1

# Namespace buffer settings as created; reset before every run so a run
# "with" the tuner never leaves bigger buffers for the next run "without".
RMEM0=$(ip netns exec "$RX" sysctl -n net.ipv4.tcp_rmem)
WMEM0=$(ip netns exec "$TX" sysctl -n net.ipv4.tcp_wmem)
reset_ns() {
	ip netns exec "$RX" sysctl -q -w net.ipv4.tcp_rmem="$RMEM0"
	ip netns exec "$TX" sysctl -q -w net.ipv4.tcp_wmem="$WMEM0"
	ip netns exec "$RX" sysctl -q -w net.ipv4.tcp_wmem="$WMEM0"
	ip netns exec "$RX" sysctl -q -w net.ipv4.tcp_rmem="$RMEM0"
}

start_daemon() { # $1 = plugin dir
	# shellcheck disable=SC2086 # DAEMON_ARGS is a list of flags
	"$BUILD/bpftune" -s --system-libdir "$1" -l "$1" ${DAEMON_ARGS:-} >"$LOGDIR/daemon.log" 2>&1 &
	DAEMON_PID=$!
	# Ready once tcp_buffer's programs are loaded (the daemon logs that
	# only with -d, which would add per-event logging to the measurement).
	for _ in $(seq 300); do
		bpftool prog show 2>/dev/null | grep -q 'bpftune_rcv' && { sleep 0.5; return 0; }
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "daemon did not start:" >&2; cat "$LOGDIR/daemon.log" >&2; exit 1
}
stop_daemon() {
	kill -INT "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=
}

# One iperf3 run; prints Gbit/s received.
run_iperf() { # $1 = netns of the client, $2 = server addr, $3 = port
	ip netns exec "$1" iperf3 -c "$2" -p "$3" -t "$SECS" -J |
		jq '.end.sum_received.bits_per_second / 1e9'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

declare -A RES
for path in veth loopback; do
	if [ $path = veth ]; then cli=$TX; addr=10.252.9.2; port=5201; else cli=$RX; addr=127.0.0.1; port=5202; fi
	: >"$LOGDIR/$path.without"; : >"$LOGDIR/$path.with"
	for r in $(seq "$ROUNDS"); do
		reset_ns; run_iperf "$cli" $addr $port >>"$LOGDIR/$path.without"
		reset_ns; start_daemon "$PLUG/tcp"; run_iperf "$cli" $addr $port >>"$LOGDIR/$path.with"; stop_daemon
	done
	reset_ns; run_iperf "$cli" $addr $port >>"$LOGDIR/$path.without"
	RES[$path.without]=$(median <"$LOGDIR/$path.without")
	RES[$path.with]=$(median <"$LOGDIR/$path.with")
	RES[$path.ratio]=$(awk -v a="${RES[$path.with]}" -v b="${RES[$path.without]}" 'BEGIN {printf "%.3f", a/b}')
	RES[$path.raw_without]=$(tr '\n' ' ' <"$LOGDIR/$path.without")
	RES[$path.raw_with]=$(tr '\n' ' ' <"$LOGDIR/$path.with")
done

# Per-program cost: stats on during one veth and one loopback run.
reset_ns
start_daemon "$PLUG/tcp"
sysctl -q -w kernel.bpf_stats_enabled=1
run_iperf "$TX" 10.252.9.2 5201 >/dev/null
run_iperf "$RX" 127.0.0.1 5202 >/dev/null
sleep 1
PROGS=$(bpftool prog show -j | jq -r '.[] | select(.name | startswith("bpftune_")) |
	select(.run_cnt != null and .run_cnt > 0) |
	"| \(.name) | \(.type) | \(.run_cnt) | \(.run_time_ns) | \((.run_time_ns / .run_cnt) | floor) |"')
sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
stop_daemon

# Idle footprint with every built tuner.
start_daemon "$PLUG/all"
sleep 2
clk=$(getconf CLK_TCK)
cpu0=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
sleep "$IDLE_SECS"
cpu1=$(awk '{print $14 + $15}' "/proc/$DAEMON_PID/stat")
RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status")
CPU_MS=$(( (cpu1 - cpu0) * 1000 / clk ))
TUNERS=$(cd "$PLUG/all" && ls *_tuner.so | sed 's/_tuner.so//' | tr '\n' ' ')
stop_daemon

{
	echo "# tcp_buffer benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`$0\`"
	echo "(build: \`$BUILD\`; ROUNDS=$ROUNDS SECS=$SECS IDLE_SECS=$IDLE_SECS)."
	echo
	echo "Reproduce (as root, from the repository root):"
	echo
	echo '    cargo build --release -p bpftune-daemon -p sysctl_tuner -p tcp_buffer_tuner -p tcp_conn_tuner'
	echo '    bench/tcp_buffer/run.sh target/release        # ROUNDS=, SECS=, IDLE_SECS= to resize'
	echo
	echo "This machine's throughput drifts by up to 30 % from minute to minute and is shared with"
	echo "other work: read the ratio together with the spread of the individual runs."
	echo
	echo "## Bulk TCP throughput (iperf3, Gbit/s received), interleaved without/with the daemon"
	echo
	echo "| path | median without | median with | ratio with/without (target >= 0.99) | runs without | runs with |"
	echo "|---|---|---|---|---|---|"
	for p in veth loopback; do
		echo "| $p | ${RES[$p.without]} | ${RES[$p.with]} | ${RES[$p.ratio]} | ${RES[$p.raw_without]}| ${RES[$p.raw_with]}|"
	done
	echo
	echo "The namespaces' tcp_rmem/tcp_wmem are reset before every run, so runs with the daemon"
	echo "measure its overhead (and whatever its own changes bring within one run), not changes"
	echo "left over from an earlier run."
	echo
	echo "## BPF run time per invocation (kernel.bpf_stats_enabled=1, one veth + one loopback run; target < 150 ns)"
	echo
	echo "| program | type | run_cnt | run_time_ns | ns per run |"
	echo "|---|---|---|---|---|"
	echo "$PROGS"
	echo
	echo "## Daemon idle footprint over ${IDLE_SECS} s (tuners: ${TUNERS})"
	echo
	echo "| RSS (KiB) | CPU time (ms) over ${IDLE_SECS} s |"
	echo "|---|---|"
	echo "| $RSS | $CPU_MS |"
} >"$OUT"
cat "$OUT"
