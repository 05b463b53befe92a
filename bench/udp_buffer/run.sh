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
#
# Root only. Traffic stays on loopback in a namespace this script creates.
# rmem_max/rmem_default (global) and bpf_stats_enabled are restored on exit.
# Holds the integration-test lock.
#
# Usage: bench/udp_buffer/run.sh [BUILD_DIR]  (default: target/release)
#   ROUNDS=3 FLOWS=10 to change the sizes.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require python3 bpftool jq ip

ROUNDS=${ROUNDS:-3}
FLOWS=${FLOWS:-10}
NS=ubb$$
SAVED_MAX=$(sysctl -n net.core.rmem_max)
SAVED_DEF=$(sysctl -n net.core.rmem_default)
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)

bench_on_exit "sysctl -q -w net.core.rmem_max=$SAVED_MAX net.core.rmem_default=$SAVED_DEF"
bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"
bench_on_exit "ip netns del $NS 2>/dev/null"
bench_plugin "$PLUG" udp_buffer sysctl
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
