#!/usr/bin/env bash
# Multi-platform build benchmark (issue 16, "Numbers"), printed, never asserted, buildah measured
# in the same run on the same Dockerfile and context:
#   - a two-platform build (linux/amd64,linux/arm64) of a small Dockerfile with two RUN steps,
#     no cache: `kiln build --platform linux/amd64,linux/arm64` vs `buildah bud --platform
#     linux/amd64,linux/arm64 --manifest` (chroot isolation, overlay storage, vfs where overlay
#     does not work); ratio kiln / buildah (goal: at most 1.0x);
#   - the arm64 share of kiln's time: the same build for linux/arm64 alone over the two-platform
#     build's time;
#   - per-RUN overhead of emulation: each RUN's time (from kiln's plain progress) under arm64
#     emulation minus the same RUN for amd64, native, in the same two-platform build.
# The base is `FROM scratch` + `COPY busybox-$TARGETARCH`: Debian's static busybox for amd64
# and arm64 (the setup script's fixture). buildah runs arm64 binaries through the host's
# binfmt_misc: as root, this script registers Debian's qemu-aarch64-static there if it is not
# (kiln registers its emulator inside its guest, and needs nothing from the host).
#
# --- Figures: 2 shared cores (load 1.5-1.7), both guests on QEMU 7.2 TCG (KVM here cannot boot
# Linux), buildah 1.28.2 overlay; `bench/platform.sh 3`, medians of 3:
#   two platforms, 2 RUN steps, no cache:
#     kiln, arm64 stages in the arm64 guest (default)   1.18 s   0.97 x buildah (goal <= 1.0: met)
#     kiln, arm64 stages emulated (KILN_CROSS_GUEST=never) 3.76 s   3.09 x
#     buildah bud --platform linux/amd64,linux/arm64      1.22 s
#   arm64 alone (kiln): 0.80 s = 68% of the two-platform build (the two guests run at once)
#   10,000-iteration RUN: amd64 0.30 s, arm64 in the arm64 guest 0.30 s, arm64 emulated 2.80 s
# Emulated, kiln's arm64 RUN is user-mode emulation inside a TCG guest (two layers); the arm64
# guest is one layer, as buildah's qemu-user on the host's CPU is.
# Usage: bench/platform.sh [RUNS]   (default 3; needs the README's setup; installs buildah if absent)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-3}"
(cd "$repo" && cargo build -q --release --locked -p kiln-cli)  # incremental: cheap when up to date
if ! command -v buildah >/dev/null; then
    sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq buildah >/dev/null
fi
arm_bb="$repo/tests/e2e/fixtures/arm64/busybox"
[[ -f $arm_bb ]] || { echo "$arm_bb is missing: run examples/setup-and-build.sh" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$repo/target/release/kiln" "$work/kiln"
kiln="$work/kiln"
guest="${KILN_GUEST_DIR:-$repo/images/out}"
mkdir -p "$work/guest" && cp "$guest/kernel" "$guest/initramfs.cpio" "$work/guest/"
export KILN_GUEST_DIR="$work/guest" KILN_ROOT="$work/store"
load_start="$(uptime | sed 's/.*load average: //')"

# buildah needs the host to run arm64 binaries.
binfmt=/proc/sys/fs/binfmt_misc
if [[ ! -e $binfmt/register ]]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
fi
if [[ ! -e $binfmt/qemu-aarch64 && -w $binfmt/register ]]; then
    magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    echo ":qemu-aarch64:M::$magic:$mask:/usr/bin/qemu-aarch64-static:F" >"$binfmt/register"
fi
[[ -e $binfmt/qemu-aarch64 ]] || { echo "the host cannot run arm64 binaries for buildah (binfmt_misc): run as root" >&2; exit 1; }

ctx="$work/ctx" && mkdir -p "$ctx"
cp /bin/busybox "$ctx/busybox-amd64"
cp "$arm_bb" "$ctx/busybox-arm64"
cat >"$ctx/Dockerfile" <<'DF'
FROM scratch
ARG TARGETARCH
COPY busybox-${TARGETARCH} /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN i=0; while [ $i -lt 10000 ]; do i=$((i+1)); done; uname -m > /arch
DF

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { local log="$1"; shift; local t0; t0=$(now); "$@" >/dev/null 2>"$log" || { tail -5 "$log" >&2; exit 1; }; T=$(echo "$(now) - $t0" | bc); }
# step_secs LOG PLATFORM N: the DONE time of the Nth RUN of PLATFORM in kiln's plain progress.
step_secs() {
    awk -v p="[$2 " -v n="$3" '
        index($0, p) && / RUN / { split($1, a, "#"); id[++k] = a[2] }
        /^#[0-9]+ DONE / { split($1, a, "#"); t[a[2]] = $3 }
        END { v = t[id[n]]; sub(/s$/, "", v); print v }' "$1"
}

driver=overlay
if ! buildah --storage-driver overlay --root "$work/probe" --runroot "$work/probe-run" from scratch >/dev/null 2>&1; then driver=vfs; fi
bud() {
    buildah --storage-driver "$driver" --root "$work/buildah" --runroot "$work/buildah-run" \
        bud --isolation chroot --no-cache --platform linux/amd64,linux/arm64 --manifest "bench-multi-$1" "$ctx"
}

kiln_multi=(); kiln_emul=(); kiln_arm=(); buildah_multi=(); amd1=(); amd2=(); arm1=(); arm2=(); emu1=(); emu2=()
for r in $(seq 1 "$runs"); do
    # arm64 stages in the arm64 guest (the default where its image is there).
    timed "$work/kiln.log" "$kiln" build --progress plain --no-cache --platform linux/amd64,linux/arm64 -t "bench/multi:$r" "$ctx"
    kiln_multi+=("$T")
    amd1+=("$(step_secs "$work/kiln.log" linux/amd64 1)"); amd2+=("$(step_secs "$work/kiln.log" linux/amd64 2)")
    arm1+=("$(step_secs "$work/kiln.log" linux/arm64 1)"); arm2+=("$(step_secs "$work/kiln.log" linux/arm64 2)")
    # arm64 stages under user-mode emulation in the x86_64 guest.
    timed "$work/kiln-emul.log" env KILN_CROSS_GUEST=never "$kiln" build --progress plain --no-cache --platform linux/amd64,linux/arm64 -t "bench/emul:$r" "$ctx"
    kiln_emul+=("$T")
    emu1+=("$(step_secs "$work/kiln-emul.log" linux/arm64 1)"); emu2+=("$(step_secs "$work/kiln-emul.log" linux/arm64 2)")
    timed "$work/kiln-arm.log" "$kiln" build --progress plain --no-cache --platform linux/arm64 -t "bench/arm:$r" "$ctx"
    kiln_arm+=("$T")
    timed "$work/buildah.log" bud "$r"
    buildah_multi+=("$T")
done
km=$(median "${kiln_multi[@]}"); ke=$(median "${kiln_emul[@]}"); ka=$(median "${kiln_arm[@]}"); bm=$(median "${buildah_multi[@]}")
boot=$(sed -n 's/.*VM ready: .*\(booted\|restored from a snapshot\) in \([0-9.]*\) s.*/\1 in \2 s/p' "$work/kiln.log" | paste -sd ';' -)

printf '\nkiln multi-platform benchmark (medians of %s; load average at start %s; buildah %s, %s)\n' \
    "$runs" "$load_start" "$(buildah --version | awk '{print $3}')" "$driver"
printf '  two platforms, 2 RUN steps, no cache:\n'
printf '    kiln (arm64 stages in the arm64 guest)     %6.2f s   ratio to buildah %5.2f x (goal <= 1.0)\n' "$km" "$(echo "$km / $bm" | bc -l)"
printf '    kiln (arm64 stages emulated, KILN_CROSS_GUEST=never) %6.2f s   ratio %5.2f x\n' "$ke" "$(echo "$ke / $bm" | bc -l)"
printf '    buildah bud --platform ... --manifest      %6.2f s\n' "$bm"
printf '  kiln guests within it:                     %s\n' "${boot:-?}"
printf '  arm64 alone (kiln):                        %6.2f s = %3.0f%% of the two-platform build\n' "$ka" "$(echo "100 * $ka / $km" | bc -l)"
printf '  per RUN (kiln)                  amd64 (x86_64 guest)   arm64 (arm64 guest)   arm64 (emulated)\n'
printf '    RUN busybox --install         %8.2f s %20.2f s %17.2f s\n' "$(median "${amd1[@]}")" "$(median "${arm1[@]}")" "$(median "${emu1[@]}")"
printf '    RUN 10,000-iteration loop     %8.2f s %20.2f s %17.2f s\n' "$(median "${amd2[@]}")" "$(median "${arm2[@]}")" "$(median "${emu2[@]}")"
