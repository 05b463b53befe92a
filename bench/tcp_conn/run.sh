#!/bin/bash
# bench/tcp_conn/run.sh: what the tcp_conn tuner costs per connection.
#
#  1. Short-connection rate (connect, server closes, client closes; see
#     connrate.c) without and with the daemon (tcp_conn tuner only)
#     running, interleaved (without, with, without, ...): medians, their
#     ratio, and the median of paired ratios (each run with the daemon
#     against the mean of the runs without it just before and after, which
#     cancels slow drift in machine load). Two paths:
#       loopback  127.0.0.1 inside a namespace: the tuner skips loopback
#                 peers, so this is the cost every local connection pays;
#       veth      between two namespaces: the full path (state per socket,
#                 learning on close, a choice per connection from the 4th).
#  2. Run time per invocation of the sockops program
#     (kernel.bpf_stats_enabled=1, run_time_ns / run_cnt from bpftool),
#     and invocations per connection, on each path.
#
# Root only. Traffic stays inside namespaces this script creates. kernel.bpf_stats_enabled is restored on exit. Holds the
# integration-test lock so it never runs alongside a test that starts a
# daemon.
#
# Usage: bench/tcp_conn/run.sh [BUILD_DIR]   (default: target/release)
#   ROUNDS=9 SECS=3 to change the sizes.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-${BPFTUNE_BUILD_DIR:-$ROOT/target/release}}
ROUNDS=${ROUNDS:-9}
SECS=${SECS:-3}
OUT=${OUT:-$HERE/RESULTS.md}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in bpftool jq ip gcc; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$BUILD/bpftune" ] || { echo "no $BUILD/bpftune: cargo build --release first" >&2; exit 1; }

if [ -z "${BENCH_LOCKED:-}" ]; then
	mkdir -p -m 0755 /run/bpftune-tests
	exec env BENCH_LOCKED=1 flock /run/bpftune-tests/lock "$0" "$@"
fi

NS=tcb$$
RX=tcb$$-rx
PLUG=/run/bpftune-bench-$$
DAEMON_PID=
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)
WORK=$(mktemp -d)

cleanup() {
	[ -n "$DAEMON_PID" ] && kill -INT "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
	sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED" || true
	ip netns del "$NS" 2>/dev/null || true
	ip netns del "$RX" 2>/dev/null || true
	rm -rf "$PLUG" "$WORK"
}
trap cleanup EXIT

gcc -O2 -pthread -o "$WORK/connrate" "$HERE/connrate.c"
install -d -m 0755 "$PLUG"
install -m 0644 "$BUILD/libtcp_conn_tuner.so" "$PLUG/tcp_conn_tuner.so"

ip netns add "$NS"
ip netns add "$RX"
ip -n "$NS" link set lo up
ip -n "$RX" link set lo up
ip link add "${NS}a" type veth peer name "${NS}b"
ip link set "${NS}a" netns "$NS"
ip link set "${NS}b" netns "$RX"
ip -n "$NS" addr add 10.252.11.1/24 dev "${NS}a"
ip -n "$RX" addr add 10.252.11.2/24 dev "${NS}b"
ip -n "$NS" link set "${NS}a" up
ip -n "$RX" link set "${NS}b" up

start_daemon() {
	"$BUILD/bpftune" -s --system-libdir "$PLUG" -l "$PLUG" >"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 300); do
		bpftool prog show 2>/dev/null | grep -q 'bpftune_conn' && { sleep 0.5; return 0; }
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "daemon did not start:" >&2; cat "$WORK/daemon.log" >&2; exit 1
}
stop_daemon() {
	kill -INT "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=
}
run_rate() { # $1 = path
	if [ "$1" = loopback ]; then
		ip netns exec "$NS" "$WORK/connrate" 127.0.0.1 "$SECS"
	else
		ip netns exec "$NS" "$WORK/connrate" 10.252.11.2 "$SECS" "/run/netns/$RX"
	fi
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# with[i] / mean(without[i], without[i+1]), one per line
paired() { paste -d' ' "$1" <(tail -n +2 "$1") | head -n "$(wc -l <"$2")" | paste -d' ' - "$2" |
	awk '{printf "%.3f\n", $3 / (($1 + $2) / 2)}'; }

declare -A RES
for path in loopback veth; do
	: >"$WORK/$path.out.without"; : >"$WORK/$path.out.with"
	for r in $(seq "$ROUNDS"); do
		run_rate $path >>"$WORK/$path.out.without"
		start_daemon; run_rate $path >>"$WORK/$path.out.with"; stop_daemon
	done
	run_rate $path >>"$WORK/$path.out.without"
	for w in without with; do
		cut -d' ' -f1 "$WORK/$path.out.$w" >"$WORK/$path.$w"
		cut -d' ' -f2 "$WORK/$path.out.$w" >"$WORK/$path.cpu.$w"
	done
	RES[$path.cpu_without]=$(median <"$WORK/$path.cpu.without")
	RES[$path.cpu_with]=$(median <"$WORK/$path.cpu.with")
	RES[$path.cpu_paired]=$(paired "$WORK/$path.cpu.without" "$WORK/$path.cpu.with" | median)
	RES[$path.without]=$(median <"$WORK/$path.without")
	RES[$path.with]=$(median <"$WORK/$path.with")
	RES[$path.ratio]=$(awk -v a="${RES[$path.with]}" -v b="${RES[$path.without]}" 'BEGIN {printf "%.3f", a/b}')
	RES[$path.paired]=$(paired "$WORK/$path.without" "$WORK/$path.with" | median)
	RES[$path.raw_without]=$(tr '\n' ' ' <"$WORK/$path.without")
	RES[$path.raw_with]=$(tr '\n' ' ' <"$WORK/$path.with")

	# Per-invocation cost: stats on during one run with the daemon.
	start_daemon
	sysctl -q -w kernel.bpf_stats_enabled=1
	rate=$(run_rate $path | cut -d' ' -f1)
	prog=$(bpftool prog show -j | jq -r '.[] | select(.name | startswith("bpftune_conn")) |
		select(.run_cnt != null and .run_cnt > 0) | "\(.name) \(.run_cnt) \(.run_time_ns)"' | head -1)
	sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
	stop_daemon
	read -r pname pcnt pns <<<"$prog"
	RES[$path.stats]="| $path | $rate | $pname | $pcnt | $pns | $(awk -v t="$pns" -v c="$pcnt" 'BEGIN {printf "%.0f", t/c}') | $(awk -v c="$pcnt" -v r="$rate" -v s="$SECS" 'BEGIN {printf "%.1f", c/(r*s)}') |"
	RES[$path.summary]=$(grep -E 'Summary: tcp_conn_tuner' "$WORK/daemon.log" | sed 's/^bpftune: //' || true)
done

{
	echo "# tcp_conn benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`bench/tcp_conn/run.sh\`"
	echo "(build: \`$BUILD\`; ROUNDS=$ROUNDS SECS=$SECS). To reproduce, as root:"
	echo
	echo '    cargo build --release -p bpftune-daemon -p tcp_conn_tuner'
	echo "    ROUNDS=$ROUNDS SECS=$SECS bench/tcp_conn/run.sh target/release"
	echo
	echo "## Short-connection rate (connections/s), interleaved without/with the daemon"
	echo
	echo "Each connection: connect, the server accepts and closes, the client reads EOF and closes"
	echo "(\`bench/tcp_conn/connrate.c\`, one process). *loopback*: 127.0.0.1 inside a namespace; the"
	echo "tuner skips loopback peers at establishment (no state, no further callbacks). *veth*:"
	echo "between two namespaces; both ends of every connection take the full path (socket state,"
	echo "learning at close, from the 4th connection a choice per connection with bpf_setsockopt)."
	echo "The paired ratio divides each run with the daemon by the mean of the runs without it just"
	echo "before and after; it is the better estimate when machine load drifts."
	echo
	echo "| path | median without | median with | ratio of medians | median paired ratio (target >= 0.98) | runs without | runs with |"
	echo "|---|---|---|---|---|---|---|"
	for p in loopback veth; do
		echo "| $p | ${RES[$p.without]} | ${RES[$p.with]} | ${RES[$p.ratio]} | ${RES[$p.paired]} | ${RES[$p.raw_without]}| ${RES[$p.raw_with]}|"
	done
	echo
	echo "CPU time per connection (µs, user + system of the benchmark process, where the kernel's"
	echo "TCP work and the sockops program run; steadier than the rate when other load competes):"
	echo
	echo "| path | median without | median with | median paired ratio with/without (target <= 1.02) |"
	echo "|---|---|---|---|"
	for p in loopback veth; do
		echo "| $p | ${RES[$p.cpu_without]} | ${RES[$p.cpu_with]} | ${RES[$p.cpu_paired]} |"
	done
	echo
	echo "## sockops run time (kernel.bpf_stats_enabled=1, one ${SECS} s run per path)"
	echo
	echo "| path | connections/s | program | run_cnt | run_time_ns | ns per invocation | invocations per connection |"
	echo "|---|---|---|---|---|---|---|"
	echo "${RES[loopback.stats]}"
	echo "${RES[veth.stats]}"
	echo
	echo "Invocations per connection count both sockets and every sockops callback the kernel makes"
	echo "(several run whatever flags are set, e.g. TCP_CONNECT, TIMEOUT_INIT, RWND_INIT, NEEDS_ECN;"
	echo "the program returns at once for those), plus the state changes it enables."
	echo
	echo "## Summary the daemon printed after the veth stats run"
	echo
	echo '```'
	echo "${RES[veth.summary]}"
	echo '```'
} >"$OUT"
cat "$OUT"
