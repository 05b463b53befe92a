#!/bin/bash
# bench/metrics/run.sh: what the metrics outputs cost an idle daemon, and
# what one scrape costs.
#
# The issue's bar: with the metrics listener on, the idle daemon stays
# within 10 % of its CPU and wake-ups without it. With every project tuner
# staged, ROUNDS rounds alternate a daemon without metrics options, one
# with `--metrics-listen 127.0.0.1:PORT`, and one with that and
# `--metrics-textfile FILE` (rewritten every 5 s on the tick grid); each
# run waits WARMUP_SECS after start-up and measures IDLE_SECS (lib.sh
# daemon_idle).
# Then, with metrics on, SCRAPES scrapes over HTTP and SCRAPES by
# `-q metrics`: the daemon's CPU per scrape and the size of the text.
#
# Root only; nothing is scraped during the idle runs.
# Usage: bench/metrics/run.sh [BUILD_DIR]
#   ROUNDS=3 IDLE_SECS=30 WARMUP_SECS=5 SCRAPES=200 PORT=9559 OUT=...
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
bench_require bpftool jq curl

ROUNDS=${ROUNDS:-3}
IDLE_SECS=${IDLE_SECS:-30}
WARMUP_SECS=${WARMUP_SECS:-5}
SCRAPES=${SCRAPES:-200}
PORT=${PORT:-9559}
TUNERS=${TUNERS:-sysctl tcp_buffer tcp_conn netns ip_frag udp_buffer neigh_table net_buffer}
OUT=${OUT:-$HERE/RESULTS.md}
TEXTFILE=$WORK/bpftune.prom

# shellcheck disable=SC2086 # TUNERS is a list of names
bench_plugin "$PLUG" $TUNERS

# One idle run: "cpu_ms_per_min wakeups_per_s"; $@ = extra daemon options.
idle_run() {
	daemon_start "$PLUG" bpftune_ "$@"
	sleep "$WARMUP_SECS"
	local cpu per share wake
	read -r cpu per share wake < <(daemon_idle "$IDLE_SECS")
	daemon_stop
	echo "$per $wake"
}

# Three kinds of run, alternating: none (no metrics options), listen
# (--metrics-listen), textfile (--metrics-listen and --metrics-textfile).
LISTEN=(--metrics-listen "127.0.0.1:$PORT")
TEXT=(--metrics-listen "127.0.0.1:$PORT" --metrics-textfile "$TEXTFILE")
: >"$WORK/none"
: >"$WORK/listen"
: >"$WORK/textfile"
for r in $(seq "$ROUNDS"); do
	idle_run >>"$WORK/none"
	idle_run "${LISTEN[@]}" >>"$WORK/listen"
	idle_run "${TEXT[@]}" >>"$WORK/textfile"
	echo "round $r: none $(tail -1 "$WORK/none"), listen $(tail -1 "$WORK/listen"), textfile $(tail -1 "$WORK/textfile")" >&2
done
idle_run >>"$WORK/none"
for k in none listen textfile; do
	awk '{print $1}' "$WORK/$k" >"$WORK/$k.cpu"
	awk '{print $2}' "$WORK/$k" >"$WORK/$k.wake"
done
# "median cpu | median wake | paired cpu ratio | paired wake ratio" of kind
# $1 (medians: one run that something outside woke more is not the mean).
row() {
	local cpu wake
	cpu=$(median <"$WORK/$1.cpu")
	wake=$(median <"$WORK/$1.wake")
	if [ "$1" = none ]; then
		echo "$cpu | $wake | 1 | 1"
	else
		echo "$cpu | $wake | $(paired "$WORK/none.cpu" "$WORK/$1.cpu" | median) | $(paired "$WORK/none.wake" "$WORK/$1.wake" | median)"
	fi
}

# Scrape cost, metrics on.
daemon_start "$PLUG" bpftune_ --metrics-listen "127.0.0.1:$PORT" --metrics-textfile "$TEXTFILE"
sleep "$WARMUP_SECS"
c0=$(daemon_cpu_ms)
for _ in $(seq "$SCRAPES"); do curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics"; done
c1=$(daemon_cpu_ms)
for _ in $(seq "$SCRAPES"); do "$BUILD/bpftune" -q metrics >/dev/null; done
c2=$(daemon_cpu_ms)
HTTP_MS=$(awk -v a="$c0" -v b="$c1" -v n="$SCRAPES" 'BEGIN {printf "%.3f", (b - a) / n}')
QUERY_MS=$(awk -v a="$c1" -v b="$c2" -v n="$SCRAPES" 'BEGIN {printf "%.3f", (b - a) / n}')
BYTES=$(curl -s "http://127.0.0.1:$PORT/metrics" | wc -c)
SERIES=$(curl -s "http://127.0.0.1:$PORT/metrics" | grep -vc '^#')
daemon_stop

{
	echo "# Metrics benchmark results"
	echo
	echo "Measured $(date -u +%Y-%m-%d) on $(uname -r), $(nproc) cores, with \`bench/metrics/run.sh\`"
	echo "(ROUNDS=$ROUNDS IDLE_SECS=$IDLE_SECS WARMUP_SECS=$WARMUP_SECS SCRAPES=$SCRAPES), $(wc -w <<<"$TUNERS") tuners: $TUNERS."
	echo
	echo "Reproduce (as root, from the repository root):"
	echo
	echo '    cargo build --release --workspace'
	echo "    ROUNDS=$ROUNDS IDLE_SECS=$IDLE_SECS bench/metrics/run.sh target/release"
	echo
	echo "## Idle: no metrics options, \`--metrics-listen\`, and \`--metrics-listen\` with \`--metrics-textfile\`"
	echo
	echo "Runs alternate (none, listen, textfile, none, …); each listen or textfile run is divided by"
	echo "the mean of the \"none\" runs just before and after its round; medians of runs and ratios."
	echo
	echo "| | CPU ms per minute | voluntary context switches per s | CPU / none (paired) | wake-ups / none (paired) |"
	echo "|---|---|---|---|---|"
	echo "| none (median of $((ROUNDS + 1))) | $(row none) |"
	echo "| listen (median of $ROUNDS) | $(row listen) |"
	echo "| listen + textfile every 5 s (median of $ROUNDS) | $(row textfile) |"
	echo
	for k in none listen textfile; do
		echo "Per run, $k (CPU ms per minute, wake-ups per s): $(tr '\n' ';' <"$WORK/$k" | sed 's/;$//; s/;/; /g')"
		echo
	done
	echo "## One scrape"
	echo
	echo "| | daemon CPU ms per scrape |"
	echo "|---|---|"
	echo "| GET /metrics (curl, 0.0.4 text) | $HTTP_MS |"
	echo "| bpftune -q metrics (OpenMetrics) | $QUERY_MS |"
	echo
	echo "The text was $BYTES bytes, $SERIES samples."
} >"$OUT"
cat "$OUT"
