#!/usr/bin/env bash
# Image-store benchmarks (issue 4), printed, never asserted, peers measured in the same run:
#   - save and load of a ~500 MB image, each against skopeo doing the same operation on the
#     same image: kiln save (kiln's store -> OCI archive) vs `skopeo copy oci:LAYOUT:ref
#     oci-archive:OUT.tar:ref` (a local OCI layout -> OCI archive), and kiln load (OCI archive
#     -> kiln's store) vs `skopeo copy oci-archive:IN.tar:ref oci:LAYOUT2:ref` (the same archive
#     -> a fresh OCI layout); skopeo's source layout is made from kiln's archive outside the
#     timings, and both loads read the archive skopeo wrote;
#   - `kiln images` with 1,000 images in the store (target: under 50 ms).
# Usage: bench/images.sh [SIZE_MB]   (default 500; needs skopeo)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
size_mb="${1:-500}"
kiln="$repo/target/release/kiln"
(cd "$repo" && cargo build -q --release --locked -p kiln-cli)  # incremental: cheap when up to date
command -v skopeo >/dev/null || { echo "skopeo is needed (apt-get install skopeo)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

# A rootfs of incompressible data split over 10 files, imported as the test image.
mkdir -p "$work/rootfs"
for i in $(seq 1 10); do head -c "$((size_mb * 1024 * 1024 / 10))" /dev/urandom > "$work/rootfs/blob$i"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
export KILN_ROOT="$work/store"
"$kiln" import "$work/rootfs.tar" bench/big:v1 >/dev/null

ref=bench/big:v1
t0=$(now); "$kiln" save --format oci -o "$work/kiln.tar" "$ref"; t1=$(now)
kiln_save=$(secs "$t0" "$t1")
# skopeo's source: the same image in an OCI layout directory (its local store), untimed.
skopeo copy -q "oci-archive:$work/kiln.tar" "oci:$work/layout:$ref" >/dev/null
t0=$(now); skopeo copy -q "oci:$work/layout:$ref" "oci-archive:$work/skopeo.tar:$ref" >/dev/null; t1=$(now)
skopeo_save=$(secs "$t0" "$t1")
export KILN_ROOT="$work/store2"
t0=$(now); "$kiln" load -i "$work/skopeo.tar" >/dev/null; t1=$(now)
kiln_load=$(secs "$t0" "$t1")
t0=$(now); skopeo copy -q "oci-archive:$work/skopeo.tar:$ref" "oci:$work/layout2:$ref" >/dev/null; t1=$(now)
skopeo_load=$(secs "$t0" "$t1")
rm -rf "$work/layout" "$work/layout2" "$work/store2"

# 1,000 small images, then time `kiln images` (best of 5).
export KILN_ROOT="$work/store3"
mkdir -p "$work/small" && echo x > "$work/small/f" && tar -C "$work/small" -cf "$work/small.tar" .
for i in $(seq 1 1000); do "$kiln" import -m "n$i" "$work/small.tar" "bench/small:$i" >/dev/null; done
best=""
for _ in 1 2 3 4 5; do
    t0=$(now); "$kiln" images >/dev/null; t1=$(now)
    t=$(secs "$t0" "$t1"); if [[ -z "$best" ]] || (( $(echo "$t < $best" | bc) )); then best=$t; fi
done

printf '\nkiln image-store benchmark (%s MB image)\n' "$size_mb"
printf '  save, kiln save (store -> oci archive):              %6.2f s\n' "$kiln_save"
printf '  save, skopeo copy (oci layout -> oci archive):       %6.2f s\n' "$skopeo_save"
printf '  ratio save kiln / skopeo:                            %6.2f x\n' "$(echo "$kiln_save / $skopeo_save" | bc -l)"
printf '  load, kiln load (oci archive -> store):              %6.2f s\n' "$kiln_load"
printf '  load, skopeo copy (oci archive -> oci layout):       %6.2f s\n' "$skopeo_load"
printf '  ratio load kiln / skopeo:                            %6.2f x\n' "$(echo "$kiln_load / $skopeo_load" | bc -l)"
printf '  kiln images, 1,000 images:                           %6.1f ms  (target < 50 ms)\n' "$(echo "$best * 1000" | bc -l)"
