#!/usr/bin/env bash
# Print the tests that skipped because the kernel lacks a feature (each
# wrote one "SKIP <test>: <feature>" line to the file given), and their
# count, after `cargo test`: a skip is never silent.
set -euo pipefail
log=${1:?usage: report-skips.sh SKIP_LOG}
if [[ -s $log ]]; then
	echo "tests skipped for lack of a kernel feature: $(wc -l < "$log")"
	sed 's/^/  /' "$log"
else
	echo "tests skipped for lack of a kernel feature: 0"
fi
