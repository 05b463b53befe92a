#!/usr/bin/env bash
# `make test-kernels`: run bpftune's kernel checks on Debian's 5.10, 6.1 and
# 6.12 kernels, each booted with virtme-ng under QEMU (TCG: no KVM needed),
# and on the running kernel ("host"); print a table kernel x check and write
# it to docs/kernels.md.
#
#   KERNELS="5.10 6.1 6.12 host" scripts/test-kernels.sh
#
# Uses the release build as it is: target/release/bpftune, the tuners staged
# in target/plugins (`make stage`) and the integration test binaries in
# target/release/deps (`cargo test --workspace --release --no-run`); `make
# test-kernels` builds all three first. They are copied to a snapshot
# (target/kernels/build) so a rebuild during the run cannot mix versions.
#
# Per kernel: (a) `bpftune -S`; (b) the daemon with every staged tuner for
# KT_DAEMON_SECS (20) seconds, then SIGTERM, tuners loaded/failed read from
# its log; (c) the integration test binaries (KT_TESTS), each run directly
# with --test-threads=1 under a timeout. Results and logs: target/kernels/<kernel>/.
#
# Environment:
#   KERNELS            kernels to run (default "5.10 6.1 6.12 host")
#   KT_TESTS           test binaries to run (default "all"; "none")
#   KT_TESTS_EXCLUDE   left out of "all" (default "packaging service image metrics")
#   KT_SKIP_VM, KT_SKIP_HOST  single tests left out, "binary:test_name ..."
#   KT_TEST_TIMEOUT    seconds per test binary in a VM (default 900)
#   KT_HOST_TEST_TIMEOUT  seconds per test binary on the host (default 900)
#   KT_DAEMON_SECS     daemon run length (default 20)
#   KT_MEMORY, KT_CPUS guest size (default 4G, 2)
#   KT_OUT             results and the build snapshot (default target/kernels;
#                      a root-owned path: the daemon refuses plugins under /tmp)
#   KT_DOC             results file (default docs/kernels.md; "none": no doc)
#   KERNEL_CACHE       download cache (default /var/cache/bpftune-kernels)
#   KERNELS_REFRESH=1  look for newer kernel packages than the cached ones
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(pwd)

KERNELS=${KERNELS:-"5.10 6.1 6.12 host"}
target=${CARGO_TARGET_DIR:-$tree/target}
out=${KT_OUT:-$target/kernels}
doc=${KT_DOC:-docs/kernels.md}
memory=${KT_MEMORY:-4G}
cpus=${KT_CPUS:-2}
daemon_secs=${KT_DAEMON_SECS:-20}
vm_timeout=${KT_TEST_TIMEOUT:-900}
host_timeout=${KT_HOST_TEST_TIMEOUT:-900}
# Test binaries run by default: every one that loads BPF into the kernel
# under test. Left out: packaging (builds rpm/deb packages: nothing
# kernel-specific, and the guest's source tree is read-only) and service
# (`make install` into / and the init script: the host's business, covered
# by `make test`). Timings under TCG are in docs/kernels.md.
tests=${KT_TESTS:-all}
tests_exclude=${KT_TESTS_EXCLUDE:-packaging service image metrics}
# Single tests left out, binary:name (libtest --skip), with the reason in
# scripts/kernels/report.py: the out-of-tree sample build runs cargo, which
# needs a writable tree and takes many minutes under TCG.
skip_vm=${KT_SKIP_VM:-operations:sample_tuner_builds_out_of_tree_and_runs_end_to_end}
skip_host=${KT_SKIP_HOST:-}

say() { echo "test-kernels: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "run as root (loads BPF, boots VMs, installs kernels)"; exit 1; }

want_vm=no
for k in $KERNELS; do
    case $k in
        5.10|6.1|6.12) want_vm=yes ;;
        host) ;;
        *) say "unknown kernel '$k' (choose from 5.10 6.1 6.12 host)"; exit 2 ;;
    esac
done

# --- tools ------------------------------------------------------------------
if [ $want_vm = yes ]; then
    # busybox builds virtme-ng's initramfs (9p and virtio are modules in
    # Debian's kernels); kmod for depmod/modprobe.
    ./scripts/install-deps.sh qemu-system-x86 kmod busybox-static
    if ! command -v vng >/dev/null; then
        say "installing virtme-ng from PyPI"
        if ! python3 -m pip --version >/dev/null 2>&1; then ./scripts/install-deps.sh python3-pip; fi
        python3 -m pip install -q virtme-ng 2>/dev/null \
            || python3 -m pip install -q --break-system-packages virtme-ng
        hash -r
        command -v vng >/dev/null || { say "vng not on PATH after pip install virtme-ng"; exit 1; }
    fi
fi

# --- the build under test ---------------------------------------------------
rel=$target/release
[ -x "$rel/bpftune" ] || { say "$rel/bpftune missing: run make stage"; exit 1; }
ls "$target"/plugins/*_tuner.so >/dev/null 2>&1 || { say "$target/plugins empty: run make stage"; exit 1; }
for p in "$target"/plugins/*_tuner.so; do
    n=$(basename "$p")
    if ! cmp -s "$p" "$rel/lib$n"; then
        say "$p differs from $rel/lib$n: the staging is stale, run make stage"; exit 1
    fi
done

# Newest binary of each integration test (target/release/deps/<name>-<hash>).
declare -A test_bin=()
for src in tests/tests/*.rs; do
    name=$(basename "$src" .rs)
    bin=$(find "$rel/deps" -maxdepth 1 -type f -executable -regextype posix-extended \
              -regex ".*/${name}-[0-9a-f]{16}" -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n 1 | cut -d' ' -f2-)
    if [ -n "$bin" ]; then test_bin[$name]=$bin; else say "no test binary for $src (cargo test --workspace --release --no-run)"; fi
done

# The daemon refuses plugins below a group- or world-writable directory, so
# the snapshot (and with it KT_OUT) must live in a root-owned tree: not /tmp.
mkdir -p "$out"
d=$(cd "$out" && pwd)
while [ "$d" != / ]; do
    if [ -n "$(find "$d" -maxdepth 0 -perm /022 ! -type l)" ]; then
        say "$d is group- or world-writable: the daemon would refuse plugins below it; choose another KT_OUT"; exit 1
    fi
    d=$(dirname "$d")
done
snap=$out/build
say "snapshot of the build in $snap"
rm -rf "$snap"
install -d -m 0755 "$snap" "$snap/deps" "$snap/plugins"
cp -p "$rel/bpftune" "$snap/"
cp -p "$rel"/lib*_tuner.so "$snap/"
cp -p "$target"/plugins/*_tuner.so "$snap/plugins/"
chmod 0644 "$snap"/plugins/*
for name in "${!test_bin[@]}"; do cp -p "${test_bin[$name]}" "$snap/deps/$name"; done
# What each test binary was built from, for the record.
for name in $(printf '%s\n' "${!test_bin[@]}" | sort); do
    echo "$name $(basename "${test_bin[$name]}") $(date -r "${test_bin[$name]}" '+%F %T')"
done > "$snap/tests.txt"
git -C "$tree" describe --always --dirty > "$snap/commit.txt" 2>/dev/null || echo unknown > "$snap/commit.txt"

test_specs() { # names to run -> "name=path ..." for the binaries we have
    local list=$tests specs=() n
    if [ "$list" = all ]; then
        list=$(printf '%s\n' "${!test_bin[@]}" | sort | grep -vxF -f <(tr ' ' '\n' <<< "$tests_exclude") || true)
    fi
    [ "$list" = none ] && list=
    for n in $list; do
        if [ -n "${test_bin[$n]:-}" ]; then specs+=("$n=$snap/deps/$n"); else say "no test binary '$n'"; fi
    done
    echo "${specs[*]:-}"
}

# --- run --------------------------------------------------------------------
mkdir -p "$out"
for k in $KERNELS; do
    dir=$out/$k
    rm -rf "$dir"; mkdir -p "$dir/guest"
    start=$(date +%s)
    if [ "$k" = host ]; then
        release=$(uname -r)
        specs=$(test_specs)
        {
            echo "label=$k"; echo "release=$release"; echo "mode=host"; echo "start=$start"
            echo "build=$(cat "$snap/commit.txt")"
            echo "tests=$specs"; echo "test_timeout=$host_timeout"; echo "skip=$skip_host"
        } > "$dir/meta"
        say "$k ($release): checks on the running kernel"
        rc=0
        KT_MODE=host KT_TREE=$tree KT_DAEMON_SECS=$daemon_secs KT_TEST_SPECS="$specs" \
            KT_TEST_TIMEOUT=$host_timeout KT_SKIP="$skip_host" KT_BIN=$snap/bpftune KT_PLUGINS=$snap/plugins \
            ./scripts/kernels/checks.sh "$dir/guest" > "$dir/console.log" 2>&1 || rc=$?
        echo "rc=$rc" >> "$dir/meta"
    else
        release=$(./scripts/kernels/fetch.sh "$k")
        specs=$(test_specs)
        n=$(wc -w <<< "$specs")
        # Boot (~15 s) + -S + the daemon run + every test binary's timeout.
        budget=$(( 300 + daemon_secs + n * (vm_timeout + 40) ))
        {
            echo "label=$k"; echo "release=$release"; echo "mode=vm"; echo "start=$start"
            echo "build=$(cat "$snap/commit.txt")"
            echo "tests=$specs"; echo "test_timeout=$vm_timeout"; echo "skip=$skip_vm"; echo "budget=$budget"
        } > "$dir/meta"
        say "$k ($release): booting with virtme-ng (TCG), at most ${budget}s"
        # The settings go in a file the guest reads (checks.sh): on the
        # kernel command line, which carries --exec, they would outgrow its
        # 2048 bytes as tests are added, and the guest would hang at boot.
        mkdir -p "$dir/guest"
        {
            printf 'export KT_MODE=vm KT_TREE=%q KT_DAEMON_SECS=%q KT_TEST_TIMEOUT=%q\n' "$tree" "$daemon_secs" "$vm_timeout"
            printf 'export KT_TEST_SPECS=%q KT_SKIP=%q KT_BIN=%q KT_PLUGINS=%q\n' "$specs" "$skip_vm" "$snap/bpftune" "$snap/plugins"
        } > "$dir/guest/settings.sh"
        rc=0
        timeout -k 30 "$budget" vng --verbose --run "/boot/vmlinuz-$release" --disable-kvm --force-9p \
            --memory "$memory" --cpus "$cpus" --rwdir "$dir/guest" \
            --exec "bash $tree/scripts/kernels/checks.sh $dir/guest" \
            < /dev/null > "$dir/console.log" 2>&1 || rc=$?
        # vng's own exit status is 255 when the guest has no virtio-serial
        # (Debian's kernels build it as a module); completion is read from
        # the guest's "done" file instead.
        echo "rc=$rc" >> "$dir/meta"
    fi
    end=$(date +%s)
    echo "end=$end" >> "$dir/meta"
    say "$k: $(( end - start )) s"
    python3 scripts/kernels/report.py --out "$out" --only "$k" >&2 || true
done

# --- report -----------------------------------------------------------------
args=(--out "$out")
[ "$doc" != none ] && args+=(--doc "$doc")
python3 scripts/kernels/report.py "${args[@]}"
