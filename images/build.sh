#!/usr/bin/env bash
# Assemble kiln's guest boot image.
#
# Output (default images/out/ for x86_64, images/out-arm64/ for arm64; override with
# KILN_GUEST_OUT=dir):
#   kernel          the guest kernel (x86_64: uncompressed PVH vmlinux, see below;
#                   arm64: the uncompressed Image)
#   initramfs.cpio  newc cpio, uncompressed: /init = static kiln-guest-agent,
#                   plus empty /dev /proc /sys /tmp /run /mnt
#   manifest.json   the guest's architecture, sha256 of kernel and initramfs, kernel cache key
# The last line on stdout is the output directory; progress goes to stderr.
#
# Environment:
#   KILN_AGENT_BIN=path   use this statically linked binary as /init instead of
#                         building kiln-guest-agent with cargo
#   KILN_GUEST_OUT=dir    output directory (default: <repo>/images/out)
#   SOURCE_DATE_EPOCH     mtime of every initramfs entry (default: 0)
#   KILN_CACHE_DIR        passed on to kernel-config/build.sh
#   KILN_GUEST_ARCH       x86_64 or arm64 (default: this machine's): the arm64 guest's kernel is cross-built
#                         with aarch64-linux-gnu-gcc and its agent with Debian's rustc-web
#                         (/usr/bin/rustc, /usr/bin/cargo) and libstd-rust-web-dev:arm64
#
# The initramfs is reproducible: same /init bytes -> same archive bytes
# (entries sorted, mtimes fixed, uid/gid 0, fixed modes, cpio --reproducible).
#
# --- Boot measurements (QEMU 7.2 TCG, Debian 12, 2 host cores) ---------------
# Quickest command line found (see images/README.md, images/boot.sh):
#   qemu-system-x86_64 \
#     -M microvm,x-option-roms=off,isa-serial=on,acpi=off \
#     -accel tcg -cpu max -m 1024 -smp 2 -nodefaults -no-user-config \
#     -nographic -no-reboot -serial stdio \
#     -kernel images/out/kernel -initrd images/out/initramfs.cpio \
#     -append "console=ttyS0 quiet panic=-1 reboot=t tsc=reliable"
# QEMU start -> first line written by /init (tiny static test init, medians of
# 15 interleaved runs, p25-p75 in brackets):
#   vmlinux (PVH, uncompressed, stripped):  1.15 s  [1.06-1.20]
#   bzImage (gzip):                         1.34 s  [1.18-1.51]
#   with a virtio-serial port attached:     1.23 s vs 1.35 s (n=8)
# => images/out/kernel is the vmlinux (~0.2 s faster: no decompression).
# initramfs with an 8 MiB /init (n=10): uncompressed 1.07 s, gzip -9 1.21 s,
#   gzip -1 1.21 s (780 KiB /init: 1.05 s) => uncompressed.
# Traps measured on the way: rtc=off costs +1.0 s (the kernel polls the
# absent CMOS clock at boot); pit=off or pic=off hang the boot (APIC timer
# cannot be verified); default acpi=on hides the virtio-mmio devices from
# this ACPI-less kernel.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
arch="${KILN_GUEST_ARCH:-$(uname -m)}"
case "$arch" in
    x86_64 | amd64) arch=x86_64; default_out="$here/out"; rust_target=x86_64-unknown-linux-gnu; elf_machine='X86-64' ;;
    arm64 | aarch64) arch=arm64; default_out="$here/out-arm64"; rust_target=aarch64-unknown-linux-gnu; elf_machine='AArch64' ;;
    *) printf 'images/build.sh: error: KILN_GUEST_ARCH=%s: expected x86_64 or arm64\n' "$arch" >&2; exit 1 ;;
esac
out="${KILN_GUEST_OUT:-$default_out}"
epoch="${SOURCE_DATE_EPOCH:-0}"

log() { printf 'images/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in cpio sha256sum readelf find sort touch; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install cpio binutils coreutils findutils)"
done
[[ "$epoch" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be an integer, got '$epoch'"

# --- kernel --------------------------------------------------------------------
# Cached by kernel-config/build.sh; its stdout is the cache directory, whose name
# is the cache key.
kernel_dir="$(KILN_GUEST_ARCH="$arch" "$repo/kernel-config/build.sh")" || die "kernel build failed"
kernel_key="$(basename "$kernel_dir")"
if [[ $arch == x86_64 ]]; then
    # vmlinux (PVH direct boot) beats bzImage under TCG: no real-mode setup, no
    # self-decompression and relocation (figures above).
    kernel_src="$kernel_dir/vmlinux"
    kernel_format="vmlinux-pvh"
else
    kernel_src="$kernel_dir/Image"
    kernel_format="arm64-image"
fi
[[ -f "$kernel_src" ]] || die "$kernel_src missing"

# --- guest agent (/init) -------------------------------------------------------
if [[ -n "${KILN_AGENT_BIN:-}" ]]; then
    agent="$KILN_AGENT_BIN"
    [[ -f "$agent" ]] || die "KILN_AGENT_BIN=$agent does not exist"
    log "using agent binary $agent"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found (or set KILN_AGENT_BIN=/path/to/static/binary)"
    log "building kiln-guest-agent (static, release, $rust_target)"
    if [[ $arch == x86_64 ]]; then
        (
            cd "$repo"
            RUSTFLAGS="-C target-feature=+crt-static" \
                cargo build --release --locked -p kiln-guest-agent --target x86_64-unknown-linux-gnu >&2
        ) || die "cargo build of kiln-guest-agent failed"
        agent="$repo/target/x86_64-unknown-linux-gnu/release/kiln-guest-agent"
    else
        # Debian's toolchain has the aarch64 standard library (libstd-rust-web-dev:arm64);
        # it builds in a target dir of its own, apart from rustup's artifacts.
        [[ -x /usr/bin/rustc && -x /usr/bin/cargo ]] || die "Debian's rustc-web and cargo-web are needed for the arm64 agent (apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu)"
        command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
        (
            cd "$repo"
            RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$repo/target/debian" \
                CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
                RUSTFLAGS="-C target-feature=+crt-static" \
                /usr/bin/cargo build --release --locked -p kiln-guest-agent --target aarch64-unknown-linux-gnu >&2
        ) || die "cargo build of the arm64 kiln-guest-agent failed"
        agent="$repo/target/debian/aarch64-unknown-linux-gnu/release/kiln-guest-agent"
    fi
    [[ -f "$agent" ]] || die "cargo did not produce $agent"
fi
# The initramfs has no dynamic loader or libraries: /init must be static.
readelf -h "$agent" 2>/dev/null | grep -q "Machine:.*$elf_machine" ||
    die "$agent is not an $elf_machine ELF executable"
if readelf -l "$agent" | grep -q 'Requesting program interpreter'; then
    die "$agent is dynamically linked; /init must be static (RUSTFLAGS=\"-C target-feature=+crt-static\")"
fi

# --- initramfs -----------------------------------------------------------------
mkdir -p "$out"
stage="$(mktemp -d "${TMPDIR:-/tmp}/kiln-initramfs.XXXXXX")"
trap 'rm -rf "$stage" "$out"/.tmp.*' EXIT

root="$stage/root"
mkdir "$root"
for d in dev proc sys run mnt; do
    mkdir "$root/$d" && chmod 0755 "$root/$d"
done
mkdir "$root/tmp" && chmod 1777 "$root/tmp"
cp "$agent" "$root/init"
chmod 0755 "$root/init" "$root"
# /dev/console is not needed in the archive: the kernel's built-in initramfs
# (usr/default_cpio_list) already provides /dev/console, which is what init's
# stdin/stdout/stderr are opened on; our archive is unpacked on top of it.

find "$root" -exec touch -h -d "@$epoch" {} +
(
    cd "$root"
    find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
        cpio --quiet --reproducible -o -H newc -R 0:0
) >"$out/.tmp.initramfs.cpio"
# Uncompressed on purpose: under TCG, gunzip in the guest costs more time than
# the extra bytes cost to load (figures above).

cp "$kernel_src" "$out/.tmp.kernel"
chmod 0644 "$out/.tmp.kernel" "$out/.tmp.initramfs.cpio"

kernel_sha="$(sha256sum "$out/.tmp.kernel" | cut -d' ' -f1)"
initramfs_sha="$(sha256sum "$out/.tmp.initramfs.cpio" | cut -d' ' -f1)"
agent_sha="$(sha256sum "$agent" | cut -d' ' -f1)"
cat >"$out/.tmp.manifest.json" <<EOF
{
  "arch": "$arch",
  "kernel": {
    "file": "kernel",
    "format": "$kernel_format",
    "sha256": "$kernel_sha",
    "cache_key": "$kernel_key"
  },
  "initramfs": {
    "file": "initramfs.cpio",
    "format": "cpio-newc",
    "sha256": "$initramfs_sha",
    "init_sha256": "$agent_sha"
  }
}
EOF
chmod 0644 "$out/.tmp.manifest.json"

mv -f "$out/.tmp.kernel" "$out/kernel"
mv -f "$out/.tmp.initramfs.cpio" "$out/initramfs.cpio"
mv -f "$out/.tmp.manifest.json" "$out/manifest.json"

log "kernel    $kernel_sha ($kernel_format, key $kernel_key)"
log "initramfs $initramfs_sha"
(cd "$out" && pwd)
