#!/usr/bin/env bash
# Release-style archives of kiln for one host: the binary and the guest image for that host's
# architecture, laid out so kiln finds its guest with no environment variables
# (<prefix>/bin/kiln[.exe] looks for <prefix>/share/kiln/guest[-arm64], see
# host/sandbox/src/guest.rs):
#
#   kiln-<host>/bin/kiln[.exe]
#   kiln-<host>/share/kiln/guest[-arm64]/{kernel,initramfs.cpio,manifest.json}
#   kiln-<host>/README.txt        what to install on that host, and what is experimental
#
# Usage: images/package.sh HOST [--kiln BINARY] [--out DIR]
#   HOST: linux-x86_64 | windows-x86_64 | macos-arm64 | macos-x86_64
#   --kiln: a kiln binary already built for HOST (default: build it here: linux with cargo,
#           windows with Debian's rustc-web + mingw as tests/wine-tests.sh does; a macOS
#           binary must be built on a Mac, where this script also signs it with
#           images/macos/kiln.entitlements, which Virtualization.framework requires)
#   --out:  where the directory and its archive go (default: target/dist)
# The guest images come from images/out (x86_64) and images/out-arm64 (arm64): run
# images/build.sh (KILN_GUEST_ARCH=arm64 for the second) first.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
fail() { echo "images/package.sh: error: $*" >&2; exit 1; }

host="${1:-}"; shift || true
kiln="" out="$target_dir/dist"
while (($#)); do
    case "$1" in
        --kiln) kiln="${2:?--kiln needs a path}"; shift 2 ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        *) fail "unknown argument $1" ;;
    esac
done
case "$host" in
    linux-x86_64) guest=out; guest_dir=guest; exe=kiln ;;
    windows-x86_64) guest=out; guest_dir=guest; exe=kiln.exe ;;
    macos-arm64) guest=out-arm64; guest_dir=guest-arm64; exe=kiln ;;
    macos-x86_64) guest=out; guest_dir=guest; exe=kiln ;;
    *) fail "HOST must be linux-x86_64, windows-x86_64, macos-arm64 or macos-x86_64" ;;
esac
src="$repo/images/$guest"
for f in kernel initramfs.cpio manifest.json; do
    [[ -f $src/$f ]] || fail "$src/$f is missing: build the guest first (images/build.sh)"
done

if [[ -z $kiln ]]; then
    case "$host" in
        linux-x86_64)
            (cd "$repo" && cargo build --release --locked -p kiln-cli) >&2
            kiln="$target_dir/release/kiln" ;;
        windows-x86_64)
            (cd "$repo" && RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir/cross" \
                /usr/bin/cargo build --release --locked -Zbuild-std --target x86_64-pc-windows-gnu -p kiln-cli --bin kiln) >&2
            kiln="$target_dir/cross/x86_64-pc-windows-gnu/release/kiln.exe" ;;
        macos-*)
            [[ $(uname -s) == Darwin ]] || fail "a macOS kiln is built on a Mac (it links Apple's frameworks): run this there, or pass --kiln"
            (cd "$repo" && cargo build --release --locked -p kiln-cli) >&2
            kiln="$target_dir/release/kiln" ;;
    esac
fi
[[ -f $kiln ]] || fail "$kiln does not exist"

name="kiln-$host"
stage="$out/$name"
rm -rf "$stage" "$stage.tmp"
mkdir -p "$stage.tmp/bin" "$stage.tmp/share/kiln/$guest_dir"
cp "$kiln" "$stage.tmp/bin/$exe"
cp "$src/kernel" "$src/initramfs.cpio" "$src/manifest.json" "$stage.tmp/share/kiln/$guest_dir/"
unsigned=""
if [[ $host == macos-* ]]; then
    if [[ $(uname -s) == Darwin ]]; then
        codesign --force --sign - --entitlements "$repo/images/macos/kiln.entitlements" "$stage.tmp/bin/$exe"
    else
        unsigned=yes
        echo "images/package.sh: warning: bin/kiln is NOT signed (codesign runs on a Mac only): --backend vz will be refused until it is signed with images/macos/kiln.entitlements" >&2
    fi
fi

case "$host" in
    windows-x86_64) cat >"$stage.tmp/README.txt" <<'TXT'
kiln for Windows (x86_64) - EXPERIMENTAL: built and unit-tested under Wine, not yet run with
QEMU on Windows.

Install QEMU 7.2 or later (AF_UNIX sockets):  winget install SoftwareFreedomConservancy.QEMU
and add its folder (C:\Program Files\qemu) to PATH. For hardware acceleration enable the
Windows feature "Windows Hypervisor Platform" (otherwise QEMU emulates, ~10x slower).
Run bin\kiln.exe doctor to see what kiln found. The store lives in %LOCALAPPDATA%\kiln.
Not yet on Windows: shared directories and volumes (kiln run -v).
TXT
    ;;
    macos-*) { [[ -z $unsigned ]] || printf 'WARNING: bin/kiln is not signed yet; before using --backend vz run\n  codesign --force --sign - --entitlements kiln.entitlements bin/kiln\n\n'
        cat <<'TXT'
kiln for macOS - EXPERIMENTAL: type-checked in CI, not yet run on a Mac.

Backends: QEMU with Hypervisor.framework (brew install qemu; kiln uses -accel hvf), or with
no QEMU installed, Virtualization.framework (--backend vz; bin/kiln must keep its
com.apple.security.virtualization entitlement, which images/package.sh signs in on a Mac).
Run bin/kiln doctor to see what kiln found. The store lives in
~/Library/Application Support/kiln. On Apple silicon kiln runs the arm64 guest natively;
Virtualization.framework runs only that guest, so Intel Macs use QEMU with HVF.
TXT
    } >"$stage.tmp/README.txt"
    [[ -z $unsigned ]] || cp "$repo/images/macos/kiln.entitlements" "$stage.tmp/"
    ;;
    linux-*) cat >"$stage.tmp/README.txt" <<'TXT'
kiln for Linux (x86_64). Install QEMU (Debian: apt-get install qemu-system-x86); kiln uses KVM
when /dev/kvm is usable. Run bin/kiln doctor to see what kiln found.
TXT
    ;;
esac
mv "$stage.tmp" "$stage"
if [[ $host == windows-* ]]; then
    (cd "$out" && rm -f "$name.zip" && python3 -m zipfile -c "$name.zip" "$name")
    echo "$out/$name.zip"
else
    tar -C "$out" -czf "$out/$name.tar.gz" "$name"
    echo "$out/$name.tar.gz"
fi
