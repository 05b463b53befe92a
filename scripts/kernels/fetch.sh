#!/usr/bin/env bash
# Fetch one Debian generic amd64 kernel and install it where virtme-ng looks:
# image in /boot/vmlinuz-<release>, modules in /lib/modules/<release>.
#
#   scripts/kernels/fetch.sh 5.10|6.1|6.12
#
# Prints the kernel release on stdout (everything else goes to stderr).
# Downloads are cached in $KERNEL_CACHE (default /var/cache/bpftune-kernels):
# once a .deb for the series is there it is reused, without asking the
# network, until KERNELS_REFRESH=1. 6.1 and 6.12 come from the host's own apt
# sources (bookworm); 5.10 comes from Debian 11 (bullseye), through a private
# apt configuration under the cache directory, so the host's apt sources,
# lists and caches are never changed.
set -euo pipefail

series=${1:?usage: fetch.sh 5.10|6.1|6.12}
cache=${KERNEL_CACHE:-/var/cache/bpftune-kernels}
debs=$cache/debs
mkdir -p "$debs"

log() { echo "fetch[$series]: $*" >&2; }

case $series in
    5.10) pattern='^linux-image-5\.10\.0-[0-9]+-amd64$'; private=bullseye ;;
    6.1)  pattern='^linux-image-6\.1\.0-[0-9]+-amd64$'; private= ;;
    6.12) pattern='^linux-image-6\.12\.[0-9]+\+deb12-amd64$'; private= ;;
    *) echo "fetch.sh: unknown kernel series '$series' (5.10, 6.1, 6.12)" >&2; exit 2 ;;
esac

# The generic signed flavour only: -cloud- has no 9p, -rt- is another kernel.
cached_deb() {
    local f
    # shellcheck disable=SC2012
    for f in $(ls -1 "$debs"/linux-image-*_amd64.deb 2>/dev/null | sort -V -r); do
        local name
        name=$(basename "$f"); name=${name%%_*}
        if [[ $name =~ $pattern ]]; then echo "$f"; return 0; fi
    done
    return 1
}

apt_opts=()
if [ -n "$private" ]; then
    # A private apt root for Debian 11: sources, lists and caches of its own.
    adir=$cache/apt-$private
    mkdir -p "$adir/sources.list.d" "$adir/lists/partial" "$adir/cache/archives/partial"
    cat > "$adir/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $private main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $private-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security $private-security main
SRC
    apt_opts=(-o "Dir::Etc::SourceList=$adir/sources.list"
              -o "Dir::Etc::SourceParts=$adir/sources.list.d"
              -o "Dir::State::Lists=$adir/lists"
              -o "Dir::Cache=$adir/cache"
              -o "Dir::Cache::pkgcache=$adir/cache/pkgcache.bin"
              -o "Dir::Cache::srcpkgcache=$adir/cache/srcpkgcache.bin"
              -o "APT::Update::Post-Invoke-Success::="
              -o "APT::Update::Post-Invoke::="
              -o "Acquire::Languages=none")
fi

deb=$(cached_deb || true)
if [ -z "$deb" ] || [ "${KERNELS_REFRESH:-0}" = 1 ]; then
    if [ -n "$private" ]; then
        log "updating the private apt lists for $private in $adir"
        apt-get "${apt_opts[@]}" -qq update >&2
    elif ! apt-cache search --names-only "${pattern%$}" 2>/dev/null | grep -q .; then
        log "no $series kernel in the host's apt lists; running apt-get update"
        apt-get -qq update >&2
    fi
    pkg=$(apt-cache "${apt_opts[@]}" search --names-only "${pattern%$}" | awk '{print $1}' \
          | grep -E "$pattern" | sort -V | tail -n 1 || true)
    [ -n "$pkg" ] || { log "no package matches $pattern"; exit 1; }
    if [ -z "$deb" ] || [ "$(basename "${deb%%_*}")" != "$pkg" ]; then
        log "downloading $pkg"
        (cd "$debs" && apt-get "${apt_opts[@]}" -o APT::Sandbox::User=root -qq download "$pkg" >&2)
    fi
    deb=$(cached_deb)
fi

pkg=$(basename "$deb"); pkg=${pkg%%_*}
release=${pkg#linux-image-}
log "$pkg ($(basename "$deb"))"

if [ ! -f "/boot/vmlinuz-$release" ] || [ ! -f "/lib/modules/$release/modules.dep" ] \
   || [ ! -d "/lib/modules/$release/kernel" ]; then
    tmp=$(mktemp -d "$cache/unpack.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    dpkg-deb -x "$deb" "$tmp"
    moddir=
    for d in "$tmp/lib/modules/$release" "$tmp/usr/lib/modules/$release"; do
        [ -d "$d" ] && moddir=$d
    done
    [ -n "$moddir" ] || { log "no modules for $release in $deb"; exit 1; }
    [ -f "$tmp/boot/vmlinuz-$release" ] || { log "no /boot/vmlinuz-$release in $deb"; exit 1; }
    install -d -m 0755 /boot /lib/modules
    rm -rf "/lib/modules/$release"
    cp -a "$moddir" "/lib/modules/$release"
    cp -a "$tmp/boot/." /boot/
    depmod "$release"
    log "installed /boot/vmlinuz-$release and /lib/modules/$release"
fi
echo "$release"
