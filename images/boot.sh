#!/usr/bin/env bash
# Boot the guest image from images/build.sh under QEMU, for debugging.
#
#   images/boot.sh [--agent-socket PATH] [--kvm] [-- extra qemu args...]
#
# Serial console (ttyS0) goes to this terminal; Ctrl-A X quits QEMU.
# --agent-socket PATH adds the virtio-serial port "kiln.agent" (guest:
# /dev/vport0p1) and connects it, as a client, to a Unix socket that a host
# program must already be listening on.
#
# Environment: KILN_GUEST_OUT (image dir, default images/out),
#              KILN_GUEST_APPEND (extra kernel command line words).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${KILN_GUEST_OUT:-$here/out}"
qemu="${QEMU:-qemu-system-x86_64}"

die() { printf 'images/boot.sh: error: %s\n' "$*" >&2; exit 1; }

command -v "$qemu" >/dev/null 2>&1 || die "$qemu not found: apt-get install qemu-system-x86"
[[ -f "$out/kernel" && -f "$out/initramfs.cpio" ]] || die "no image in $out: run images/build.sh first"

accel=tcg
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --agent-socket)
            [[ $# -ge 2 ]] || die "--agent-socket needs a path"
            extra+=(-chardev "socket,id=agent,path=$2"
                    -device virtio-serial-device
                    -device virtserialport,chardev=agent,name=kiln.agent)
            shift 2 ;;
        # Note: on this project's dev machines /dev/kvm is a nested PVM that
        # cannot run this kernel (see README); --kvm is for real KVM hosts.
        --kvm) accel=kvm; shift ;;
        --) shift; extra+=("$@"); break ;;
        *) die "unknown argument $1" ;;
    esac
done

# microvm, tuned for TCG boot time (measurements: images/build.sh header):
#  - x-option-roms=off: no linuxboot/PVH option ROM detour.
#  - acpi=off: required. This kernel has no ACPI, and only with ACPI off does
#    QEMU list the virtio-mmio devices on the kernel command line
#    (virtio_mmio.device=...); with ACPI on they are invisible to the guest.
#  - keep rtc, pit and pic at their defaults (on): rtc=off costs ~1 s (the
#    kernel polls the absent CMOS clock), pit=off or pic=off hang the boot.
# Kernel command line:
#  - quiet: less output over the emulated UART (a small gain, <= 0.1 s).
#  - panic=-1 + -no-reboot: a kernel panic (e.g. /init exiting) ends QEMU.
#  - reboot=t: reboot(RB_AUTOBOOT) triple-faults at once, so QEMU exits within
#    milliseconds; the default first pokes the absent keyboard controller for
#    ~3 s. RB_POWER_OFF cannot work without ACPI: the guest just halts.
#  - tsc=reliable: TCG's TSC is the host's, consistent across vCPUs; without
#    this the kernel discards it as "unsynchronized" and uses 10 ms jiffies.
#    Calibrating it against the PIT still fails in ~half of TCG boots; add
#    tsc_early_khz=<host TSC kHz> (via KILN_GUEST_APPEND) to make it certain.
exec "$qemu" \
    -M microvm,x-option-roms=off,isa-serial=on,acpi=off \
    -accel "$accel" -cpu max -m 1024 -smp 2 \
    -nodefaults -no-user-config -nographic -no-reboot \
    -serial stdio \
    -kernel "$out/kernel" -initrd "$out/initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1 reboot=t tsc=reliable ${KILN_GUEST_APPEND:-}" \
    "${extra[@]}"
