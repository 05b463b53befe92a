#!/bin/bash
# bench/ip_frag/run.sh: per-invocation cost of the ip_frag tuner's BPF
# program (tp_btf/netif_receive_skb) under three kinds of received traffic,
# measured with kernel.bpf_stats_enabled (restored afterwards).
#
# Usage (root): bench/ip_frag/run.sh [BUILD_DIR]   (default target/release)
# Needs: bpftune, libip_frag_tuner.so in BUILD_DIR; bpftool, jq, iperf3,
# python3, ethtool. Traffic stays between two namespaces made here.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require bpftool jq iperf3 python3 ethtool ip

SECS=${SECS:-3}
TAG=ipfb$$
TX=$TAG-tx
RX=$TAG-rx
STATS_SAVED=$(sysctl -n kernel.bpf_stats_enabled)

bench_on_exit "sysctl -q -w kernel.bpf_stats_enabled=$STATS_SAVED"
bench_plugin "$PLUG" ip_frag
bench_netns_pair "$TAG" 10.251.7
ip netns exec "$TX" ethtool -K "${TAG}a" gro off tso off gso off >/dev/null
ip netns exec "$RX" ethtool -K "${TAG}b" gro off tso off gso off >/dev/null

daemon_start "$PLUG" bpftune_ip_frag_rcv
sysctl -q -w kernel.bpf_stats_enabled=1

prog_stats() {
	# The newest program of that name is the one our daemon loaded.
	bpftool prog show -j | jq -r \
		'[.[] | select(.name == "bpftune_ip_frag_rcv")] | max_by(.id) | "\(.run_cnt // 0) \(.run_time_ns // 0)"'
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

printf '| traffic | sent | run_cnt | run_time_ns | ns per invocation |\n|---|---|---|---|---|\n'
for phase in "tcp bulk (no fragments)" "udp 1000 B (no fragments)" "udp 8192 B (6 fragments each)"; do
	read -r c0 t0 < <(prog_stats)
	case $phase in
	tcp*) sent="$(tcp) bytes" ;;
	"udp 1000"*) sent="$(udp 1000) datagrams" ;;
	*) sent="$(udp 8192) datagrams" ;;
	esac
	read -r c1 t1 < <(prog_stats)
	dc=$((c1 - c0)); dt=$((t1 - t0))
	printf '| %s | %s | %d | %d | %s |\n' "$phase" "$sent" "$dc" "$dt" "$([ "$dc" -gt 0 ] && echo $((dt / dc)) || echo -)"
done
