#!/bin/bash
# bench/net_buffer/run.sh: what the net_buffer tuner costs.
#
# The tuner hooks tp_btf/kfree_skb, which fires for every dropped skb of
# the machine (its program returns at once unless the drop reason is
# CPU_BACKLOG), and reads /proc/net/softnet_stat and /proc/pressure/cpu on
# the daemon's 1 s timer. So:
#
#  1. BPF cost (kernel.bpf_stats_enabled=1 around each run, restored):
#     calls/s, ns per call and the program's share of one CPU during
#     (i) a normal bulk TCP transfer (iperf3) over a veth pair between two
#     namespaces, where few or no skbs are dropped, and (ii) a backlog-drop
#     flood: the same transfer with GSO/TSO/GRO off on both ends (veth then
#     delivers every segment through the per-CPU backlog) and
#     net.core.netdev_max_backlog=8, once with the daemon in --advise mode
#     (it decides but changes nothing, so the drops go on at the same rate
#     and every drop takes the program's full path) and once with the daemon
#     acting (it grows the backlog until the drops stop).
#     Then the flood again with two flows at once, each client pinned to
#     one of the two CPUs of AFFINITY, so that both CPUs drop into their
#     backlogs at the same time (what a shared drop counter would bounce
#     between them), daemon --advise, REPS times; with BASE=DIR (a directory
#     holding another build's bpftune and lib*_tuner.so, e.g. the commit
#     before a change) REPS times per build, the builds alternating in a
#     random order per repetition: ns per call per run and medians.
#  2. Bulk TCP throughput over the veth pair with normal settings (no
#     flood) without and with the daemon (tuners: sysctl, net_buffer), one
#     run of each per round in a random order, client and server pinned to
#     one CPU each; medians, per-round paired ratios and a 95 % bootstrap
#     interval for their median; the changes the daemon made.
#  3. The daemon's CPU time and wake-ups while idle with only net_buffer
#     loaded (its 1 s timer), over IDLE_SECS.
#
# Root only. Traffic stays inside namespaces this script creates. The global
# sysctls the tuner may change (netdev_max_backlog, flow_limit_cpu_bitmap,
# netdev_budget, netdev_budget_usecs, high_order_alloc_disable) are saved
# first, put back before every measured run and restored on exit, as is
# kernel.bpf_stats_enabled (see ../lib.sh for the rest).
#
# Usage: bench/net_buffer/run.sh [BUILD_DIR]   (default: target/release)
#   ROUNDS=10 SECS=3 STATS_SECS=5 IDLE_SECS=60 REPS=3 AFFINITY=0,1 to change
#   the sizes and CPUs; BASE=DIR to compare with another build; OUT= for the
#   report.
HERE=$(cd "$(dirname "$0")" && pwd)
# A daemon runs for months: measure its steady state, not its start-up.
SETTLE_SECS=${SETTLE_SECS:-3}
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require iperf3 bpftool jq ip ethtool shuf

ROUNDS=${ROUNDS:-10}
SECS=${SECS:-3}
STATS_SECS=${STATS_SECS:-5}
IDLE_SECS=${IDLE_SECS:-60}
REPS=${REPS:-3}
BASE=${BASE:-}
AFFINITY=${AFFINITY:-0,1}
CPU_A=${AFFINITY%%,*}
CPU_B=${AFFINITY##*,}
OUT=${OUT:-$HERE/RESULTS.md}
TAG=nbb$$
FLOOD=nbf$$
PROG=bpftune_kfree
GLOBALS=
# flow_limit_cpu_bitmap only exists with CONFIG_NET_FLOW_LIMIT.
for s in net.core.netdev_max_backlog net.core.flow_limit_cpu_bitmap net.core.netdev_budget \
	net.core.netdev_budget_usecs net.core.high_order_alloc_disable; do
	[ -e "/proc/sys/${s//.//}" ] && GLOBALS+="$s "
done
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)

declare -A SAVED
for s in $GLOBALS; do SAVED[$s]=$(sysctl -n "$s"); done
restore_globals() {
	local s
	for s in $GLOBALS; do sysctl -q -w "$s=${SAVED[$s]}"; done
}
bench_on_exit restore_globals
bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"

bench_plugin "$PLUG/nb" sysctl net_buffer
bench_plugin "$PLUG/only" net_buffer
if [ -n "$BASE" ]; then
	[ -x "$BASE/bpftune" ] || { echo "no $BASE/bpftune" >&2; exit 1; }
	BUILD=$BASE bench_plugin "$PLUG/base" sysctl net_buffer
fi

bench_netns_pair "$TAG" 10.252.21
bench_netns_pair "$FLOOD" 10.252.22
for end in "$FLOOD-tx ${FLOOD}a" "$FLOOD-rx ${FLOOD}b"; do
	read -r ns dev <<<"$end"
	ip netns exec "$ns" ethtool -K "$dev" gso off tso off gro off
done
ip netns exec "$TAG-rx" iperf3 -s -D -B 10.252.21.2 -p 5201
ip netns exec "$FLOOD-rx" iperf3 -s -D -B 10.252.22.2 -p 5201
ip netns exec "$FLOOD-rx" iperf3 -s -D -B 10.252.22.2 -p 5202
sleep 1

# One iperf3 run from $1-tx to $2 for $3 seconds, pinned; prints Gbit/s
# received.
run_iperf() {
	ip netns exec "$1-tx" iperf3 -c "$2" -p 5201 -t "$3" -A "$AFFINITY" -J |
		jq '.end.sum_received.bits_per_second / 1e9'
}

# Two iperf3 runs at once from $1-tx to $2 for $3 seconds, clients pinned to
# CPU_A and CPU_B (servers on ports 5201 and 5202); prints the Gbit/s
# received in all.
run_iperf2() {
	local p
	ip netns exec "$1-tx" iperf3 -c "$2" -p 5201 -t "$3" -A "$CPU_A" -J >"$WORK/iperf_a" &
	p=$!
	ip netns exec "$1-tx" iperf3 -c "$2" -p 5202 -t "$3" -A "$CPU_B" -J >"$WORK/iperf_b"
	wait "$p"
	jq -s 'map(.end.sum_received.bits_per_second) | add / 1e9' "$WORK/iperf_a" "$WORK/iperf_b"
}

# "run_cnt run_time_ns" of the newest kfree_skb program.
prog_stats() {
	bpftool prog show -j | jq -r --arg p "$PROG" '[.[] | select(.name | startswith($p))] |
		max_by(.id) | "\(.run_cnt // 0) \(.run_time_ns // 0)"'
}
# Backlog drops of all CPUs so far (column 2 of /proc/net/softnet_stat, hex).
backlog_drops() {
	local n=0 _ d
	while read -r _ d _; do n=$((n + 16#$d)); done </proc/net/softnet_stat
	echo "$n"
}

# Backlog drops per CPU so far, one number per line in CPU order.
backlog_drops_cpus() {
	local _ d
	while read -r _ d _; do echo $((16#$d)); done </proc/net/softnet_stat
}

# 1. BPF cost of one transfer of STATS_SECS on pair $1 (address $2) with the
# daemon started with the remaining arguments; appends a table row to
# $WORK/cost.rows (not printed into a $(...): the daemon must be started by
# this shell, so that the exit trap can stop it).
bpf_cost() { # $1 = pair, $2 = server address, $3 = label, $4... = daemon arguments
	local pair=$1 addr=$2 label=$3 c0 t0 c1 t1 d0 d1 gbit changes backlog
	shift 3
	daemon_start "$PLUG/nb" "$PROG" "$@"
	sysctl -q -w kernel.bpf_stats_enabled=1
	read -r c0 t0 < <(prog_stats)
	d0=$(backlog_drops)
	gbit=$(run_iperf "$pair" "$addr" "$STATS_SECS")
	d1=$(backlog_drops)
	read -r c1 t1 < <(prog_stats)
	sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
	backlog=$(sysctl -n net.core.netdev_max_backlog)
	daemon_stop
	changes=$(grep -c -E "Scenario '|Advice [^ ]+: scenario '" "$WORK/daemon.log" || true)
	grep -h -E "Scenario '|Advice [^ ]+: scenario '" "$WORK/daemon.log" | sed 's/^bpftune: //' >>"$WORK/cost.changes" || true
	awk -v l="$label" -v g="$gbit" -v c="$((c1 - c0))" -v t="$((t1 - t0))" -v d="$((d1 - d0))" \
		-v s="$STATS_SECS" -v ch="$changes" -v b="$backlog" \
		'BEGIN {printf "| %s | %.2f | %d | %.0f | %d | %s | %.3f %% | %d | %s |\n", l, g, d / s, c / s, c,
			(c ? sprintf("%.0f", t / c) : "-"), t / (s * 1e9) * 100, ch, b}' >>"$WORK/cost.rows"
	restore_globals
}

: >"$WORK/cost.changes"
: >"$WORK/cost.rows"
bpf_cost "$TAG" 10.252.21.2 "normal transfer (offloads on, backlog ${SAVED[net.core.netdev_max_backlog]})"
# Set before the daemon starts: a write while it runs is an override.
sysctl -q -w net.core.netdev_max_backlog=8
bpf_cost "$FLOOD" 10.252.22.2 "flood (offloads off, backlog 8), daemon --advise" --advise
sysctl -q -w net.core.netdev_max_backlog=8
bpf_cost "$FLOOD" 10.252.22.2 "flood (offloads off, backlog 8), daemon acting"
restore_globals

# 1b. Both CPUs dropping at once, --advise; this build and BASE alternating.
# Appends "build rep Gbit/s drops/s calls ns_per_call" to $WORK/pair.rows.
flood2() { # $1 = build (new or base), $2 = repetition
	local dir=$PLUG/nb bin=$BUILD c0 t0 c1 t1 d0 d1 gbit
	[ "$1" = base ] && { dir=$PLUG/base; bin=$BASE; }
	sysctl -q -w net.core.netdev_max_backlog=8
	BUILD=$bin daemon_start "$dir" "$PROG" --advise
	sysctl -q -w kernel.bpf_stats_enabled=1
	read -r c0 t0 < <(prog_stats)
	d0=$(backlog_drops)
	backlog_drops_cpus >"$WORK/cpus0"
	gbit=$(run_iperf2 "$FLOOD" 10.252.22.2 "$STATS_SECS")
	backlog_drops_cpus >"$WORK/cpus1"
	d1=$(backlog_drops)
	read -r c1 t1 < <(prog_stats)
	sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
	daemon_stop
	restore_globals
	awk -v b="$1" -v r="$2" -v g="$gbit" -v c="$((c1 - c0))" -v t="$((t1 - t0))" -v d="$((d1 - d0))" -v s="$STATS_SECS" \
		-v cpus="$(paste -d' ' "$WORK/cpus0" "$WORK/cpus1" | awk '{printf "%s%d", (NR > 1 ? "/" : ""), $2 - $1}')" \
		'BEGIN {printf "%s %d %.2f %.0f %d %s %s\n", b, r, g, d / s, c, (c ? sprintf("%.1f", t / c) : "-"), cpus}' >>"$WORK/pair.rows"
	echo "two-CPU flood $1 (repetition $2): $(tail -1 "$WORK/pair.rows")" >&2
}
: >"$WORK/pair.rows"
BUILDS=new
[ -n "$BASE" ] && BUILDS="base new"
for r in $(seq "$REPS"); do
	for b in $(shuf -e $BUILDS); do flood2 "$b" "$r"; done
done

# 2. Throughput with normal settings, interleaved in a random order.
: >"$WORK/without"
: >"$WORK/with"
: >"$WORK/daemon_ms"
: >"$WORK/changes"
for r in $(seq "$ROUNDS"); do
	for mode in $(shuf -e without with); do
		restore_globals
		if [ "$mode" = with ]; then
			daemon_start "$PLUG/nb" "$PROG"
			c0=$(daemon_cpu_ms)
			run_iperf "$TAG" 10.252.21.2 "$SECS" >>"$WORK/with"
			c1=$(daemon_cpu_ms)
			awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}' >>"$WORK/daemon_ms"
			grep -h "Scenario '" "$WORK/daemon.log" | sed 's/^bpftune: //' >>"$WORK/changes" || true
			daemon_stop
		else
			sleep "$SETTLE_SECS"
			run_iperf "$TAG" 10.252.21.2 "$SECS" >>"$WORK/without"
		fi
		echo "round $r $mode: $(tail -1 "$WORK/$mode") Gbit/s" >&2
	done
done
restore_globals
paste -d' ' "$WORK/without" "$WORK/with" | awk '{printf "%.4f\n", $2 / $1}' >"$WORK/paired"
WITHOUT=$(median <"$WORK/without")
WITH=$(median <"$WORK/with")
RATIO=$(awk -v a="$WITH" -v b="$WITHOUT" 'BEGIN {printf "%.3f", a/b}')
PAIRED=$(median <"$WORK/paired")
PAIRED_CI=$(median_ci <"$WORK/paired")
PAIRED_IQR=$(quartiles <"$WORK/paired")
DAEMON_MS=$(median <"$WORK/daemon_ms")
RAW_WITHOUT=$(awk '{printf "%.2f ", $1}' "$WORK/without")
RAW_WITH=$(awk '{printf "%.2f ", $1}' "$WORK/with")
CHANGES=$(sort "$WORK/changes" | uniq -c | sed 's/^ */    /')

# 3. Idle: only net_buffer.
daemon_start "$PLUG/only" "$PROG"
sleep 2
read -r cpu_ms per_min share wake < <(daemon_idle "$IDLE_SECS")
RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status")
IDLE="| $cpu_ms | $per_min | $wake | $share |"
daemon_stop
restore_globals

{
	echo "# net_buffer benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`bench/net_buffer/run.sh\`"
	echo "(ROUNDS=$ROUNDS SECS=$SECS STATS_SECS=$STATS_SECS IDLE_SECS=$IDLE_SECS REPS=$REPS AFFINITY=$AFFINITY SETTLE_SECS=$SETTLE_SECS${BASE:+ BASE=$BASE};"
	echo "each run with the daemon starts SETTLE_SECS after it loaded its programs)."
	echo
	echo "Reproduce (as root, from the repository root):"
	echo
	echo '    cargo build --release -p bpftune-daemon -p sysctl_tuner -p net_buffer_tuner'
	echo "    ROUNDS=$ROUNDS SECS=$SECS IDLE_SECS=$IDLE_SECS REPS=$REPS${BASE:+ BASE=$BASE} flock /tmp/bpftune-bench.lock bench/net_buffer/run.sh target/release"
	echo
	echo "## BPF cost of tp_btf/kfree_skb (kernel.bpf_stats_enabled=1, one ${STATS_SECS} s iperf3 run each)"
	echo
	echo "One TCP flow over a veth pair between two namespaces, client and server pinned to CPUs"
	echo "$AFFINITY. The program runs for every dropped skb of the machine and returns unless the"
	echo "drop reason is CPU_BACKLOG. *Flood*: GSO/TSO/GRO off on both veth ends (every segment"
	echo "goes through the receiving CPU's backlog) and netdev_max_backlog=8. With \`--advise\` the"
	echo "daemon changes nothing, so the drops go on and each one takes the program's full path"
	echo "(window count, adaptive sampling, an event at most every 25 ms); acting, it grows the"
	echo "backlog (and sets the flow-limit bit of the dropping CPU) until the drops stop. CPU share"
	echo "= run time / wall time of the run (bpf_stats adds two clock reads per call: an upper"
	echo "bound)."
	echo
	echo "| run | Gbit/s | backlog drops/s | calls/s | calls | ns per call | share of one CPU | changes (or advice) logged | netdev_max_backlog at the end |"
	echo "|---|---|---|---|---|---|---|---|---|"
	cat "$WORK/cost.rows"
	echo
	echo "What the daemon logged in those runs (count):"
	echo
	if [ -s "$WORK/cost.changes" ]; then sort "$WORK/cost.changes" | uniq -c | sed 's/^ */    /'; else echo "    nothing"; fi
	echo
	echo "### Both CPUs dropping: two flows at once, daemon --advise ($REPS runs per build, ${STATS_SECS} s each)"
	echo
	echo "As the flood above, with two iperf3 clients at once, pinned to CPU $CPU_A and CPU $CPU_B, so"
	echo "that both CPUs drop into their own backlogs at the same time. *base*: the build in"
	echo "\`BASE\`; *new*: the build under test; runs alternate between the builds in a random"
	echo "order per repetition."
	echo
	echo "| build | ns per call, each run | median ns per call | median calls | median backlog drops/s | median Gbit/s | backlog drops per CPU, each run |"
	echo "|---|---|---|---|---|---|---|"
	for b in $BUILDS; do
		awk -v b="$b" '$1 == b' "$WORK/pair.rows" >"$WORK/pair.$b"
		echo "| $b | $(awk '{printf "%s ", $6}' "$WORK/pair.$b")| $(awk '{print $6}' "$WORK/pair.$b" | median) | $(awk '{print $5}' "$WORK/pair.$b" | median) | $(awk '{print $4}' "$WORK/pair.$b" | median) | $(awk '{print $3}' "$WORK/pair.$b" | median) | $(awk '{printf "%s ", $7}' "$WORK/pair.$b")|"
	done
	if [ -n "$BASE" ]; then
		echo
		echo "Paired (new / base, same repetition) ns-per-call ratios: $(join <(awk '$1 == "base" {print $2, $6}' "$WORK/pair.rows" | sort) \
			<(awk '$1 == "new" {print $2, $6}' "$WORK/pair.rows" | sort) | awk '{printf "%.3f ", $3 / $2}')"
	fi
	echo
	echo "## Bulk TCP throughput (iperf3, Gbit/s received), without/with the daemon (sysctl + net_buffer)"
	echo
	echo "Normal settings (offloads on, netdev_max_backlog ${SAVED[net.core.netdev_max_backlog]}): no flood. Each round runs"
	echo "one ${SECS} s transfer without and one with the daemon, in a random order, each after a"
	echo "${SETTLE_SECS} s pause; the global sysctls are put back before every run. The paired ratio"
	echo "divides a round's run with the daemon by its run without; the interval is a 95 % bootstrap"
	echo "interval for the median of those ratios."
	echo
	echo "| median without | median with | ratio of medians | median paired ratio | 95 % interval | paired ratios, middle half | daemon CPU ms per run (median) |"
	echo "|---|---|---|---|---|---|---|"
	echo "| $WITHOUT | $WITH | $RATIO | $PAIRED | $PAIRED_CI | $PAIRED_IQR | $DAEMON_MS |"
	echo
	echo "Runs (Gbit/s, in round order):"
	echo
	echo "* without: $RAW_WITHOUT"
	echo "* with: $RAW_WITH"
	echo
	echo "Changes the daemon made during the runs with it (count):"
	echo
	if [ -n "$CHANGES" ]; then echo "$CHANGES"; else echo "    none"; fi
	echo
	echo "## Idle daemon with only net_buffer over ${IDLE_SECS} s"
	echo
	echo "The tuner's 1 s timer reads /proc/net/softnet_stat and /proc/pressure/cpu and the"
	echo "current netdev_max_backlog / flow-limit mask for its BPF globals. RSS: $RSS KiB."
	echo
	echo "| CPU ms over ${IDLE_SECS} s | CPU ms per minute | voluntary context switches per s | share of one CPU (%) |"
	echo "|---|---|---|---|"
	echo "$IDLE"
} >"$OUT"
cat "$OUT"
