#!/usr/bin/env bash
# arm64 builds two ways (issue 15), printed, never asserted, both measured in the same run on
# the same Dockerfile and context:
#   - `kiln build --platform linux/arm64` in the x86_64 guest: RUN steps under QEMU user-mode
#     emulation inside the guest;
#   - the same build with KILN_GUEST_ARCH=arm64: the arm64 guest (qemu-system-aarch64 -M virt),
#     RUN steps native to the guest;
# each cold (no cache; the first build of a run boots, later ones restore the VM snapshot) with
# each RUN's time from kiln's plain progress, and `kiln run --rm IMAGE true` in each guest.
# Here both guests are emulated by TCG; on an arm64 host with HVF or KVM the arm64 guest runs at
# native speed, while the x86_64 guest would be fully emulated: this measures the TCG case only.
#
# --- Figures: 2 shared cores (load 1.8-2.0), QEMU 7.2 TCG for both guests, medians of 3:
#                                   x86_64 guest + qemu-user   arm64 guest   ratio
#   whole build, no cache                  4.16 s              0.80 s       0.19 x
#   RUN busybox --install                  1.20 s              0.50 s       0.42 x
#   RUN 10,000-iteration loop              3.00 s              0.20 s       0.07 x
#   kiln run --rm IMAGE true               0.76 s              0.41 s       0.54 x
# One layer of emulation (TCG running arm64 code) beats two (TCG running x86 code that runs
# qemu-user translating arm64 code): 15x on the CPU-bound RUN.
# Usage: bench/guest-arm64.sh [RUNS]   (default 3; needs the README's setup: both guest images)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-3}"
(cd "$repo" && cargo build -q --release --locked -p kiln-cli)
arm_bb="$repo/tests/e2e/fixtures/arm64/busybox"
x86_guest="${KILN_GUEST_DIR:-$repo/images/out}"
arm_guest="${KILN_GUEST_DIR_ARM64:-$repo/images/out-arm64}"
for f in "$arm_bb" "$x86_guest/kernel" "$arm_guest/kernel"; do
    [[ -f $f ]] || { echo "$f is missing: run examples/setup-and-build.sh" >&2; exit 1; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$repo/target/release/kiln" "$work/kiln"
kiln="$work/kiln"
export KILN_ROOT="$work/store"
load_start="$(uptime | sed 's/.*load average: //')"

ctx="$work/ctx" && mkdir -p "$ctx"
cp "$arm_bb" "$ctx/busybox"
cat >"$ctx/Dockerfile" <<'DF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN i=0; while [ $i -lt 10000 ]; do i=$((i+1)); done; uname -m > /arch
DF

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# step LOG N: the DONE time of the Nth RUN in kiln's plain progress.
step() {
    awk -v n="$2" '/ RUN / { split($1, a, "#"); id[++k] = a[2] }
        /^#[0-9]+ DONE / { split($1, a, "#"); t[a[2]] = $3 }
        END { v = t[id[n]]; sub(/s$/, "", v); print v }' "$1"
}
emu_t=(); emu_r1=(); emu_r2=(); emu_run=(); arm_t=(); arm_r1=(); arm_r2=(); arm_run=()
emu() { env KILN_GUEST_ARCH=x86_64 KILN_GUEST_DIR="$x86_guest" "$@"; }
arm() { env KILN_GUEST_ARCH=arm64 KILN_GUEST_DIR="$arm_guest" "$@"; }
for _ in $(seq 1 "$runs"); do
    t0=$(now); emu "$kiln" build --progress plain --no-cache --platform linux/arm64 -t bench/emulated "$ctx" >/dev/null 2>"$work/emu.log" || { tail -5 "$work/emu.log" >&2; exit 1; }
    emu_t+=("$(echo "$(now) - $t0" | bc)"); emu_r1+=("$(step "$work/emu.log" 1)"); emu_r2+=("$(step "$work/emu.log" 2)")
    t0=$(now); arm "$kiln" build --progress plain --no-cache -t bench/native "$ctx" >/dev/null 2>"$work/arm.log" || { tail -5 "$work/arm.log" >&2; exit 1; }
    arm_t+=("$(echo "$(now) - $t0" | bc)"); arm_r1+=("$(step "$work/arm.log" 1)"); arm_r2+=("$(step "$work/arm.log" 2)")
    t0=$(now); emu "$kiln" run --rm --platform linux/arm64 bench/emulated true >/dev/null 2>&1; emu_run+=("$(echo "$(now) - $t0" | bc)")
    t0=$(now); arm "$kiln" run --rm bench/native true >/dev/null 2>&1; arm_run+=("$(echo "$(now) - $t0" | bc)")
done
recorded="$(arm "$kiln" run --rm bench/native cat /arch)"
[[ $recorded == aarch64 ]] || { echo "the arm64 guest's RUN recorded '$recorded', not aarch64" >&2; exit 1; }

printf '\nkiln arm64 builds: user-mode emulation in the x86_64 guest vs the arm64 guest (medians of %s; load at start %s; both guests under TCG)\n' "$runs" "$load_start"
printf '                                   x86_64 guest + qemu-user   arm64 guest   ratio arm64/x86\n'
row() { printf '  %-32s %10.2f s %17.2f s %10.2f x\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)"; }
row "whole build, no cache" "$(median "${emu_t[@]}")" "$(median "${arm_t[@]}")"
row "RUN busybox --install" "$(median "${emu_r1[@]}")" "$(median "${arm_r1[@]}")"
row "RUN 10,000-iteration loop" "$(median "${emu_r2[@]}")" "$(median "${arm_r2[@]}")"
row "kiln run --rm IMAGE true" "$(median "${emu_run[@]}")" "$(median "${arm_run[@]}")"
