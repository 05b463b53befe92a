#!/bin/bash
# bench/verdicts/run.sh: what one reading of the RTT guard costs.
#
# The daemon judges TCP buffer raises by the round-trip time of the
# namespace's active connections, read once a second (only while the
# namespace's tcp_buffer events arrive or a change waits for its verdict)
# with one sock_diag dump of the established TCP sockets. This times
# that dump (bpftune_core::sock_rtt::sample, built as the example
# sock_rtt_cost) in a fresh network namespace holding SOCKETS loopback
# TCP sockets, a tenth of them moving data: wall and CPU time per dump
# (the process's user + system time: the kernel's walk is system time).
#
# Root only (unshare -n). Nothing leaves the namespace, which goes with
# the process.
#
# Usage: bench/verdicts/run.sh   SOCKETS="0 1000 8000 18000" REPEATS=50 OUT=
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SOCKETS=${SOCKETS:-0 1000 8000 18000}
REPEATS=${REPEATS:-50}
OUT=${OUT:-$HERE/RESULTS.md}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -q -p bpftune-core --example sock_rtt_cost)
BIN="$ROOT/target/release/examples/sock_rtt_cost"
ehash=$(sysctl -n net.ipv4.tcp_ehash_entries 2>/dev/null || echo "?")
{
    echo "## Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Kernel $(uname -r), commit $(cd "$ROOT" && git rev-parse --short HEAD), established hash"
    echo "table of $ehash buckets, $(nproc) CPUs; command: \`SOCKETS=\"$SOCKETS\" REPEATS=$REPEATS"
    echo "bench/verdicts/run.sh\`."
    echo
    echo "| sockets | active | wall µs per dump | CPU µs per dump | sockets looked at |"
    echo "|---|---|---|---|---|"
    for n in $SOCKETS; do
        unshare -n sh -c "ip link set lo up && exec '$BIN' $n $REPEATS"
    done
    echo
} | tee -a "$OUT.new"
cat "$OUT.new" >> "$OUT" && rm -f "$OUT.new"
