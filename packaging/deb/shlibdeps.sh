#!/bin/sh
# shlibdeps.sh ROOT: print the Depends: value for the ELF files in a staged
# package root, from dpkg-shlibdeps (which needs a debian/control to run
# in), or a fixed list if that fails.
set -u
root=$1
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debian"
printf 'Source: bpftune\n\nPackage: bpftune\nArchitecture: any\n' > "$tmp/debian/control"
files=$(find "$root" -path "$root/DEBIAN" -prune -o -type f \( -name '*.so' -o -path '*/sbin/*' \) -print)
deps=""
if [ -n "$files" ] && command -v dpkg-shlibdeps >/dev/null 2>&1; then
	# shellcheck disable=SC2086 # one argument per file
	deps=$(cd "$tmp" && dpkg-shlibdeps -O $(printf -- '-e%s ' $files) 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
fi
[ -n "$deps" ] || deps="libc6 (>= 2.34), libelf1, libgcc-s1, zlib1g"
printf '%s\n' "$deps"
