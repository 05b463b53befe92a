#!/bin/bash
# bench/tcp_buffer/run.sh: what the tcp_buffer tuner costs.
#
#  1. Bulk TCP throughput (iperf3) over a veth pair between two namespaces
#     and over loopback inside a namespace, without and with the daemon
#     running, interleaved (without, with, without, ...), client and server
#     pinned to one CPU each; medians and paired ratios; the daemon's own CPU
#     time during each run and the changes it made.
#  2. The daemon's BPF programs' share of the CPU during a bulk transfer,
#     per path (veth, loopback) and per program: kernel.bpf_stats_enabled=1
#     only during STATS_ROUNDS transfers per path (alternating paths, a
#     fresh daemon for each, as in 1.), run_time_ns and run_cnt from bpftool
#     (difference before/after each transfer) divided by the transfer's
#     elapsed time x CPUs (client and server are pinned one per CPU, so
#     that is the CPU time of both ends), and by the CPU time the machine
#     was actually busy (/proc/stat) as a second, stricter denominator.
#  3. Daemon RSS and CPU time over 60 s idle with all the tuners loaded.
#
# Root only. Traffic stays inside namespaces this script creates. Every
# sysctl it changes is restored on exit (see ../lib.sh for the rest).
#
# Usage: bench/tcp_buffer/run.sh [BUILD_DIR]   (default: target/release)
#   ROUNDS=15 SECS=4 IDLE_SECS=60 STATS_ROUNDS=5 AFFINITY=0,1 to change the
#   sizes and CPUs;
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
STATS_ROUNDS=${STATS_ROUNDS:-5}
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

# BPF share of the CPU during bulk transfers, with bpf_stats on only for
# the transfer. Counters of the daemon's programs (bpftune_*; the sysctl
# tuner's one included) are read just before and just after it.
prog_snap() {
	bpftool prog show -j | jq -r '.[] | select(.name | startswith("bpftune_")) |
		"\(.id) \(.name) \(.type) \(.run_cnt // 0) \(.run_time_ns // 0)"'
}
# Busy CPU time of the whole machine so far, ns (user nice system irq softirq steal).
busy_ns() {
	awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.0f\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1e9 / hz}' /proc/stat
}
: >"$WORK/stats.progs"
: >"$WORK/stats.runs"
for _ in $(seq "$STATS_ROUNDS"); do
	for path in veth loopback; do
		if [ $path = veth ]; then cli=$TX; addr=10.252.9.2; port=5201; else cli=$RX; addr=127.0.0.1; port=5202; fi
		reset_ns
		daemon_start "$PLUG/tcp" bpftune_rcv
		prog_snap >"$WORK/snap0"
		sysctl -q -w kernel.bpf_stats_enabled=1
		b0=$(busy_ns)
		t0=$(date +%s%N)
		gbit=$(run_iperf "$cli" $addr $port)
		t1=$(date +%s%N)
		b1=$(busy_ns)
		sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
		prog_snap >"$WORK/snap1"
		daemon_stop
		# id name type cnt ns: the run's difference per program.
		awk -v p=$path 'NR == FNR {c[$1] = $4; n[$1] = $5; next}
			{print p, $2, $3, $4 - c[$1], $5 - n[$1]}' "$WORK/snap0" "$WORK/snap1" >>"$WORK/stats.progs"
		ns=$(awk 'NR == FNR {c[$1] = $5; next} {s += $5 - c[$1]} END {print s + 0}' "$WORK/snap0" "$WORK/snap1")
		echo "$path $ns $((t1 - t0)) $((b1 - b0)) $gbit" >>"$WORK/stats.runs"
	done
done
# Per path: total BPF ns / (elapsed x CPUs) and / busy CPU time, in %.
stats_share() { # $1 = path
	awk -v p="$1" -v n="$(nproc)" '$1 == p {bpf += $2; wall += $3; busy += $4}
		END {printf "%.4f %.4f\n", bpf / (wall * n) * 100, bpf / busy * 100}' "$WORK/stats.runs"
}
stats_runs() { # $1 = path: each run's share of elapsed x CPUs, in %
	awk -v p="$1" -v n="$(nproc)" '$1 == p {printf "%.4f ", $2 / ($3 * n) * 100}' "$WORK/stats.runs"
}
stats_table() { # $1 = path: per program, summed over its runs
	awk -v p="$1" '$1 == p {c[$2] += $4; n[$2] += $5; t[$2] = $3}
		END {for (k in c) if (c[k] > 0) printf "| %s | %s | %d | %d | %d |\n", k, t[k], c[k], n[k], n[k] / c[k]}' \
		"$WORK/stats.progs" | sort
}
for p in veth loopback; do
	read -r RES[$p.share] RES[$p.share_busy] < <(stats_share $p)
	RES[$p.share_runs]=$(stats_runs $p)
	RES[$p.stats_secs]=$(awk -v p="$p" '$1 == p {s += $3} END {printf "%.1f", s / 1e9}' "$WORK/stats.runs")
	RES[$p.stats_gbit]=$(awk -v p="$p" '$1 == p {printf "%.2f ", $5}' "$WORK/stats.runs")
	RES[$p.prog_table]=$(stats_table $p)
done

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
	echo "(ROUNDS=$ROUNDS SECS=$SECS IDLE_SECS=$IDLE_SECS STATS_ROUNDS=$STATS_ROUNDS AFFINITY=$AFFINITY SETTLE_SECS=$SETTLE_SECS DAEMON_ARGS=${DAEMON_ARGS:-}; each run with the daemon starts SETTLE_SECS after it loaded its programs)."
	echo
	echo "Reproduce (as root, from the repository root):"
	echo
	echo '    cargo build --release --workspace'
	echo "    flock /tmp/bpftune-bench.lock env ROUNDS=$ROUNDS SECS=$SECS IDLE_SECS=$IDLE_SECS STATS_ROUNDS=$STATS_ROUNDS bench/tcp_buffer/run.sh target/release"
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
	echo "## BPF share of the CPU during bulk transfer (target <= 0.1 %)"
	echo
	echo "kernel.bpf_stats_enabled=1 only during $STATS_ROUNDS transfers of ${SECS} s per path (paths"
	echo "alternating, a fresh daemon started SETTLE_SECS before each); run_time_ns of all the"
	echo "daemon's BPF programs (bpftune_*, the sysctl tuner's included) over the transfers, divided"
	echo "by their elapsed time x $(nproc) CPUs (client and server pinned one per CPU: the CPU time of"
	echo "both ends), and by the CPU time the machine was busy in them (/proc/stat). bpf_stats adds"
	echo "two clock reads per invocation, so these are upper bounds."
	echo
	echo "| path | BPF share of elapsed x CPUs (%) | BPF share of busy CPU time (%) | per transfer (% of elapsed x CPUs) | seconds measured | Gbit/s of those transfers |"
	echo "|---|---|---|---|---|---|"
	for p in veth loopback; do
		echo "| $p | ${RES[$p.share]} | ${RES[$p.share_busy]} | ${RES[$p.share_runs]} | ${RES[$p.stats_secs]} | ${RES[$p.stats_gbit]} |"
	done
	echo
	for p in veth loopback; do
		echo "Per program, $p (summed over its transfers):"
		echo
		echo "| program | type | run_cnt | run_time_ns | ns per run |"
		echo "|---|---|---|---|---|"
		echo "${RES[$p.prog_table]}"
		echo
	done
	echo "## Daemon idle footprint over ${IDLE_SECS} s (tuners: ${TUNERS})"
	echo
	echo "| RSS (KiB) | CPU time (ms) over ${IDLE_SECS} s |"
	echo "|---|---|"
	echo "| $RSS | $CPU_MS |"
} >"$OUT"
cat "$OUT"
