#!/bin/bash
# bench/neigh_table/run.sh: what the neigh_table tuner costs.
#
# The tuner hooks tp_btf/neigh_create and tp_btf/neigh_cleanup_and_release,
# so it costs something each time a neighbour (ARP or NDISC entry) is
# created or released. So:
#
#  1. Time to add N permanent neighbours (`ip -batch`, `neigh replace ...
#     nud permanent`) on a veth in a namespace made here, and to delete
#     them again, without and with the daemon (tuners: sysctl,
#     neigh_table), one run of each per round in a random order; a run
#     adds and deletes REPEAT times and counts as the median of those (one
#     batch takes only tens of milliseconds); medians over rounds, the
#     ratio of medians, per-round paired ratios and a bootstrap interval.
#  2. Run time per call of both BPF programs and calls per neighbour
#     (kernel.bpf_stats_enabled=1 during one more round with the daemon,
#     restored).
#
# The timing measures the programs' fast path: the arp_cache thresholds are
# set so that the tuner changes nothing. While adding, thresh3 is
# ADD_THRESH3 (16384: the table is "nearly full" only from 12288 entries,
# far above N plus what the machine has); while deleting, the kernel
# defaults 128/512/1024 (a table is never "nearly empty" for the tuner at
# thresh3 <= 1024, the floor it shrinks to). Both runs, with and without
# the daemon, use the same thresholds; the report says whether the daemon
# logged any change. The neighbour tables are shared by all namespaces, so
# the thresholds are global: saved first (`ip ntable show name arp_cache`)
# and put back on exit, as is kernel.bpf_stats_enabled.
#
# Root only. Neighbours are added only inside a namespace this script
# creates. See ../lib.sh for the rest.
#
# Usage: bench/neigh_table/run.sh [BUILD_DIR]   (default: target/release)
#   N=2000 ROUNDS=15 REPEAT=10 ADD_THRESH3=16384 to change the sizes;
#   PIN_CPU=1 to pin `ip` to a CPU (default: not pinned); OUT= for the
#   report.
HERE=$(cd "$(dirname "$0")" && pwd)
# A daemon runs for months: measure its steady state, not its start-up.
SETTLE_SECS=${SETTLE_SECS:-3}
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require bpftool jq ip shuf taskset

N=${N:-2000}
ROUNDS=${ROUNDS:-15}
REPEAT=${REPEAT:-10}
PIN_CPU=${PIN_CPU:-}
ADD_THRESH3=${ADD_THRESH3:-16384}
OUT=${OUT:-$HERE/RESULTS.md}
TAG=ntb$$
NS=$TAG-tx
DEV=${TAG}a
PROG=bpftune_neigh
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)

# Table-wide thresh1..3 of arp_cache (the first block: no "dev" line).
thresholds() {
	ip ntable show name arp_cache |
		awk '/thresh1/ {for (i = 1; i < NF; i++) if ($i ~ /^thresh[123]$/) t[$i] = $(i + 1); print t["thresh1"], t["thresh2"], t["thresh3"]; exit}'
}
set_thresholds() { ip ntable change name arp_cache thresh1 "$1" thresh2 "$2" thresh3 "$3"; }
read -r T1 T2 T3 < <(thresholds)
[ -n "$T3" ] || { echo "cannot read the arp_cache thresholds" >&2; exit 1; }
bench_on_exit "set_thresholds $T1 $T2 $T3"
bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"

bench_plugin "$PLUG" sysctl neigh_table
bench_netns_pair "$TAG" 10.252.23

# The batches: N permanent neighbours 10.253.x.y on $DEV, and their removal.
for i in $(seq 0 $((N - 1))); do
	printf 'neigh replace 10.253.%d.%d lladdr 02:bf:00:%02x:%02x:%02x dev %s nud permanent\n' \
		$((i / 250)) $((i % 250 + 2)) $(((i >> 16) & 255)) $(((i >> 8) & 255)) $((i & 255)) "$DEV"
done >"$WORK/add"
sed 's/^neigh replace \([0-9.]*\) .*/neigh del \1 dev '"$DEV"'/' "$WORK/add" >"$WORK/del"

# Milliseconds one batch takes (`ip` pinned to PIN_CPU if set: pinned, whole
# runs were 25 % slower as often as unpinned, in both modes).
PIN=()
[ -z "$PIN_CPU" ] || PIN=(taskset -c "$PIN_CPU")
time_batch() { # $1 = batch file
	local t0 t1
	t0=$(date +%s%N)
	"${PIN[@]}" ip -n "$NS" -batch "$1" >/dev/null
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f\n", (b - a) / 1e6}'
}
entries() { ip -n "$NS" neigh show dev "$DEV" | grep -c PERMANENT || true; }

# "run_cnt run_time_ns" of the newest program named $1.
prog_stats() {
	bpftool prog show -j | jq -r --arg p "$1" '[.[] | select(.name | startswith($p))] |
		max_by(.id) | "\(.run_cnt // 0) \(.run_time_ns // 0)"'
}

# One run: REPEAT times add + delete; appends the medians of the add and
# delete times to $WORK/add.$1 and $WORK/del.$1.
run_mode() { # $1 = without / with
	local _
	set_thresholds 128 512 "$ADD_THRESH3"
	if [ "$1" = with ]; then daemon_start "$PLUG" "$PROG"; else sleep "$SETTLE_SECS"; fi
	: >"$WORK/run.add"
	: >"$WORK/run.del"
	for _ in $(seq "$REPEAT"); do
		set_thresholds 128 512 "$ADD_THRESH3"
		time_batch "$WORK/add" >>"$WORK/run.add"
		[ "$(entries)" = "$N" ] || { echo "expected $N neighbours, found $(entries)" >&2; exit 1; }
		set_thresholds 128 512 1024
		time_batch "$WORK/del" >>"$WORK/run.del"
		[ "$(entries)" = 0 ] || { echo "neighbours left: $(entries)" >&2; exit 1; }
	done
	median <"$WORK/run.add" >>"$WORK/add.$1"
	median <"$WORK/run.del" >>"$WORK/del.$1"
	if [ "$1" = with ]; then
		daemon_stop
		grep -h -E "Scenario '|thresholds for" "$WORK/daemon.log" | sed 's/^bpftune: //' >>"$WORK/changes" || true
	fi
}

for m in without with; do : >"$WORK/add.$m"; : >"$WORK/del.$m"; done
: >"$WORK/changes"
for r in $(seq "$ROUNDS"); do
	for mode in $(shuf -e without with); do
		run_mode "$mode"
		echo "round $r $mode: add $(tail -1 "$WORK/add.$mode") ms, delete $(tail -1 "$WORK/del.$mode") ms" >&2
	done
done

declare -A RES
for op in add del; do
	RES[$op.without]=$(median <"$WORK/$op.without")
	RES[$op.with]=$(median <"$WORK/$op.with")
	RES[$op.ratio]=$(awk -v a="${RES[$op.with]}" -v b="${RES[$op.without]}" 'BEGIN {printf "%.3f", a/b}')
	paste -d' ' "$WORK/$op.without" "$WORK/$op.with" | awk '{printf "%.4f\n", $2 / $1}' >"$WORK/$op.paired"
	RES[$op.paired]=$(median <"$WORK/$op.paired")
	RES[$op.ci]=$(median_ci <"$WORK/$op.paired")
	RES[$op.per]=$(awk -v w="${RES[$op.with]}" -v o="${RES[$op.without]}" -v n="$N" 'BEGIN {printf "%.2f", (w - o) * 1000 / n}')
	RES[$op.raw_without]=$(tr '\n' ' ' <"$WORK/$op.without")
	RES[$op.raw_with]=$(tr '\n' ' ' <"$WORK/$op.with")
done

# BPF cost: one more round with the daemon, stats on, counters read around
# each batch.
set_thresholds 128 512 "$ADD_THRESH3"
daemon_start "$PLUG" "$PROG"
sysctl -q -w kernel.bpf_stats_enabled=1
read -r ac0 at0 < <(prog_stats bpftune_neigh_c)
read -r ar0 art0 < <(prog_stats bpftune_neigh_r)
ip -n "$NS" -batch "$WORK/add" >/dev/null
read -r ac1 at1 < <(prog_stats bpftune_neigh_c)
read -r ar1 art1 < <(prog_stats bpftune_neigh_r)
set_thresholds 128 512 1024
ip -n "$NS" -batch "$WORK/del" >/dev/null
read -r ac2 at2 < <(prog_stats bpftune_neigh_c)
read -r ar2 art2 < <(prog_stats bpftune_neigh_r)
sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
daemon_stop
grep -h -E "Scenario '|thresholds for" "$WORK/daemon.log" | sed 's/^bpftune: //' >>"$WORK/changes" || true
stats_row() { # phase program count ns
	awk -v ph="$1" -v p="$2" -v c="$3" -v t="$4" -v n="$N" \
		'BEGIN {printf "| %s | %s | %d | %s | %.2f |\n", ph, p, c, (c ? sprintf("%.0f", t / c) : "-"), c / n}'
}
STATS=$(
	stats_row add bpftune_neigh_create $((ac1 - ac0)) $((at1 - at0))
	stats_row add bpftune_neigh_release $((ar1 - ar0)) $((art1 - art0))
	stats_row delete bpftune_neigh_create $((ac2 - ac1)) $((at2 - at1))
	stats_row delete bpftune_neigh_release $((ar2 - ar1)) $((art2 - art1))
)
CHANGES=$(sort "$WORK/changes" | uniq -c | sed 's/^ */    /')

{
	echo "# neigh_table benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`bench/neigh_table/run.sh\`"
	echo "(N=$N ROUNDS=$ROUNDS REPEAT=$REPEAT PIN_CPU=$PIN_CPU ADD_THRESH3=$ADD_THRESH3 SETTLE_SECS=$SETTLE_SECS; each run with the daemon"
	echo "starts SETTLE_SECS after it loaded its programs, each run without it after the same pause)."
	echo
	echo "Reproduce (as root, from the repository root):"
	echo
	echo '    cargo build --release -p bpftune-daemon -p sysctl_tuner -p neigh_table_tuner'
	echo "    N=$N ROUNDS=$ROUNDS REPEAT=$REPEAT PIN_CPU=$PIN_CPU bench/neigh_table/run.sh target/release"
	echo
	echo "## Adding and deleting $N permanent neighbours (ms per batch), without/with the daemon"
	echo
	echo "One \`ip -batch\` of $N \`neigh replace <addr> lladdr <mac> dev <veth> nud permanent\`, then"
	echo "one of $N \`neigh del\`, in a namespace made by the script, \`ip\` pinned to CPU ${PIN_CPU:-any}; a run does this $REPEAT times and"
	echo "counts as the median. Each round has a run without and one with the daemon (sysctl +"
	echo "neigh_table) in a random order, each after a $SETTLE_SECS s pause. Thresholds: 128/512/$ADD_THRESH3"
	echo "while adding, 128/512/1024 while deleting, so the tuner has nothing to do (its programs"
	echo "take their fast path: never nearly full, never nearly empty above the 1024 floor)."
	echo "Paired ratio: a round's time with the daemon divided by its time without (> 1 is slower);"
	echo "interval: 95 % bootstrap interval for its median."
	echo
	echo "| operation | median without (ms) | median with (ms) | ratio of medians | median paired ratio | 95 % interval | difference per neighbour (us) |"
	echo "|---|---|---|---|---|---|---|"
	echo "| add $N | ${RES[add.without]} | ${RES[add.with]} | ${RES[add.ratio]} | ${RES[add.paired]} | ${RES[add.ci]} | ${RES[add.per]} |"
	echo "| delete $N | ${RES[del.without]} | ${RES[del.with]} | ${RES[del.ratio]} | ${RES[del.paired]} | ${RES[del.ci]} | ${RES[del.per]} |"
	echo
	echo "Runs (ms, median of $REPEAT batches each, in round order):"
	echo
	echo "* add without: ${RES[add.raw_without]}"
	echo "* add with: ${RES[add.raw_with]}"
	echo "* delete without: ${RES[del.raw_without]}"
	echo "* delete with: ${RES[del.raw_with]}"
	echo
	echo "Changes or scenarios the daemon logged during all the runs with it (count):"
	echo
	if [ -n "$CHANGES" ]; then echo "$CHANGES"; else echo "    none (thresholds untouched)"; fi
	echo
	echo "## BPF run time per call (kernel.bpf_stats_enabled=1, one more add + delete with the daemon)"
	echo
	echo "| phase | program | calls | ns per call | calls per neighbour |"
	echo "|---|---|---|---|---|"
	echo "$STATS"
	echo
	echo "bpf_stats adds two clock reads per call, so ns per call is an upper bound."
} >"$OUT"
cat "$OUT"
