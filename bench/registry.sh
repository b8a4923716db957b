#!/usr/bin/env bash
# Registry benchmark, printed, never asserted: push and pull of a 10-layer image (MiB per
# layer: $2, default 50 -> 500 MB) against a loopback docker-registry (a fresh, empty one for
# every run), kiln vs `skopeo copy` measured in this same run, and their ratios. Layers are
# random data in plain tars, so neither tool spends the time compressing. The order alternates,
# for push and for pull alike: odd runs time kiln first, even runs skopeo first (so neither
# tool always meets a cold page cache or a freshly started registry); both pulls fetch the
# image kiln pushed.
# Usage: bench/registry.sh [RUNS] [MIB_PER_LAYER]   (needs docker-registry and skopeo)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-3}"
mib="${2:-50}"
kiln="$repo/target/release/kiln"
(cd "$repo" && cargo build --release --locked -q -p kiln-cli)

work="$(mktemp -d)"
registry_pid=
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
# A fresh registry (own storage, own port) for every run: nothing is there yet, so both tools
# upload every blob (no cross-repository mounts of what an earlier run pushed).
start_registry() {
    [[ -n "$registry_pid" ]] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    rm -rf "$work/registry"
    cat >"$work/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YAML
    docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
    registry_pid=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
    reg="127.0.0.1:$port"
}

# A 10-layer OCI archive of random data.
python3 - "$work/image.oci.tar" "$mib" <<'PY'
import hashlib, io, json, os, sys, tarfile
out, mib = sys.argv[1], int(sys.argv[2])
blobs, layers, diff_ids = {}, [], []
def add(data):
    d = hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return {"digest": "sha256:" + d, "size": len(data)}
for i in range(10):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo(f"layer{i}.bin"); info.size = mib << 20; info.mtime = 0
        t.addfile(info, io.BytesIO(os.urandom(info.size)))
    desc = add(buf.getvalue())
    layers.append(dict(mediaType="application/vnd.oci.image.layer.v1.tar", **desc))
    diff_ids.append(desc["digest"])
config = add(json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode())
manifest = add(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **config), "layers": layers}).encode())
index = {"schemaVersion": 2, "manifests": [dict(mediaType="application/vnd.oci.image.manifest.v1+json",
    annotations={"org.opencontainers.image.ref.name": "bench/big:1"}, **manifest)]}
with tarfile.open(out, "w") as t:
    def put(name, data):
        info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
    put("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    put("index.json", json.dumps(index).encode())
    for d, data in blobs.items():
        put(f"blobs/sha256/{d}", data)
PY

now() { date +%s.%N; }
kpush=(); spush=(); kpull=(); spull=()
export KILN_ROOT="$work/kiln-src"
"$kiln" load -q -i "$work/image.oci.tar"
# timed FN: FN's wall time in seconds on stdout (FN's own stdout dropped); fails if FN fails.
timed() { local t0 t1; t0=$(now); "$@" >/dev/null || { echo "$1 failed (run $i)" >&2; return 1; }; t1=$(now); echo "$t1 - $t0" | bc; }
kiln_push() { KILN_ROOT="$work/kiln-src" "$kiln" push -q "$reg/kiln$i/big:1" >/dev/null; }
skopeo_push() { skopeo copy -q --dest-tls-verify=false "oci-archive:$work/image.oci.tar" "docker://$reg/skopeo$i/big:1"; }
kiln_pull() { KILN_ROOT="$work/kiln-pull-$i" "$kiln" pull -q "$reg/kiln$i/big:1" >/dev/null; }
skopeo_pull() { skopeo copy -q --src-tls-verify=false "docker://$reg/kiln$i/big:1" "oci:$work/skopeo-pull-$i:big"; }
for i in $(seq 1 "$runs"); do
    start_registry
    "$kiln" tag bench/big:1 "$reg/kiln$i/big:1"
    if (( i % 2 == 1 )); then   # odd run: kiln first
        kpush+=("$(timed kiln_push)"); spush+=("$(timed skopeo_push)")
        kpull+=("$(timed kiln_pull)"); spull+=("$(timed skopeo_pull)")
    else                        # even run: skopeo first
        spush+=("$(timed skopeo_push)"); kpush+=("$(timed kiln_push)")
        spull+=("$(timed skopeo_pull)"); kpull+=("$(timed kiln_pull)")
    fi
    rm -rf "$work/kiln-pull-$i" "$work/skopeo-pull-$i"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
kp=$(median "${kpush[@]}"); sp=$(median "${spush[@]}"); kl=$(median "${kpull[@]}"); sl=$(median "${spull[@]}")
printf '\nkiln registry benchmark: 10 layers x %s MiB, loopback docker-registry, a fresh one per run, order alternating (%s runs, medians)\n' "$mib" "$runs"
printf '  push, kiln push:          %6.2f s   (all: %s)\n' "$kp" "${kpush[*]}"
printf '  push, skopeo copy:        %6.2f s   (all: %s)\n' "$sp" "${spush[*]}"
printf '  ratio kiln / skopeo:      %6.2f x   (goal <= 1)\n' "$(echo "$kp / $sp" | bc -l)"
printf '  pull, kiln pull:          %6.2f s   (all: %s)\n' "$kl" "${kpull[*]}"
printf '  pull, skopeo copy:        %6.2f s   (all: %s)\n' "$sl" "${spull[*]}"
printf '  ratio kiln / skopeo:      %6.2f x   (goal <= 1)\n' "$(echo "$kl / $sl" | bc -l)"
