#!/usr/bin/env bash
# Benchmarks for the walking skeleton, printed, never asserted:
#   - VM start to agent ready (as kiln reports it in its "VM ready:" line): run 1 boots the
#     guest cold and saves a VM snapshot (the script's own XDG_CACHE_HOME starts empty), runs
#     2..N restore from that snapshot (their median); then the snapshot's size and the time it
#     took to make, from its record;
#   - wall time of building examples/hello with kiln vs `buildah bud` of the same Dockerfile
#     and context, measured in this same run, on each buildah storage driver in
#     BUILDAH_DRIVERS (default "overlay vfs"; a driver that does not work here is skipped),
#     each with its own store and its own kiln / buildah ratio; run 1's kiln build also makes
#     the snapshot and probes the backends (fresh cache dir), so all runs' times are printed;
#   - fully cached rebuild: kiln (no VM boots) vs the second of two `buildah bud --layers`,
#     per driver.
# Usage: bench/run.sh [RUNS]   (default 3; needs the README's setup; installs buildah if absent)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-3}"
requested="${BUILDAH_DRIVERS:-overlay vfs}"
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
# A cache dir of this run's own, empty: the first kiln build boots and saves the VM snapshot,
# the later ones restore from it. (KILN_CACHE_DIR would take precedence over it.)
unset KILN_CACHE_DIR
export XDG_CACHE_HOME="$work/cache"
snapdir="$XDG_CACHE_HOME/kiln/vm-snapshots"

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
use() {  # use DRIVER STORE: buildah command line (b) on that driver with that store
    b=(buildah --root "$2/root" --runroot "$2/run" --storage-driver "$1")
}
# The requested buildah drivers that work here (as bench/build.sh does).
drivers=()
for d in $requested; do
    use "$d" "$work/buildah-probe-$d"
    if "${b[@]}" from scratch >/dev/null 2>&1; then drivers+=("$d"); else echo "buildah: no $d storage here, skipped" >&2; fi
    "${b[@]}" rm -a >/dev/null 2>&1 || true
    rm -rf "$work/buildah-probe-$d"
done

kiln_times=(); start_times=(); start_how=(); kiln_cached=()
declare -A buildah_times buildah_cached   # per driver: space-separated per-run figures
for i in $(seq 1 "$runs"); do
    export KILN_ROOT="$work/kiln-store-$i"
    t0=$(now)
    "$kiln" build -t bench/hello "$ctx" 2>"$work/kiln.log" \
        || { echo "kiln build failed:"; cat "$work/kiln.log"; exit 1; }
    t1=$(now)
    kiln_times+=("$(echo "$t1 - $t0" | bc)")
    # "VM ready: qemu/tcg (guest kernel ..., booted in 1.55 s)" or "..., restored from a snapshot in 0.30 s)"
    started=$(sed -nE 's/.*VM ready: .*(booted|restored from a snapshot) in ([0-9.]+) s.*/\1:\2/p' "$work/kiln.log" | head -1)
    [[ -n "$started" ]] || { echo "no 'VM ready: ... in X s' line in kiln's output:"; cat "$work/kiln.log"; exit 1; }
    start_how+=("${started%%:*}"); start_times+=("${started##*:}")

    for d in "${drivers[@]}"; do
        store="$work/buildah-$d-$i"; use "$d" "$store"
        t0=$(now)
        "${b[@]}" bud --isolation chroot --layers=false -q -t bench/hello "$ctx" >/dev/null 2>"$work/buildah.log" \
            || { echo "buildah ($d) failed:"; cat "$work/buildah.log"; exit 1; }
        t1=$(now)
        buildah_times[$d]+="$(echo "$t1 - $t0" | bc) "
        "${b[@]}" rmi -a -f >/dev/null 2>&1 || true
    done

    # Fully cached rebuild: kiln (no VM boots) vs buildah --layers (second of two builds).
    t0=$(now); "$kiln" build -q -t bench/hello "$ctx" >/dev/null; t1=$(now)
    kiln_cached+=("$(echo "$t1 - $t0" | bc)")
    for d in "${drivers[@]}"; do
        store="$work/buildah-$d-$i"; use "$d" "$store"
        "${b[@]}" bud --isolation chroot --layers -q -t bench/hello "$ctx" >/dev/null 2>&1
        t0=$(now); "${b[@]}" bud --isolation chroot --layers -q -t bench/hello "$ctx" >/dev/null 2>&1; t1=$(now)
        buildah_cached[$d]+="$(echo "$t1 - $t0" | bc) "
        "${b[@]}" rmi -a -f >/dev/null 2>&1 || true
    done
done

kt=$(median "${kiln_times[@]}")
line() { local label="$1" fmt="$2"; shift 2; printf "  %-44s $fmt\n" "$label" "$@"; }
printf '\nkiln walking-skeleton benchmark (%s runs, medians; buildah %s, chroot isolation)\n' "$runs" "$(buildah --version | awk '{print $3}')"
line "VM start to agent ready, cold boot (run 1):" '%6.2f s   (%s; the first VM, with an empty cache dir)' "${start_times[0]}" "${start_how[0]}"
if (( runs >= 2 )); then
    restored=0; for h in "${start_how[@]:1}"; do [[ $h == booted ]] || restored=$((restored + 1)); done
    line "VM start to agent ready, restored (runs 2..$runs):" '%6.2f s   (restored from the snapshot in %d of %d runs; all: %s)' \
        "$(median "${start_times[@]:1}")" "$restored" "$((runs - 1))" "${start_times[*]:1}"
    line "" '          (target < 0.8 s; Firecracker on KVM: 0.125 s)'
else
    line "VM start to agent ready, restored:" '   n/a   (needs RUNS >= 2)'
fi
# The snapshot's record is at the end of its file; `kiln doctor` reads it.
snap_line=$("$kiln" doctor 2>/dev/null | grep "VM snapshots:" || true)
if [[ $snap_line == *"saved"* ]]; then
    line "VM snapshot:" '%s' "$(sed -E 's/.*on \(QEMU backend\): //; s/; VMs of those.*//' <<<"$snap_line") ($(ls "$snapdir"/*.state 2>/dev/null | wc -l) in $snapdir)"
else
    line "VM snapshot:" "none in %s (snapshots off, or saving failed: see kiln's notices)" "$snapdir"
fi
line "examples/hello, kiln build:" '%6.2f s   (all: %s)' "$kt" "${kiln_times[*]}"
for d in "${drivers[@]}"; do
    bt=$(median ${buildah_times[$d]})
    line "examples/hello, buildah bud ($d):" '%6.2f s   (all: %s)' "$bt" "${buildah_times[$d]% }"
    line "ratio kiln / buildah-$d:" '%6.2f x' "$(echo "$kt / $bt" | bc -l)"
done
[[ ${#drivers[@]} -gt 0 ]] || line "buildah:" 'none of the drivers "%s" works here' "$requested"
kc=$(median "${kiln_cached[@]}")
line "fully cached rebuild, kiln:" '%6.3f s   (no VM boots)' "$kc"
for d in "${drivers[@]}"; do
    bc_=$(median ${buildah_cached[$d]})
    line "fully cached rebuild, buildah-$d:" '%6.3f s   (bud --layers)' "$bc_"
    line "speed-up kiln vs buildah-$d (cached):" '%6.1f x   (issue 6 goal: >= 10 x)' "$(echo "$bc_ / $kc" | bc -l)"
done
