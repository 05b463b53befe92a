#!/bin/bash
# bench/tcp_conn/run.sh: what the tcp_conn tuner costs per connection.
#
#  1. Short-connection rate (connrate.c: connect, accept, close, repeat) on
#     loopback inside a namespace and over a veth between two namespaces, in
#     rounds of three blocks in a random order: without anything, with only
#     an empty sockops program attached (the floor any sockops program
#     costs), and with the daemon; each block is BLOCK runs and counts as
#     their median. Medians over rounds, per-round paired ratios and a
#     bootstrap interval for their median. The benchmark process is pinned to one
#     CPU (PIN_CPU): unpinned, its two threads bounce between the CPUs and
#     the rate varies by 2x from run to run.
#  2. The sockops program's run time per invocation (kernel.bpf_stats_enabled=1,
#     restored afterwards) during one extra run per path.
#
# Root only. Traffic stays inside namespaces this script creates.
#
# Usage: bench/tcp_conn/run.sh [BUILD_DIR]   (default: target/release)
#   ROUNDS=12 BLOCK=3 SECS=1 PIN_CPU=1 SETTLE_SECS=3 to change the sizes;
#   PATHS="loopback veth" to choose the paths; TUNER_OBJECT=1 to add the
#   tuner's BPF object without the daemon as a fourth configuration; OUT=
#   for the report.
HERE=$(cd "$(dirname "$0")" && pwd)
# A daemon runs for months: measure its steady state, not its start-up.
SETTLE_SECS=${SETTLE_SECS:-3}
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require bpftool jq ip gcc clang taskset findmnt

ROUNDS=${ROUNDS:-12}
SECS=${SECS:-1}
BLOCK=${BLOCK:-3}
PIN_CPU=${PIN_CPU:-1}
PATHS=${PATHS:-loopback veth}
CONFIGS="without floor with${TUNER_OBJECT:+ tuner}"
OUT=${OUT:-$HERE/RESULTS.md}
TAG=tcb$$
NS=$TAG-tx
RX=$TAG-rx
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)

bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"

gcc -O2 -pthread -o "$WORK/connrate" "$HERE/connrate.c"
bench_plugin "$PLUG" tcp_conn

# The floor: an empty sockops program on the cgroup the daemon uses (the
# root of the cgroup2 hierarchy), attached and detached around runs.
clang -O2 -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$HERE/empty_sockops.bpf.c" -o "$WORK/empty.o"
mkdir "$WORK/bpffs"
mount -t bpf bpf "$WORK/bpffs"
bench_on_exit "umount $WORK/bpffs"
bpftool prog load "$WORK/empty.o" "$WORK/bpffs/empty" type sockops
CG=$(findmnt -t cgroup2 -n -o TARGET | head -1)
if [ -z "$CG" ]; then
	mkdir "$WORK/cgroup"
	mount -t cgroup2 none "$WORK/cgroup"
	CG=$WORK/cgroup
	bench_on_exit "umount $WORK/cgroup"
fi
floor_on() { bpftool cgroup attach "$CG" sock_ops pinned "$WORK/bpffs/empty" multi; }
floor_off() { bpftool cgroup detach "$CG" sock_ops pinned "$WORK/bpffs/empty"; }
bench_on_exit "floor_off 2>/dev/null"
# TUNER_OBJECT=1 adds a configuration "tuner": the tuner's own BPF object (the one built
# into the plugin, same program tag) attached the same way, without the
# daemon; it separates what the program costs from what the daemon adds.
if [[ " $CONFIGS " == *" tuner "* ]]; then
	TUNER_OBJ=$(ls -t "$BUILD"/build/tcp_conn_tuner-*/out/tcp_conn.bpf.o | head -1)
	bpftool prog load "$TUNER_OBJ" "$WORK/bpffs/tuner" type sockops
fi
tuner_on() { bpftool cgroup attach "$CG" sock_ops pinned "$WORK/bpffs/tuner" multi; }
tuner_off() { bpftool cgroup detach "$CG" sock_ops pinned "$WORK/bpffs/tuner"; }
bench_on_exit "tuner_off 2>/dev/null"

bench_netns_pair "$TAG" 10.252.11
# No TIME_WAIT sockets: tens of thousands per run would otherwise expire on
# the measured CPU during later runs, a cost that depends on the history.
for ns in "$NS" "$RX"; do ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_max_tw_buckets=0; done

run_rate() { # $1 = path; prints "connections/s cpu_us_per_connection"
	if [ "$1" = loopback ]; then
		ip netns exec "$NS" taskset -c "$PIN_CPU" "$WORK/connrate" 127.0.0.1 "$SECS"
	else
		ip netns exec "$NS" taskset -c "$PIN_CPU" "$WORK/connrate" 10.252.11.2 "$SECS" "/run/netns/$RX"
	fi
}

# BLOCK runs in a row in one configuration; prints the medians of their rates
# and CPU times. The first run after a program is attached is often slower
# (code and data still cold), and a block lets the others outvote it.
run_block() { # $1 = path
	local _
	: >"$WORK/block"
	for _ in $(seq "$BLOCK"); do run_rate "$1" >>"$WORK/block"; done
	echo "$(cut -d' ' -f1 "$WORK/block" | median) $(cut -d' ' -f2 "$WORK/block" | median)"
}

# One block in one configuration. Each configuration waits SETTLE_SECS after
# its set-up, so the daemon's start-up is not the only thing that gets a pause.
run_config() { # $1 = configuration, $2 = path
	case $1 in
	without) sleep "$SETTLE_SECS"; run_block "$2" ;;
	floor) floor_on; sleep "$SETTLE_SECS"; run_block "$2"; floor_off ;;
	tuner) tuner_on; sleep "$SETTLE_SECS"; run_block "$2"; tuner_off ;;
	with) daemon_start "$PLUG" bpftune_conn; run_block "$2"; daemon_stop ;;
	esac
}

# Each "with" (or "floor") block divided by the "without" block of its round.
per_round() { paste -d' ' "$1" "$2" | awk '{printf "%.4f\n", $2 / $1}'; }

declare -A RES
for path in $PATHS; do
	for w in $CONFIGS; do : >"$WORK/$path.out.$w"; done
	# A round is one block of each configuration in a random order, so no
	# configuration always follows another's set-up or teardown.
	for _ in $(seq "$ROUNDS"); do
		for w in $(shuf -e $CONFIGS); do
			run_config "$w" "$path" >>"$WORK/$path.out.$w"
		done
	done
	for w in $CONFIGS; do
		cut -d' ' -f1 "$WORK/$path.out.$w" >"$WORK/$path.$w"
		cut -d' ' -f2 "$WORK/$path.out.$w" >"$WORK/$path.cpu.$w"
	done
	RES[$path.without]=$(median <"$WORK/$path.without")
	RES[$path.with]=$(median <"$WORK/$path.with")
	RES[$path.ratio]=$(awk -v a="${RES[$path.with]}" -v b="${RES[$path.without]}" 'BEGIN {printf "%.3f", a/b}')
	per_round "$WORK/$path.without" "$WORK/$path.with" >"$WORK/$path.paired"
	RES[$path.paired]=$(median <"$WORK/$path.paired")
	RES[$path.paired_iqr]=$(quartiles <"$WORK/$path.paired")
	RES[$path.paired_ci]=$(median_ci <"$WORK/$path.paired")
	RES[$path.floor]=$(median <"$WORK/$path.floor")
	RES[$path.floor_paired]=$(per_round "$WORK/$path.without" "$WORK/$path.floor" | median)
	RES[$path.over_floor_paired]=$(per_round "$WORK/$path.floor" "$WORK/$path.with" | median)
	RES[$path.over_floor]=$(awk -v a="${RES[$path.with]}" -v b="${RES[$path.floor]}" 'BEGIN {printf "%.3f", a/b}')
	RES[$path.cpu_without]=$(median <"$WORK/$path.cpu.without")
	RES[$path.cpu_with]=$(median <"$WORK/$path.cpu.with")
	RES[$path.cpu_paired]=$(per_round "$WORK/$path.cpu.without" "$WORK/$path.cpu.with" | median)
	RES[$path.cpu_paired_iqr]=$(per_round "$WORK/$path.cpu.without" "$WORK/$path.cpu.with" | quartiles)
	RES[$path.raw_without]=$(tr '\n' ' ' <"$WORK/$path.without")
	RES[$path.raw_with]=$(tr '\n' ' ' <"$WORK/$path.with")
	RES[$path.raw_floor]=$(tr '\n' ' ' <"$WORK/$path.floor")
	if [ -n "${TUNER_OBJECT:-}" ]; then
		RES[$path.tuner]="| $path | $(median <"$WORK/$path.tuner") | $(per_round "$WORK/$path.without" "$WORK/$path.tuner" | median) | $(per_round "$WORK/$path.floor" "$WORK/$path.tuner" | median) | $(per_round "$WORK/$path.tuner" "$WORK/$path.with" | median) |"
		RES[$path.raw_tuner]=$(tr '\n' ' ' <"$WORK/$path.tuner")
	fi

	# Per-invocation cost: stats on during one more run with the daemon.
	daemon_start "$PLUG" bpftune_conn
	sysctl -q -w kernel.bpf_stats_enabled=1
	read -r rate cpu < <(run_rate $path)
	# Every sockops program the tuner attached (tcp_conn may have more
	# than one), the newest of each name.
	bpftool prog show -j | jq '[.[] | select(.type == "sock_ops" and (.name | startswith("bpftune_")))] |
		group_by(.name) | map(max_by(.id))' >"$WORK/progs.json"
	read -r pcnt pns < <(jq -r '"\(map(.run_cnt // 0) | add // 0) \(map(.run_time_ns // 0) | add // 0)"' "$WORK/progs.json")
	RES[$path.progs]=$(jq -r --arg r "$rate" --arg s "$SECS" '.[] | "\(.name): \((.run_cnt // 0) / ($r | tonumber) / ($s | tonumber) * 10 | round / 10) calls per connection, \(if (.run_cnt // 0) > 0 then ((.run_time_ns // 0) / .run_cnt | round) else 0 end) ns each"' "$WORK/progs.json" | paste -sd';' | sed 's/;/; /g')
	sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
	daemon_stop
	RES[$path.stats]=$(awk -v path="$path" -v rate="$rate" -v cpu="$cpu" -v c="$pcnt" -v t="$pns" -v s="$SECS" \
		'BEGIN {n = rate * s; printf "| %s | %d | %d | %d | %.0f | %.1f | %.2f | %.1f %% |", path, rate, c, t,
			t / c, c / n, t / n / 1000, t / n / 1000 / cpu * 100}')
	RES[$path.summary]=$(grep -E 'Summary: tcp_conn_tuner' "$WORK/daemon.log" | sed 's/^bpftune: //' || true)
done

{
	echo "# tcp_conn benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`bench/tcp_conn/run.sh\`"
	echo "(ROUNDS=$ROUNDS BLOCK=$BLOCK SECS=$SECS PIN_CPU=$PIN_CPU SETTLE_SECS=$SETTLE_SECS: each run with the daemon starts that long after it loaded its programs). To reproduce, as root:"
	echo
	echo '    cargo build --release -p bpftune-daemon -p tcp_conn_tuner'
	echo "    ROUNDS=$ROUNDS BLOCK=$BLOCK SECS=$SECS SETTLE_SECS=$SETTLE_SECS PATHS=\"$PATHS\" bench/tcp_conn/run.sh target/release"
	echo
	echo "## Short-connection rate (connections/s), interleaved without/with the daemon"
	echo
	echo "Each connection: connect, the server accepts and closes, the client reads EOF and closes"
	echo "(\`bench/tcp_conn/connrate.c\`, one process pinned to CPU $PIN_CPU). *loopback*: 127.0.0.1"
	echo "inside a namespace; the tuner skips loopback peers at establishment (no state, no further"
	echo "callbacks). *veth*: between two namespaces; both ends of every connection are tracked"
	echo "(a destination lookup at establishment; a state callback at close for the connections"
	echo "learned from: a destination's first 64, then 1 in 8). These connections carry no data,"
	echo "so they teach the learner nothing: the candidates stay tied, and exploration (1 in 64)"
	echo "stops once 8 learned closes in a row had no data, so bpf_setsockopt runs only at each"
	echo "end's 4th connection. A round runs one block in"
	echo "each configuration (without, empty"
	echo "sockops, daemon) in a random order, each after a $SETTLE_SECS s pause; the paired ratio"
	echo "divides a round's block with the daemon by its block without. Its median over rounds is"
	echo "the estimate; the interval is a 95 % bootstrap interval for that median."
	echo
	echo "| path | median without | median with | ratio of medians | median paired ratio (target >= 0.98) | 95 % interval | paired ratios, middle half |"
	echo "|---|---|---|---|---|---|---|"
	for p in $PATHS; do
		echo "| $p | ${RES[$p.without]} | ${RES[$p.with]} | ${RES[$p.ratio]} | ${RES[$p.paired]} | ${RES[$p.paired_ci]} | ${RES[$p.paired_iqr]} |"
	done
	echo
	echo "Block medians (connections/s, by round; each the median of $BLOCK runs of $SECS s):"
	echo
	for p in $PATHS; do
		echo "* $p without: ${RES[$p.raw_without]}"
		echo "* $p empty sockops: ${RES[$p.raw_floor]}"
		echo "* $p with: ${RES[$p.raw_with]}"
	done
	echo
	echo "### The floor: any sockops program at all"
	echo
	echo "Each round also runs a block with only an empty sockops program (\`empty_sockops.bpf.c\`,"
	echo "\`return 1\`) attached to the same cgroup and no daemon: the kernel's fixed cost of"
	echo "calling a cgroup sockops program on every connection (9 calls per loopback connection,"
	echo "most of which the kernel makes whatever the program asks for), which the tuner cannot"
	echo "avoid and the original bpftune pays too."
	echo
	echo "| path | median empty sockops | median paired ratio empty/without | ratio of medians daemon/empty | median paired ratio daemon/empty |"
	echo "|---|---|---|---|---|"
	for p in $PATHS; do
		echo "| $p | ${RES[$p.floor]} | ${RES[$p.floor_paired]} | ${RES[$p.over_floor]} | ${RES[$p.over_floor_paired]} |"
	done
	if [ -n "${TUNER_OBJECT:-}" ]; then
		echo
		echo "The tuner's BPF object attached by bpftool, without the daemon (TUNER_OBJECT=1):"
		echo
		echo "| path | median | paired ratio object/without | paired ratio object/empty | paired ratio daemon/object |"
		echo "|---|---|---|---|---|"
		for p in $PATHS; do echo "${RES[$p.tuner]}"; done
		echo
		for p in $PATHS; do echo "* $p object, block medians: ${RES[$p.raw_tuner]}"; done
	fi
	echo
	echo "CPU time per connection (µs, user + system of the benchmark process, where the kernel's"
	echo "TCP work and the sockops program run):"
	echo
	echo "| path | median without | median with | median paired ratio with/without | paired ratios, middle half |"
	echo "|---|---|---|---|---|"
	for p in $PATHS; do
		echo "| $p | ${RES[$p.cpu_without]} | ${RES[$p.cpu_with]} | ${RES[$p.cpu_paired]} | ${RES[$p.cpu_paired_iqr]} |"
	done
	echo
	echo "## sockops run time (kernel.bpf_stats_enabled=1, one more ${SECS} s run per path)"
	echo
	echo "| path | connections/s | run_cnt | run_time_ns | ns per invocation | invocations per connection | program µs per connection | share of the connection's CPU time |"
	echo "|---|---|---|---|---|---|---|---|"
	for p in $PATHS; do echo "${RES[$p.stats]}"; done
	echo
	echo "The tuner's sockops programs (all of them are counted above):"
	echo
	for p in $PATHS; do echo "* $p: ${RES[$p.progs]}"; done
	echo
	echo "Invocations per connection count both sockets and every sockops callback the kernel makes"
	echo "(several run whatever flags are set, e.g. TCP_CONNECT, TIMEOUT_INIT, RWND_INIT, NEEDS_ECN;"
	echo "the program returns at once for those), plus the state changes it enables. bpf_stats"
	echo "adds two clock reads to every invocation, so these times are upper bounds."
	echo
	echo "## Summary the daemon printed after the last stats run"
	echo
	echo '```'
	for p in $PATHS; do last=$p; done
	echo "${RES[$last.summary]}"
	echo '```'
} >"$OUT"
cat "$OUT"
