#!/bin/bash
# bench/udp_buffer/run.sh: what the udp_buffer tuner brings and costs.
#
#  1. Datagram loss of short-lived UDP flows (udpflood.py: fresh receiver per
#     0.5 s flow asking for SO_RCVBUF 4 MiB, bursts of 200 x 1200 bytes per
#     10 ms, drained every 10 ms) over loopback in a namespace, starting from
#     rmem_max = rmem_default = 16384, without and with the daemon,
#     interleaved; per-round mean loss and the loss of the last flow.
#  2. Run time per invocation of the udp_buffer BPF programs during one
#     with-daemon round (kernel.bpf_stats_enabled=1).
#  3. Run time per invocation in drop storms (storm.py: 8 receivers that
#     never read, one sender as fast as it can, STORM_SECS each), with the
#     daemon in --advise mode so that nothing changes and every drop takes
#     the programs' full path: an -ENOBUFS storm (udp_mem "64 128 256",
#     UDP memory full: both programs fire per drop, unsampled, the event
#     rate limit is their only brake) and an -ENOMEM storm (default limits,
#     each receiver's queue full: sampled). With BASE=DIR (a directory
#     holding another build's bpftune and lib*_tuner.so, e.g. the commit
#     before a change) each storm runs REPS times per build, the builds
#     alternating in a random order per repetition; medians per build.
#
# Root only. Traffic stays on loopback in a namespace this script creates.
# rmem_max/rmem_default/udp_mem (global) and bpf_stats_enabled are restored
# on exit. Holds the integration-test lock.
#
# Usage: bench/udp_buffer/run.sh [BUILD_DIR]  (default: target/release)
#   ROUNDS=3 FLOWS=10 REPS=3 STORM_SECS=5 to change the sizes; BASE=DIR to
#   compare with another build.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require python3 bpftool jq ip shuf

ROUNDS=${ROUNDS:-3}
FLOWS=${FLOWS:-10}
NS=ubb$$
SAVED_MAX=$(sysctl -n net.core.rmem_max)
SAVED_DEF=$(sysctl -n net.core.rmem_default)
SAVED_MEM=$(sysctl -n net.ipv4.udp_mem | tr -s '\t ' ' ')
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)
REPS=${REPS:-3}
STORM_SECS=${STORM_SECS:-5}
BASE=${BASE:-}

bench_on_exit "sysctl -q -w net.core.rmem_max=$SAVED_MAX net.core.rmem_default=$SAVED_DEF"
bench_on_exit "sysctl -q -w net.ipv4.udp_mem='$SAVED_MEM'"
bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"
bench_on_exit "ip netns del $NS 2>/dev/null"
bench_plugin "$PLUG" udp_buffer sysctl
if [ -n "$BASE" ]; then
	[ -x "$BASE/bpftune" ] || { echo "no $BASE/bpftune" >&2; exit 1; }
	BUILD=$BASE bench_plugin "$PLUG/base" udp_buffer sysctl
fi
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
start_daemon() { daemon_start "$PLUG" bpftune_udp_fa; }
stop_daemon() { daemon_stop; }

# One round: reset the limits, run the flows; prints "mean_loss last_loss".
round() {
	sysctl -q -w net.core.rmem_max=16384 net.core.rmem_default=16384
	[ "$1" = with ] && start_daemon
	ip netns exec "$NS" python3 "$HERE/udpflood.py" --flows "$FLOWS" >"$WORK/flows.json"
	[ "$1" = with ] && stop_daemon
	jq -s '[(map(.loss) | add / length), (last.loss), (last.rcvbuf)] | @tsv' -r "$WORK/flows.json"
}

declare -A MEAN LAST BUF
for r in $(seq "$ROUNDS"); do
	for mode in without with; do
		read -r m l b < <(round $mode)
		MEAN[$mode]+="$m "; LAST[$mode]+="$l "; BUF[$mode]+="$b "
		echo "round $r $mode: mean loss $m, last-flow loss $l, last rcvbuf $b" >&2
	done
done

# BPF cost during one with-daemon round.
sysctl -q -w kernel.bpf_stats_enabled=1
sysctl -q -w net.core.rmem_max=16384 net.core.rmem_default=16384
start_daemon
ip netns exec "$NS" python3 "$HERE/udpflood.py" --flows "$FLOWS" >/dev/null
PROGS=$(bpftool -j prog show | jq -r '.[] | select(.name | test("^bpftune_(udp_fa|sock_ex)")) | [.name, .run_cnt // 0, .run_time_ns // 0] | @tsv')
stop_daemon
sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"

# 3. Drop storms. One run: $1 = build (new or base), $2 = kind (enobufs or
# enomem); appends "kind build prog calls ns" lines to $WORK/storm.
storm() {
	local build=$1 kind=$2 dir=$PLUG bin=$BUILD sent
	[ "$build" = base ] && { dir=$PLUG/base; bin=$BASE; }
	sysctl -q -w net.core.rmem_max="$SAVED_MAX" net.core.rmem_default="$SAVED_DEF"
	if [ "$kind" = enobufs ]; then
		sysctl -q -w net.ipv4.udp_mem="64 128 256"
	else
		sysctl -q -w net.ipv4.udp_mem="$SAVED_MEM"
	fi
	BUILD=$bin daemon_start "$dir" bpftune_udp_fa --advise
	sysctl -q -w kernel.bpf_stats_enabled=1
	bpftool -j prog show | jq -r '.[] | select(.name | test("^bpftune_(udp_fa|sock_ex)")) |
		[.id, .name, .run_cnt // 0, .run_time_ns // 0] | @tsv' >"$WORK/p0"
	sent=$(ip netns exec "$NS" python3 "$HERE/storm.py" --secs "$STORM_SECS")
	bpftool -j prog show | jq -r '.[] | select(.name | test("^bpftune_(udp_fa|sock_ex)")) |
		[.id, .name, .run_cnt // 0, .run_time_ns // 0] | @tsv' >"$WORK/p1"
	sysctl -q -w kernel.bpf_stats_enabled="$STATS_SAVED"
	daemon_stop
	sysctl -q -w net.ipv4.udp_mem="$SAVED_MEM"
	# The daemon's programs are the newest of each name; delta over the storm.
	join -j1 <(sort "$WORK/p0") <(sort "$WORK/p1") |
		awk -v k="$kind" -v b="$build" '$1 > id[$2] {id[$2] = $1; c[$2] = $6 - $3; t[$2] = $7 - $4}
			END {for (p in id) printf "%s %s %s %d %d\n", k, b, p, c[p], t[p]}' >>"$WORK/storm"
	echo "storm $kind $build: $sent datagrams sent" >&2
}
: >"$WORK/storm"
BUILDS=new
[ -n "$BASE" ] && BUILDS="base new"
for r in $(seq "$REPS"); do
	for kind in enobufs enomem; do
		for b in $(shuf -e $BUILDS); do storm "$b" "$kind"; done
	done
done

echo "## Datagram loss, short-lived flows, rmem_max = rmem_default = 16384 at start ($ROUNDS rounds x $FLOWS flows)"
echo
for mode in without with; do
	echo "$mode daemon:"
	echo "    mean loss per round:   ${MEAN[$mode]} (median $(tr ' ' '\n' <<<"${MEAN[$mode]}" | grep . | median))"
	echo "    last-flow loss:        ${LAST[$mode]} (median $(tr ' ' '\n' <<<"${LAST[$mode]}" | grep . | median))"
	echo "    last-flow sk_rcvbuf:   ${BUF[$mode]}"
done
echo
echo "## BPF run time per invocation (one with-daemon round)"
echo
while IFS=$'\t' read -r name cnt ns; do
	[ -n "$name" ] || continue
	per=$([ "$cnt" -gt 0 ] && echo $((ns / cnt)) || echo -)
	echo "    $name: run_cnt $cnt, run_time_ns $ns, ns per run $per"
done <<<"$PROGS"
echo
echo "## BPF run time per invocation in drop storms (daemon --advise, $REPS x ${STORM_SECS} s per build and storm)"
echo
echo "| storm | build | program | calls per run (median) | ns per call, each run | median ns per call |"
echo "|---|---|---|---|---|---|"
for kind in enobufs enomem; do
	for b in $BUILDS; do
		for prog in $(awk -v k="$kind" -v b="$b" '$1 == k && $2 == b {print $3}' "$WORK/storm" | sort -u); do
			calls=$(awk -v k="$kind" -v b="$b" -v p="$prog" '$1 == k && $2 == b && $3 == p {print $4}' "$WORK/storm" | median)
			per=$(awk -v k="$kind" -v b="$b" -v p="$prog" '$1 == k && $2 == b && $3 == p {print ($4 ? int($5 / $4) : "-")}' "$WORK/storm")
			echo "| $kind | $b | $prog | $calls | $(echo $per) | $(grep -v -- - <<<"$per" | median) |"
		done
	done
done
