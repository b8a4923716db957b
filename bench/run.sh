#!/usr/bin/env bash
# Benchmarks for the walking skeleton, printed, never asserted:
#   - boot-to-agent-ready time of the guest under QEMU (as kiln reports it), over N boots;
#   - wall time of building examples/hello with kiln vs `buildah bud` of the same Dockerfile
#     and context, measured in this same run, and their ratio.
# Usage: bench/run.sh [RUNS]   (needs the README's setup; installs buildah if absent)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-3}"
kiln="$repo/target/release/kiln"
(cd "$repo" && cargo build -q --release --locked -p kiln-cli)  # incremental: cheap when up to date
if ! command -v buildah >/dev/null; then
    sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq buildah >/dev/null
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ctx="$work/ctx"
mkdir -p "$ctx"
cp -r "$repo/examples/hello/." "$ctx/"
cp /bin/busybox "$ctx/busybox"

now() { date +%s.%N; }
kiln_times=(); boot_times=(); buildah_times=(); kiln_cached=(); buildah_cached=()
for i in $(seq 1 "$runs"); do
    export KILN_ROOT="$work/kiln-store-$i"
    t0=$(now)
    "$kiln" build -t bench/hello "$ctx" 2>"$work/kiln.log"
    t1=$(now)
    kiln_times+=("$(echo "$t1 - $t0" | bc)")
    boot_times+=("$(sed -n 's/.*booted in \([0-9.]*\) s.*/\1/p' "$work/kiln.log" | head -1)")

    store="$work/buildah-$i"
    t0=$(now)
    buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs \
        bud --isolation chroot --layers=false -q -t bench/hello "$ctx" >/dev/null 2>"$work/buildah.log" \
        || { echo "buildah failed:"; cat "$work/buildah.log"; exit 1; }
    t1=$(now)
    buildah_times+=("$(echo "$t1 - $t0" | bc)")
    buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs rmi -a -f >/dev/null 2>&1 || true

    # Fully cached rebuild: kiln (no VM boots) vs buildah --layers (second of two builds).
    t0=$(now); "$kiln" build -q -t bench/hello "$ctx" >/dev/null; t1=$(now)
    kiln_cached+=("$(echo "$t1 - $t0" | bc)")
    b=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
    "${b[@]}" bud --isolation chroot --layers -q -t bench/hello "$ctx" >/dev/null 2>&1
    t0=$(now); "${b[@]}" bud --isolation chroot --layers -q -t bench/hello "$ctx" >/dev/null 2>&1; t1=$(now)
    buildah_cached+=("$(echo "$t1 - $t0" | bc)")
    "${b[@]}" rmi -a -f >/dev/null 2>&1 || true
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
kb=$(median "${boot_times[@]}"); kt=$(median "${kiln_times[@]}"); bt=$(median "${buildah_times[@]}")
printf '\nkiln walking-skeleton benchmark (%s runs, medians)\n' "$runs"
printf '  guest boot to agent ready (QEMU):  %6.2f s   (target < 0.8 s; Firecracker on KVM: 0.125 s)\n' "$kb"
printf '  examples/hello, kiln build:        %6.2f s   (all: %s)\n' "$kt" "${kiln_times[*]}"
printf '  examples/hello, buildah bud:       %6.2f s   (all: %s)\n' "$bt" "${buildah_times[*]}"
printf '  ratio kiln / buildah:              %6.2f x\n' "$(echo "$kt / $bt" | bc -l)"
kc=$(median "${kiln_cached[@]}"); bc_=$(median "${buildah_cached[@]}")
printf '  fully cached rebuild, kiln:        %6.3f s   (no VM boots)\n' "$kc"
printf '  fully cached rebuild, buildah:     %6.3f s   (bud --layers)\n' "$bc_"
printf '  speed-up kiln vs buildah (cached): %6.1f x   (issue 6 goal: >= 10 x)\n' "$(echo "$bc_ / $kc" | bc -l)"
