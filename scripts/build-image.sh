#!/usr/bin/env bash
# Build the bpftune OCI image offline (no image registry needed): a scratch
# root file system holding exactly the daemon, the tuners and the shared
# libraries `ldd` names for them, imported with `podman import` under the
# OCI labels, with `bpftune -s` (log to stderr) as its entrypoint.
#
#   scripts/build-image.sh [options]
#     --release-dir DIR   daemon binary (bpftune)           [target/release]
#     --stage-dir DIR     tuners as <name>_tuner.so         [target/plugins]
#     --out DIR           rootfs tarball and OCI archive     [target/image]
#     --image NAME        image name (tags :VERSION, :latest) [localhost/bpftune]
#     --version V         image version                      [Cargo.toml]
#     --no-save           do not write the OCI archive (podman save)
#
# The layout is the installed one (Makefile `install`): /usr/sbin/bpftune and
# /usr/lib64/bpftune/<name>_tuner.so, root-owned, no group/other write, so the
# daemon's plugin trust checks pass. Binaries are stripped as the .deb's are.
# Prints the image's size. Needs root (podman's root storage) and podman.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
release_dir=$here/target/release
stage_dir=$here/target/plugins
out=$here/target/image
image=localhost/bpftune
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$here/Cargo.toml")
save=1
while [ $# -gt 0 ]; do
    case $1 in
        --release-dir) release_dir=$2; shift 2 ;;
        --stage-dir) stage_dir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --image) image=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --no-save) save=0; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

die() { echo "build-image.sh: $*" >&2; exit 1; }
command -v podman >/dev/null || die "podman not found (apt-get install podman runc)"
[ "$(id -u)" -eq 0 ] || die "run as root (the image goes to podman's root storage)"
[ -x "$release_dir/bpftune" ] || die "$release_dir/bpftune missing: run 'make stage' first"
shopt -s nullglob
tuners=("$stage_dir"/*_tuner.so)
shopt -u nullglob
[ ${#tuners[@]} -gt 0 ] || die "no tuners in $stage_dir: run 'make stage' first"

license=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license *= *"\(.*\)"/\1/p' "$here/Cargo.toml")
source_url=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository *= *"\(.*\)"/\1/p' "$here/Cargo.toml")
revision=$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)
# Built from a work tree with changes: say so rather than claim the commit.
[ -n "$(git -C "$here" status --porcelain --untracked-files=no 2>/dev/null)" ] && revision=$revision-dirty
# Reproducible timestamps: the commit's time, as SOURCE_DATE_EPOCH wants.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

rootfs=$out/rootfs
rm -rf "$rootfs"
install -d -m 0755 "$rootfs"/usr/sbin "$rootfs"/usr/lib64/bpftune "$rootfs"/etc "$rootfs"/run \
    "$rootfs"/var/lib/bpftune "$rootfs"/proc "$rootfs"/sys "$rootfs"/dev
install -d -m 1777 "$rootfs"/tmp
ln -s ../run "$rootfs"/var/run

install -m 0755 "$release_dir/bpftune" "$rootfs/usr/sbin/bpftune"
for so in "${tuners[@]}"; do
    install -m 0644 "$so" "$rootfs/usr/lib64/bpftune/$(basename "$so")"
done
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$rootfs/usr/sbin/bpftune" "$rootfs"/usr/lib64/bpftune/*_tuner.so

# Every library the dynamic loader resolves for the daemon and the tuners,
# at the path it resolved to (the file itself, not a symlink), plus the
# loader at the path in the binaries' PT_INTERP.
declare -A libs=()
for f in "$rootfs/usr/sbin/bpftune" "$rootfs"/usr/lib64/bpftune/*_tuner.so; do
    while read -r path; do
        libs[$path]=1
    done < <(ldd "$f" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]+ \(/ { print $1 }')
done
interp=$(readelf -l "$release_dir/bpftune" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] && libs[$interp]=1
for lib in "${!libs[@]}"; do
    install -d -m 0755 "$rootfs$(dirname "$lib")"
    install -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done
# Nothing missing: every library the binaries need resolves inside the rootfs.
for f in "$rootfs/usr/sbin/bpftune" "$rootfs"/usr/lib64/bpftune/*_tuner.so; do
    for need in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        found=0
        for lib in "${!libs[@]}"; do [ "$(basename "$lib")" = "$need" ] && found=1; done
        [ $found = 1 ] || die "$(basename "$f") needs $need, which ldd did not resolve"
    done
done
# Enough of /etc for tools that look up names (none of ours need more).
printf 'root:x:0:0:root:/:/usr/sbin/bpftune\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\n' > "$rootfs/etc/group"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

tarball=$out/bpftune-rootfs-$version.tar
tar --create --file "$tarball" --directory "$rootfs" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$epoch" --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .

echo "rootfs: $(du -sh --apparent-size "$rootfs" | cut -f1) in $(find "$rootfs" -type f | wc -l) files:"
(cd "$rootfs" && find . -type f -printf '  /%P\n' | sort)

changes=(
    --change 'ENTRYPOINT ["/usr/sbin/bpftune", "-s"]'
    --change 'CMD []'
    --change 'STOPSIGNAL SIGTERM'
    --change 'WORKDIR /'
    --change 'ENV PATH=/usr/sbin:/usr/bin'
    --change "LABEL org.opencontainers.image.title=bpftune"
    --change "LABEL org.opencontainers.image.description=\"BPF-based auto-tuning of Linux networking sysctls (bpftune-rs daemon and tuners)\""
    --change "LABEL org.opencontainers.image.version=$version"
    --change "LABEL org.opencontainers.image.revision=$revision"
    --change "LABEL org.opencontainers.image.created=$created"
    --change "LABEL org.opencontainers.image.licenses=\"$license\""
    --change "LABEL org.opencontainers.image.source=$source_url"
    --change "LABEL org.opencontainers.image.documentation=$source_url#running-in-a-container-and-on-kubernetes"
)
# The image a rebuild replaces (removed below unless something still uses it).
old_id=$(podman image inspect --format '{{.Id}}' "$image:$version" 2>/dev/null || true)
podman import --quiet "${changes[@]}" \
    --message "bpftune $version ($revision)" "$tarball" "$image:$version" >/dev/null
podman tag "$image:$version" "$image:latest"
new_id=$(podman image inspect --format '{{.Id}}' "$image:$version")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi

if [ $save = 1 ]; then
    archive=$out/bpftune-$version.oci.tar
    rm -f "$archive"
    podman save --quiet --format oci-archive --output "$archive" "$image:$version"
    echo "OCI archive: $archive ($(du -h --apparent-size "$archive" | cut -f1))"
fi
size=$(podman image inspect --format '{{.Size}}' "$image:$version")
echo "image: $image:$version (and :latest), $((size / 1024 / 1024)) MiB ($size bytes)"
