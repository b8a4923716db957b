#!/usr/bin/env bash
# Large inputs with bounded memory (issue 13, "Numbers"), printed, never asserted, buildah
# measured on the same operations in the same run: wall time and peak host RSS (GNU time's
# maximum resident set size of the kiln or buildah process tree's largest member) for
#   1. a build context holding a 10 GB sparse file: `FROM scratch` + `COPY big /big` (no VM in
#      kiln: the layer is made on the host);
#   2. a 5 GB layer (one 5 GB file of zeros, not sparse in the tar): `kiln import` of the rootfs
#      tar vs `buildah from scratch` + `add` + `commit`; then kiln's `save` of that image and
#      `load` of the archive into a second store (kiln only: buildah has no archive load).
# Needs ~12 GB of free disk under TMPDIR. Usage: bench/large.sh
#
# --- Figures: 2 shared cores (load 1.6-1.9), buildah 1.28.2 (overlay, chroot isolation),
# release kiln; one run, 8 min. The 5 GB file is zeros: kiln's gzip'd blob is a few MB (save
# copies that), but import hashes and compresses all 5 GB and load unpacks and verifies them.
#                                         kiln               buildah            kiln/buildah
#   COPY of a 10 GB sparse file           84.12 s    8 MiB   220.13 s   27 MiB  time 0.38 x, RSS 0.30 x
#   import of a 5 GB layer                 4.59 s    6 MiB   103.10 s   29 MiB  time 0.04 x, RSS 0.21 x
#   save of that image                     0.08 s    5 MiB
#   load of that archive                   3.47 s    6 MiB
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
(cd "$repo" && cargo build -q --release --locked -p kiln-cli)
command -v buildah >/dev/null || { echo "bench/large.sh: buildah missing (apt-get install buildah)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'buildah --root "$work/buildah" --runroot "$work/buildah-run" rm -a >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cp "$repo/target/release/kiln" "$work/kiln"
export KILN_ROOT="$work/store" KILN_CACHE_DIR="$work/cache"
B=(buildah --root "$work/buildah" --runroot "$work/buildah-run" --storage-driver overlay)

# measure NAME CMD...: runs CMD under GNU time; records NAME_s (wall seconds) and NAME_mib.
declare -A fig
measure() {
    local name="$1"; shift
    if ! /usr/bin/time -f '%e %M' -o "$work/$name.time" "$@" >"$work/$name.log" 2>&1; then
        echo "bench/large.sh: $name failed:" >&2; tail -5 "$work/$name.log" >&2; exit 1
    fi
    read -r s kib <"$work/$name.time"
    fig[${name}_s]="$s"; fig[${name}_mib]="$((kib / 1024))"
}

# 1. A context with a 10 GB sparse file.
mkdir -p "$work/ctx"
truncate -s 10G "$work/ctx/big"
printf 'FROM scratch\nCOPY big /big\n' >"$work/ctx/Dockerfile"
measure k_sparse "$work/kiln" build -q -t large/sparse "$work/ctx"
measure b_sparse "${B[@]}" bud --isolation chroot -q -t large/sparse "$work/ctx"
rm -f "$work/ctx/big"

# 2. A 5 GB layer.
mkdir -p "$work/rootfs"
head -c 5G /dev/zero >"$work/rootfs/big"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" big
rm -f "$work/rootfs/big"
measure k_import "$work/kiln" import "$work/rootfs.tar" large/layer
c=$("${B[@]}" from scratch)
measure b_import sh -c "${B[*]} add $c $work/rootfs.tar / && ${B[*]} commit -q $c large/layer"
rm -f "$work/rootfs.tar"
measure k_save "$work/kiln" save -o "$work/layer.tar" large/layer
measure k_load env KILN_ROOT="$work/store2" "$work/kiln" load -i "$work/layer.tar"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f x", a / b; else print "-" }'; }
row() { printf '  %-34s %8s s %6s MiB' "$1" "${fig[${2}_s]}" "${fig[${2}_mib]}"; [[ -z ${3:-} ]] || printf '   %8s s %6s MiB   time %s, RSS %s' "${fig[${3}_s]}" "${fig[${3}_mib]}" "$(ratio "${fig[${2}_s]}" "${fig[${3}_s]}")" "$(ratio "${fig[${2}_mib]}" "${fig[${3}_mib]}")"; echo; }
echo "bench/large.sh: $(nproc) cores, load $(uptime | sed 's/.*load average: //'); kiln vs buildah (overlay)"
printf '  %-34s %17s   %17s   %s\n' "" "kiln" "buildah" "kiln/buildah"
row "COPY of a 10 GB sparse file" k_sparse b_sparse
row "import of a 5 GB layer" k_import b_import
row "save of that image" k_save
row "load of that archive" k_load
