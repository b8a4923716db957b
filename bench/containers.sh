#!/usr/bin/env bash
# Container benchmarks, printed, never asserted (issue 17's numbers), each against a peer
# measured in this same run on the same image:
#   - `kiln run --rm IMG true` wall time vs `podman run --rm IMG true` (Debian's podman);
#   - `kiln exec C true` latency on a running container vs `podman exec`;
#   - host RSS of one idle detached container (supervisor + VMM) vs podman's (conmon + process);
#   - a download through a published port (-p) vs the same download from the host's loopback.
# Usage: bench/containers.sh [RUNS]   (needs the README's setup; installs podman and curl if absent)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-5}"
kiln="$repo/target/release/kiln"
(cd "$repo" && cargo build -q --release --locked -p kiln-cli)
for tool in podman curl; do
    if ! command -v "$tool" >/dev/null; then
        sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$tool" >/dev/null
    fi
done

work="$(mktemp -d)"
export KILN_ROOT="$work/kiln"
pod=(podman --root "$work/podman/root" --runroot "$work/podman/run" --storage-driver vfs --cgroup-manager cgroupfs --events-backend none)
cleanup() {
    "$kiln" rm -f bench-idle bench-web >/dev/null 2>&1 || true
    "${pod[@]}" rm -f -a >/dev/null 2>&1 || true
    [[ -n "${http_pid:-}" ]] && kill "$http_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# One busybox image for both: built by kiln, loaded into podman from kiln's archive.
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$rootfs/bin/$a"; done
tar -C "$rootfs" -cf "$work/rootfs.tar" .
"$kiln" import -c 'CMD ["sh"]' "$work/rootfs.tar" bench/bb >/dev/null
"$kiln" save -o "$work/bb.tar" bench/bb
"${pod[@]}" load -q -i "$work/bb.tar" >/dev/null
# The peer must be able to run here at all (in some sandboxes crun may not set rlimits).
pod_ok=1
if ! pod_err=$("${pod[@]}" run --rm --network none bench/bb true 2>&1); then
    pod_ok=0
    echo "note: podman cannot run containers on this machine, its columns are n/a: ${pod_err##*$'\n'}" >&2
fi

now() { date +%s.%N; }
median() { (($#)) || { echo nan; return; }; printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_of() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "$t1 - $t0" | bc; }

kr=(); pr=()
for _ in $(seq 1 "$runs"); do
    kr+=("$(time_of "$kiln" run --rm bench/bb true)")
    ((pod_ok)) && pr+=("$(time_of "${pod[@]}" run --rm --network none bench/bb true)")
done

"$kiln" run -d --name bench-idle bench/bb sleep 3600 >/dev/null
((pod_ok)) && "${pod[@]}" run -d --name bench-idle --network none bench/bb sleep 3600 >/dev/null
ke=(); pe=()
for _ in $(seq 1 "$runs"); do
    ke+=("$(time_of "$kiln" exec bench-idle true)")
    ((pod_ok)) && pe+=("$(time_of "${pod[@]}" exec bench-idle true)")
done
sleep 2
owner=$(sed -n 's/.*"owner_pid": \([0-9]*\).*/\1/p' "$KILN_ROOT"/containers/*/state.json | head -1)
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
kiln_rss=$(( $(rss_of "$owner") + $(for c in $(pgrep -P "$owner"); do rss_of "$c"; done | paste -sd+ | bc) ))
conmon=$(pgrep -f "conmon.*bench-idle" | head -1 || true)
pod_rss=0
if [[ -n "$conmon" ]]; then
    pod_rss=$(( $(rss_of "$conmon") + $(for c in $(pgrep -P "$conmon"); do rss_of "$c"; done | paste -sd+ | bc) ))
fi

# Throughput: 256 MiB served by busybox httpd in the container through -p, vs from the host.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$kiln" run -d --name bench-web -p "127.0.0.1:$port:80" bench/bb \
    sh -c 'mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count=256 2>/dev/null && echo ready && exec httpd -f -p 80 -h /www' >/dev/null
until "$kiln" logs bench-web | grep -q ready; do sleep 0.2; done
sleep 0.5
kiln_bps=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port/big")
mkdir -p "$work/www" && dd if=/dev/zero of="$work/www/big" bs=1M count=256 2>/dev/null
hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work/www" && exec python3 -m http.server --bind 127.0.0.1 "$hport" >/dev/null 2>&1) & http_pid=$!
sleep 1
host_bps=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$hport/big")

mib() { echo "$1 / 1048576" | bc -l; }
printf '\nkiln container benchmark (%s runs, medians; kiln doctor says which accelerator QEMU uses)\n' "$runs"
ratio=nan
((pod_ok)) && ratio=$(echo "$(median "${kr[@]}") / $(median "${pr[@]}")" | bc -l)
printf '  run --rm true:   kiln %6.2f s   podman %6.2f s   ratio %5.2fx  (goal <= 2x)\n' "$(median "${kr[@]}")" "$(median "${pr[@]}")" "$ratio"
printf '  exec true:       kiln %6.3f s   podman %6.3f s   (goal < 0.05 s)\n' "$(median "${ke[@]}")" "$(median "${pe[@]}")"
printf '  idle container RSS: kiln (supervisor + VMM) %d MiB   podman (conmon + process) %d MiB\n' "$((kiln_rss / 1024))" "$((pod_rss / 1024))"
printf '  256 MiB over HTTP: through -p %7.1f MiB/s   host loopback %7.1f MiB/s   (goal >= 200 MiB/s)\n' "$(mib "$kiln_bps")" "$(mib "$host_bps")"
