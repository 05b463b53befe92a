#!/usr/bin/env bash
# Print the path of a promtool, for the metrics tests (tests/tests/metrics.rs
# runs `promtool check metrics` on what GET /metrics serves). Uses promtool
# from PATH if there is one; else unpacks Debian's prometheus package into
# a cache directory without installing it (installing it would start a
# Prometheus server on the machine) and prints the promtool in there.
set -euo pipefail
if command -v promtool >/dev/null; then
    command -v promtool
    exit 0
fi
CACHE=${PROMTOOL_CACHE:-/var/cache/bpftune-promtool}
TOOL=$CACHE/usr/bin/promtool
if [ ! -x "$TOOL" ]; then
    command -v apt-get >/dev/null || { echo "no promtool and no apt-get to fetch Debian's prometheus package" >&2; exit 1; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    chmod 0755 "$work"
    cd "$work"
    if ! apt-get download -qq prometheus >/dev/null 2>&1; then
        apt-get update -qq
        apt-get download -qq prometheus >/dev/null
    fi
    rm -rf "$CACHE.new"
    mkdir -p "$CACHE.new"
    dpkg-deb -x prometheus_*.deb "$CACHE.new"
    rm -rf "$CACHE"
    mv "$CACHE.new" "$CACHE"
fi
echo "$TOOL"
