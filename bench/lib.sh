# bench/lib.sh: what every benchmark script needs, sourced by bench/*/run.sh.
#
# After `. "$(dirname "$0")/../lib.sh"` a script has:
#   ROOT, BUILD (argument 1, $BPFTUNE_BUILD_DIR or target/release), WORK (a
#   private temporary directory), PLUG (a root-owned 0755 plugin directory
#   the daemon accepts), and these functions:
#   bench_require TOOL...        exit unless every tool is installed
#   bench_on_exit CMD            run CMD at exit (last added runs first, so
#                                register teardown before what it needs)
#   bench_plugin DIR NAME...     stage lib<NAME>_tuner.so as <NAME>_tuner.so
#   bench_netns_pair TAG NET     namespaces TAG-tx and TAG-rx joined by veth
#                                TAGa (NET.1) / TAGb (NET.2), removed at exit
#   daemon_start DIR PROG [ARGS] start bpftune on plugin dir DIR; ready once it
#                                loaded a BPF program whose name starts with
#                                PROG, then waits SETTLE_SECS (default 0.5 s;
#                                the daemon itself is idle again within that,
#                                but runs started right after it sometimes
#                                measured slower)
#   newest_prog_id PROG          highest id of such a program (0: none)
#   daemon_stop                  SIGINT and wait; the log stays in $WORK/daemon.log
#   daemon_cpu_ms                CPU time of the running daemon's threads so far
#   daemon_wakeups               their voluntary context switches so far
#   daemon_idle SECS             sleep SECS, then print the daemon's CPU ms over
#                                them, ms per minute, % of one CPU, wake-ups/s
#   median, mean, quartiles      of numbers on stdin, one per line
#   median_ci                    "lo-hi": a 95 % bootstrap interval for the
#                                median of the numbers on stdin (fixed seed)
#   paired WITHOUT WITH          each "with" run divided by the mean of the
#                                "without" runs just before and after it
# Sourcing it re-executes the script under the integration-test lock, so a
# benchmark never runs beside a test's daemon (or another benchmark).
# Everything is restored or removed at exit, also after a failure, including
# the daemon's run and state directories if they did not exist before.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-${BPFTUNE_BUILD_DIR:-$ROOT/target/release}}
DAEMON_PID=
BENCH_EXIT=()
SETTLE_SECS=${SETTLE_SECS:-0.5}

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$BUILD/bpftune" ] || { echo "no $BUILD/bpftune: cargo build --release first" >&2; exit 1; }

bench_require() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || { echo "missing $t (scripts/install-deps.sh installs it)" >&2; exit 1; }
	done
}

bench_on_exit() { BENCH_EXIT=("$1" "${BENCH_EXIT[@]}"); }

# The daemon's run and state directories: removed at exit if the benchmark
# created them (its namespaces, and with them whatever the journal recorded
# for them, are gone by then), like the integration tests' lock does.
BENCH_DAEMON_DIRS=()
for d in /var/run/bpftune /var/lib/bpftune; do
	[ -e "$d" ] || BENCH_DAEMON_DIRS+=("$d")
done

bench_cleanup() {
	local cmd
	daemon_stop
	for cmd in "${BENCH_EXIT[@]}"; do eval "$cmd" || true; done
	rm -rf "$PLUG" "$WORK"
	[ ${#BENCH_DAEMON_DIRS[@]} -eq 0 ] || rm -rf "${BENCH_DAEMON_DIRS[@]}"
}

bench_plugin() {
	local dir=$1 name
	shift
	install -d -m 0755 "$dir"
	for name in "$@"; do
		install -m 0644 "$BUILD/lib${name}_tuner.so" "$dir/${name}_tuner.so"
	done
}

# Highest id of a loaded BPF program whose name starts with $1 (0: none).
newest_prog_id() {
	bpftool prog show -j 2>/dev/null |
		jq --arg p "$1" '[.[] | select(.name | startswith($p)) | .id] | max // 0'
}

daemon_start() {
	local dir=$1 prog=$2 before
	shift 2
	before=$(newest_prog_id "$prog")
	"$BUILD/bpftune" -s --system-libdir "$dir" -l "$dir" "$@" >"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 300); do
		if [ "$(newest_prog_id "$prog")" -gt "$before" ]; then
			sleep "$SETTLE_SECS"
			return 0
		fi
		kill -0 "$DAEMON_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "daemon did not start:" >&2
	grep -v 'libbpf:' "$WORK/daemon.log" >&2 || true
	exit 1
}

# Two namespaces, $1-tx and $1-rx, joined by a veth pair ($1a in tx with
# $2.1/24, $1b in rx with $2.2/24), loopback up in both. At exit the
# processes left in them are killed and both are deleted.
bench_netns_pair() {
	local tag=$1 net=$2 tx=$1-tx rx=$1-rx
	bench_on_exit "ip netns del $tx 2>/dev/null"
	bench_on_exit "ip netns del $rx 2>/dev/null"
	# Registered last, so it runs first: while the namespaces still exist.
	bench_on_exit "ip netns pids $tx 2>/dev/null | xargs -r kill 2>/dev/null"
	bench_on_exit "ip netns pids $rx 2>/dev/null | xargs -r kill 2>/dev/null"
	ip netns add "$tx"
	ip netns add "$rx"
	ip link add "${tag}a" type veth peer name "${tag}b"
	ip link set "${tag}a" netns "$tx"
	ip link set "${tag}b" netns "$rx"
	ip -n "$tx" addr add "$net.1/24" dev "${tag}a"
	ip -n "$rx" addr add "$net.2/24" dev "${tag}b"
	for ns in "$tx" "$rx"; do ip -n "$ns" link set lo up; done
	ip -n "$tx" link set "${tag}a" up
	ip -n "$rx" link set "${tag}b" up
}

daemon_stop() {
	if [ -n "$DAEMON_PID" ]; then
		kill -INT "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
		DAEMON_PID=
	fi
}

daemon_cpu_ms() {
	cat /proc/"$DAEMON_PID"/task/*/schedstat | awk '{ns += $1} END {printf "%.1f\n", ns / 1e6}'
}
daemon_wakeups() {
	cat /proc/"$DAEMON_PID"/task/*/status | awk '/^voluntary_ctxt_switches:/ {n += $2} END {print n}'
}
daemon_idle() {
	local c0 w0
	c0=$(daemon_cpu_ms)
	w0=$(daemon_wakeups)
	sleep "$1"
	awk -v a="$c0" -v b="$(daemon_cpu_ms)" -v w0="$w0" -v w1="$(daemon_wakeups)" -v s="$1" \
		'BEGIN {printf "%.1f %.1f %.3f %.2f\n", b - a, (b - a) * 60 / s, (b - a) / s / 10, (w1 - w0) / s}'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
mean() { awk '{s+=$1} END {if (NR) printf "%.4f\n", s/NR}'; }
# "q1-q3" of numbers on stdin: the spread of the middle half.
quartiles() { sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.3f-%.3f\n", a[int((NR+3)/4)], a[int((3*NR+1)/4)]}'; }
median_ci() {
	python3 -c '
import random, statistics, sys
xs = [float(l) for l in sys.stdin if l.strip()]
rng = random.Random(1)
ms = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(4000))
print("%.3f-%.3f" % (ms[int(0.025 * len(ms))], ms[int(0.975 * len(ms)) - 1]))'
}
paired() {
	paste -d' ' "$1" <(tail -n +2 "$1") | head -n "$(wc -l <"$2")" | paste -d' ' - "$2" |
		awk '{printf "%.4f\n", $3 / (($1 + $2) / 2)}'
}

if [ -z "${BENCH_LOCKED:-}" ]; then
	mkdir -p -m 0755 /run/bpftune-tests
	# -o: the lock's fd is not inherited, so a server the script starts in
	# the background cannot keep holding the lock after the script ends.
	exec env BENCH_LOCKED=1 flock -o /run/bpftune-tests/lock "$0" "$@"
fi
WORK=$(mktemp -d)
PLUG=/run/bpftune-bench-$$
trap bench_cleanup EXIT
