#!/bin/bash
# bench/idle/run.sh: what the daemon costs when there is nothing to tune.
#
# A daemon runs for months and is idle most of the time, so its idle
# footprint is what every machine pays. With every project tuner staged
# (sysctl tcp_buffer tcp_conn netns ip_frag udp_buffer neigh_table
# net_buffer; not the test fixtures built alongside them), once its BPF
# objects are loaded and WARMUP_SECS have passed, over IDLE_SECS:
#  - resident memory (VmRSS now, VmHWM the peak, start-up included),
#  - CPU time of all its threads (/proc/<pid>/task/*/schedstat),
#  - voluntary context switches per second (wake-ups),
#  - the BPF programs, maps and links it holds (from the fdinfo of its open
#    file descriptors), and its open file descriptors,
#  - function-call interrupts (CAL in /proc/interrupts) on all CPUs: the
#    cost the daemon puts on the rest of the machine (attaching or
#    detaching a tracepoint's program rewrites kernel text, and each
#    rewrite interrupts every CPU), against the same span before it starts.
#
# Root only. No traffic; nothing is changed on the host but what the daemon
# itself may change at start-up on this machine (its log is in the report).
# See ../lib.sh for the rest.
#
# Usage: bench/idle/run.sh [BUILD_DIR]   (default: target/release)
#   IDLE_SECS=60 WARMUP_SECS=5 TUNERS="..." to change the run; OUT= for the
#   report.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require bpftool jq

IDLE_SECS=${IDLE_SECS:-60}
WARMUP_SECS=${WARMUP_SECS:-5}
TUNERS=${TUNERS:-sysctl tcp_buffer tcp_conn netns ip_frag udp_buffer neigh_table net_buffer}
OUT=${OUT:-$HERE/RESULTS.md}

# shellcheck disable=SC2086 # TUNERS is a list of names
bench_plugin "$PLUG" $TUNERS
NTUNERS=$(wc -w <<<"$TUNERS")

# Unique ids behind the daemon's fds: $1 = prog_id, map_id or link_id.
# (A link's fdinfo also names its program, so prog_id covers programs held
# only through a link.)
fd_ids() {
	cat /proc/"$DAEMON_PID"/fdinfo/* 2>/dev/null | awk -v k="$1:" '$1 == k {print $2}' | sort -un
}

# Function-call interrupts so far, all CPUs together.
cal_ipis() {
	awk '$1 == "CAL:" {for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i} END {print s + 0}' /proc/interrupts
}

CAL_B0=$(cal_ipis)
sleep "$IDLE_SECS"
CAL_BASE=$(($(cal_ipis) - CAL_B0))

T0=$(date +%s%N)
daemon_start "$PLUG" bpftune_
# Loaded when the number of programs it holds has not changed for 2 s.
prev=-1
for _ in $(seq 60); do
	now=$(fd_ids prog_id | wc -l)
	[ "$now" = "$prev" ] && break
	prev=$now
	sleep 2
done
LOADED_MS=$((($(date +%s%N) - T0) / 1000000))
sleep "$WARMUP_SECS"

CAL_0=$(cal_ipis)
read -r CPU_MS PER_MIN SHARE WAKE < <(daemon_idle "$IDLE_SECS")
CAL_DAEMON=$(($(cal_ipis) - CAL_0))
RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status")
HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$DAEMON_PID/status")
FDS=$(find "/proc/$DAEMON_PID/fd" -mindepth 1 | wc -l)
fd_ids prog_id >"$WORK/progs"
fd_ids map_id >"$WORK/maps"
NPROGS=$(wc -l <"$WORK/progs")
NMAPS=$(wc -l <"$WORK/maps")
NLINKS=$(fd_ids link_id | wc -l)
PROG_LIST=$(bpftool prog show -j | jq -r --slurpfile ids <(jq -s . "$WORK/progs") \
	'.[] | select(.id as $i | $ids[0] | index($i)) | "\(.name) (\(.type))"' | sort | tr '\n' ',' | sed 's/,$//; s/,/, /g')
MAP_TYPES=$(bpftool map show -j | jq -r --slurpfile ids <(jq -s . "$WORK/maps") \
	'[.[] | select(.id as $i | $ids[0] | index($i)) | .type] | group_by(.) | map("\(length) \(.[0])") | join(", ")')
MAP_KIB=$(bpftool map show -j | jq -r --slurpfile ids <(jq -s . "$WORK/maps") \
	'[.[] | select(.id as $i | $ids[0] | index($i)) | .bytes_memlock // 0] | add / 1024 | floor')
daemon_stop
LOG=$(grep -v 'libbpf:' "$WORK/daemon.log" | sed 's/^/    /')

{
	echo "# Idle daemon benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`bench/idle/run.sh\`"
	echo "(IDLE_SECS=$IDLE_SECS WARMUP_SECS=$WARMUP_SECS), $NTUNERS tuners: $TUNERS."
	echo
	echo "Reproduce (as root, from the repository root):"
	echo
	echo '    cargo build --release --workspace'
	echo "    IDLE_SECS=$IDLE_SECS bench/idle/run.sh target/release"
	echo
	echo "## Footprint over ${IDLE_SECS} s idle, after start-up and ${WARMUP_SECS} s more"
	echo
	echo "| VmRSS (KiB) | VmHWM (KiB) | CPU ms over ${IDLE_SECS} s | CPU ms per minute | share of one CPU (%) | voluntary context switches per s | threads | open fds |"
	echo "|---|---|---|---|---|---|---|---|"
	echo "| $RSS | $HWM | $CPU_MS | $PER_MIN | $SHARE | $WAKE | $THREADS | $FDS |"
	echo
	echo "Function-call interrupts on all $(nproc) CPUs over ${IDLE_SECS} s: ${CAL_BASE} before the daemon"
	echo "started, ${CAL_DAEMON} while it ran idle."
	echo
	echo "Start-up until the set of BPF programs it holds stopped changing: ${LOADED_MS} ms"
	echo "(polled every 2 s, so up to 2 s more than the real time)."
	echo
	echo "## BPF objects it holds"
	echo
	echo "* $NPROGS programs: $PROG_LIST"
	echo "* $NMAPS maps ($MAP_TYPES), ${MAP_KIB} KiB memlock in total"
	echo "* $NLINKS links"
	echo
	echo "Wake-ups are those of all its threads: the event loop's ring buffer and signal fds and"
	echo "the 1 s tuner timer (net_buffer reads /proc/net/softnet_stat and /proc/pressure/cpu on"
	echo "it; see \`bench/net_buffer/RESULTS.md\` for that tuner alone)."
	echo
	echo "## Daemon log (stderr)"
	echo
	if [ -n "$LOG" ]; then echo "$LOG"; else echo "    (empty)"; fi
} >"$OUT"
cat "$OUT"
