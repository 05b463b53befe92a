#!/bin/bash
# bench/tcp_buffer/run.sh: what the tcp_buffer tuner costs.
#
#  1. Bulk TCP throughput (iperf3) over a veth pair between two namespaces
#     and over loopback inside a namespace, without and with the daemon
#     running, interleaved (without, with, without, ...), client and server
#     pinned to one CPU each; medians and paired ratios; the daemon's own CPU
#     time during each run and the changes it made.
#  2. Average run time per invocation of each tcp_buffer BPF program
#     (kernel.bpf_stats_enabled=1, run_time_ns / run_cnt from bpftool), and
#     their share of the machine's CPU time during a transfer.
#  3. Daemon RSS and CPU time over 60 s idle with all the tuners loaded.
#
# Root only. Traffic stays inside namespaces this script creates. Every
# sysctl it changes is restored on exit (see ../lib.sh for the rest).
#
# Usage: bench/tcp_buffer/run.sh [BUILD_DIR]   (default: target/release)
#   ROUNDS=15 SECS=4 IDLE_SECS=60 AFFINITY=0,1 to change the sizes and CPUs;
#   OUT= for the report; DAEMON_ARGS=--advise
#   measures the daemon's overhead without the effect of its changes.
HERE=$(cd "$(dirname "$0")" && pwd)
# A daemon runs for months: measure its steady state, not its start-up.
SETTLE_SECS=${SETTLE_SECS:-3}
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require iperf3 bpftool jq ip

ROUNDS=${ROUNDS:-15}
SECS=${SECS:-4}
IDLE_SECS=${IDLE_SECS:-60}
AFFINITY=${AFFINITY:-0,1}
OUT=${OUT:-$HERE/RESULTS.md}
TAG=tbb$$
TX=$TAG-tx
RX=$TAG-rx
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)

bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"
bench_plugin "$PLUG/tcp" tcp_buffer sysctl
# The project's tuners (not the test fixtures built alongside them).
bench_plugin "$PLUG/all" sysctl tcp_buffer tcp_conn netns ip_frag udp_buffer

bench_netns_pair "$TAG" 10.252.9
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

# One iperf3 run, client and server pinned (AFFINITY=client,server CPUs);
# prints Gbit/s received.
run_iperf() { # $1 = netns of the client, $2 = server addr, $3 = port
	ip netns exec "$1" iperf3 -c "$2" -p "$3" -t "$SECS" -A "$AFFINITY" -J |
		jq '.end.sum_received.bits_per_second / 1e9'
}

# CPU time (ms) the daemon's threads have run so far (schedstat: ns on CPU).

declare -A RES
for path in veth loopback; do
	if [ $path = veth ]; then cli=$TX; addr=10.252.9.2; port=5201; else cli=$RX; addr=127.0.0.1; port=5202; fi
	: >"$WORK/$path.without"
	: >"$WORK/$path.with"
	: >"$WORK/$path.daemon_ms"
	for _ in $(seq "$ROUNDS"); do
		reset_ns
		run_iperf "$cli" $addr $port >>"$WORK/$path.without"
		reset_ns
		# shellcheck disable=SC2086 # DAEMON_ARGS is a list of flags
		daemon_start "$PLUG/tcp" bpftune_rcv ${DAEMON_ARGS:-}
		c0=$(daemon_cpu_ms)
		run_iperf "$cli" $addr $port >>"$WORK/$path.with"
		c1=$(daemon_cpu_ms)
		awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}' >>"$WORK/$path.daemon_ms"
		grep -h 'Scenario' "$WORK/daemon.log" >>"$WORK/$path.changes" || true
		daemon_stop
	done
	reset_ns
	run_iperf "$cli" $addr $port >>"$WORK/$path.without"
	RES[$path.without]=$(median <"$WORK/$path.without")
	RES[$path.with]=$(median <"$WORK/$path.with")
	RES[$path.ratio]=$(awk -v a="${RES[$path.with]}" -v b="${RES[$path.without]}" 'BEGIN {printf "%.3f", a/b}')
	RES[$path.paired]=$(paired "$WORK/$path.without" "$WORK/$path.with" | median)
	RES[$path.raw_without]=$(awk '{printf "%.2f ", $1}' "$WORK/$path.without")
	RES[$path.raw_with]=$(awk '{printf "%.2f ", $1}' "$WORK/$path.with")
	RES[$path.daemon_ms]=$(median <"$WORK/$path.daemon_ms")
	RES[$path.changes]=$(sed 's/^.*Scenario/Scenario/' "$WORK/$path.changes" 2>/dev/null | sort | uniq -c | sed 's/^ */    /' || true)
done

# Per-program cost: stats on during one veth and one loopback run.
reset_ns
daemon_start "$PLUG/tcp" bpftune_rcv
sysctl -q -w kernel.bpf_stats_enabled=1
run_iperf "$TX" 10.252.9.2 5201 >/dev/null
run_iperf "$RX" 127.0.0.1 5202 >/dev/null
sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
PROGS=$(bpftool prog show -j | jq -r '.[] | select(.name | startswith("bpftune_")) |
	select(.run_cnt != null and .run_cnt > 0) |
	"| \(.name) | \(.type) | \(.run_cnt) | \(.run_time_ns) | \((.run_time_ns / .run_cnt) | floor) |"')
BPF_NS=$(bpftool prog show -j | jq '[.[] | select(.name | startswith("bpftune_")) | .run_time_ns // 0] | add')
BPF_SHARE=$(awk -v ns="$BPF_NS" -v s="$SECS" -v n="$(nproc)" 'BEGIN {printf "%.2f", ns / (2 * s * 1e9 * n) * 100}')
daemon_stop

# Idle footprint with every built tuner.
daemon_start "$PLUG/all" bpftune_
sleep 2
cpu0=$(daemon_cpu_ms)
sleep "$IDLE_SECS"
cpu1=$(daemon_cpu_ms)
RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status")
CPU_MS=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print b - a}')
TUNERS=$(cd "$PLUG/all" && ls ./*_tuner.so | sed 's|^./||; s/_tuner.so//' | tr '\n' ' ')
daemon_stop

{
	echo "# tcp_buffer benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`bench/tcp_buffer/run.sh\`"
	echo "(ROUNDS=$ROUNDS SECS=$SECS IDLE_SECS=$IDLE_SECS AFFINITY=$AFFINITY SETTLE_SECS=$SETTLE_SECS DAEMON_ARGS=${DAEMON_ARGS:-}; each run with the daemon starts SETTLE_SECS after it loaded its programs)."
	echo
	echo "Reproduce (as root, from the repository root):"
	echo
	echo '    cargo build --release --workspace'
	echo '    bench/tcp_buffer/run.sh target/release        # ROUNDS=, SECS=, IDLE_SECS= to resize'
	echo
	echo "## Bulk TCP throughput (iperf3, Gbit/s received), interleaved without/with the daemon"
	echo
	echo "One iperf3 flow per run, client and server pinned to CPUs $AFFINITY. The paired ratio"
	echo "divides each run with the daemon by the mean of the runs without it just before and"
	echo "after (this machine's throughput drifts from minute to minute); its median is the"
	echo "figure to read."
	echo
	echo "| path | median without | median with | ratio of medians | median paired ratio (target >= 0.99) | daemon CPU ms per run (median) |"
	echo "|---|---|---|---|---|---|"
	for p in veth loopback; do
		echo "| $p | ${RES[$p.without]} | ${RES[$p.with]} | ${RES[$p.ratio]} | ${RES[$p.paired]} | ${RES[$p.daemon_ms]} |"
	done
	echo
	echo "Runs (Gbit/s, in order):"
	echo
	for p in veth loopback; do
		echo "* $p without: ${RES[$p.raw_without]}"
		echo "* $p with: ${RES[$p.raw_with]}"
	done
	echo
	echo "The namespaces' tcp_rmem/tcp_wmem are reset before every run, so runs with the daemon"
	echo "measure its overhead and the effect of its own changes within one run, not changes"
	echo "left over from an earlier run. Changes the daemon made during the runs with it (count):"
	echo
	for p in veth loopback; do
		echo "* $p:"
		echo
		if [ -n "${RES[$p.changes]}" ]; then echo "${RES[$p.changes]}"; else echo "    none"; fi
		echo
	done
	echo "## BPF run time per invocation (kernel.bpf_stats_enabled=1, one veth + one loopback run; target < 150 ns)"
	echo
	echo "| program | type | run_cnt | run_time_ns | ns per run |"
	echo "|---|---|---|---|---|"
	echo "$PROGS"
	echo
	echo "All the daemon's BPF programs together ran for ${BPF_SHARE} % of the machine's CPU time"
	echo "during those two runs (run_time_ns / (2 x ${SECS} s x $(nproc) CPUs); bpf_stats adds two"
	echo "clock reads per invocation, so this is an upper bound)."
	echo
	echo "## Daemon idle footprint over ${IDLE_SECS} s (tuners: ${TUNERS})"
	echo
	echo "| RSS (KiB) | CPU time (ms) over ${IDLE_SECS} s |"
	echo "|---|---|"
	echo "| $RSS | $CPU_MS |"
} >"$OUT"
cat "$OUT"
