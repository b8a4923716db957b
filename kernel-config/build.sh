#!/usr/bin/env bash
# Build (or fetch from cache) kiln's guest kernel.
#
# Source: Debian's linux-source-6.1 package (/usr/src/linux-source-6.1.tar.xz).
# Config: `make tinyconfig` + kernel-config/kiln.config + kernel-config/<arch>.config
#         (merged with scripts/kconfig/merge_config.sh -m, then `make olddefconfig`).
#
# Result: ${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/kernel/<key>/
#           x86_64: vmlinux - stripped ELF with the PVH note (qemu -M microvm -kernel)
#                   bzImage - compressed image for the Linux boot protocol
#           arm64:  Image   - the uncompressed arm64 boot image (qemu -M virt -kernel)
#           config  - the final .config
#         where <key> = sha256(architecture + both fragments + this script + tarball name/size).
#
# stdout: exactly one line, the result directory.  Progress goes to stderr.
# A cache hit returns immediately.  The build happens in a temp dir under the
# cache dir and is renamed into place at the end, so an interrupted build
# never leaves a half-finished result behind.
#
# Environment:
#   KILN_CACHE_DIR      cache root (default: $XDG_CACHE_HOME/kiln or ~/.cache/kiln)
#   KILN_KERNEL_SOURCE  kernel tarball (default: /usr/src/linux-source-6.1.tar.xz)
#   KILN_KERNEL_JOBS    make -j value (default: nproc)
#   KILN_GUEST_ARCH     x86_64 (default) or arm64 (cross-built with aarch64-linux-gnu-gcc)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fragment="$here/kiln.config"
arch="${KILN_GUEST_ARCH:-x86_64}"
case "$arch" in
    x86_64 | amd64) arch=x86_64; karch=x86_64; cross=""; images=(vmlinux bzImage) ;;
    arm64 | aarch64) arch=arm64; karch=arm64; cross=aarch64-linux-gnu-; images=(Image) ;;
    *) printf 'kernel-config/build.sh: error: KILN_GUEST_ARCH=%s: expected x86_64 or arm64\n' "$arch" >&2; exit 1 ;;
esac
arch_fragment="$here/$arch.config"
script="$here/$(basename "${BASH_SOURCE[0]}")"
tarball="${KILN_KERNEL_SOURCE:-/usr/src/linux-source-6.1.tar.xz}"
cache_root="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}"
jobs="${KILN_KERNEL_JOBS:-$(nproc)}"

log() { printf 'kernel-config/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f "$fragment" ]] || die "missing config fragment $fragment"
[[ -f "$arch_fragment" ]] || die "missing config fragment $arch_fragment"
[[ -f "$tarball" ]] || die "kernel source $tarball not found: install linux-source-6.1 (apt-get install linux-source-6.1)"

# --- cache key ---------------------------------------------------------------
# Anything that changes the output must change the key: the fragment, this
# script (build steps, flags) and the source tarball (name + size identifies a
# Debian package version well enough without hashing 140 MB every time).
tar_size="$(stat -c %s "$tarball")"
key="$(
    {
        printf 'arch %s\n' "$arch"
        printf 'fragment\n'; cat "$fragment"
        printf 'arch fragment\n'; cat "$arch_fragment"
        printf 'script\n'; cat "$script"
        printf 'tarball %s %s\n' "$(basename "$tarball")" "$tar_size"
    } | sha256sum | cut -d' ' -f1
)"
kernel_cache="$cache_root/kernel"
dest="$kernel_cache/$key"

have_result() {
    local f
    for f in "${images[@]}" config; do [[ -f "$1/$f" ]] || return 1; done
}

if have_result "$dest"; then
    printf '%s\n' "$dest"
    exit 0
fi

# --- tools -------------------------------------------------------------------
for tool in make gcc "${cross}gcc" "${cross}ld" "${cross}strip" flex bison bc xz tar perl sha256sum flock; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found: apt-get install build-essential flex bison bc libelf-dev libssl-dev xz-utils cpio"
done
[[ -e /usr/include/libelf.h ]] || die "libelf headers missing: apt-get install libelf-dev"
[[ -e /usr/include/openssl/ssl.h ]] || die "openssl headers missing: apt-get install libssl-dev"

mkdir -p "$kernel_cache"

# One build per key at a time; a second caller waits and then finds the result.
exec 9>"$kernel_cache/.lock-$key"
flock 9
if have_result "$dest"; then
    printf '%s\n' "$dest"
    exit 0
fi

work="$(mktemp -d "$kernel_cache/.build-$key.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

buildlog="$work/build.log"
fail() {
    log "error: $*"
    if [[ -s "$buildlog" ]]; then
        log "last lines of the build log:"
        tail -n 40 "$buildlog" >&2
        cp "$buildlog" "$kernel_cache/$key.failed.log"
        log "full log: $kernel_cache/$key.failed.log"
    fi
    exit 1
}

# Reproducibility: no timestamps, user or host names from this machine.
export KBUILD_BUILD_TIMESTAMP='1970-01-01 00:00:00 UTC'
export KBUILD_BUILD_USER=kiln
export KBUILD_BUILD_HOST=kiln
export KBUILD_BUILD_VERSION=1
export LC_ALL=C
# ARCH=x86_64 (not x86): makes tinyconfig produce a 64-bit config.
kmake() { make -C "$src" ARCH="$karch" CROSS_COMPILE="$cross" "$@" >>"$buildlog" 2>&1; }

log "building kernel $key (takes a few minutes; log: $buildlog)"
start=$SECONDS

log "extracting $(basename "$tarball")"
tar -xJf "$tarball" -C "$work" || fail "cannot extract $tarball"
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'linux-*' | head -n1)"
[[ -n "$src" && -f "$src/Makefile" ]] || fail "no linux-* source tree in $tarball"

log "configuring $arch (tinyconfig + $(basename "$fragment") + $(basename "$arch_fragment"))"
kmake tinyconfig || fail "make tinyconfig failed"
(cd "$src" && ARCH="$karch" CROSS_COMPILE="$cross" ./scripts/kconfig/merge_config.sh -m .config "$fragment" "$arch_fragment") >>"$buildlog" 2>&1 ||
    fail "merge_config.sh failed"
kmake olddefconfig || fail "make olddefconfig failed"

# Every option the fragments set must be in the final config with exactly that
# value, and every option they unset must stay unset.  Kconfig silently drops an
# option whose dependencies are not met; this turns that into an error.  As in
# merge_config.sh, the architecture's fragment overrides the common one.
declare -A want=()
order=()
while IFS= read -r line; do
    if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ || "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        opt="${BASH_REMATCH[1]}"
        [[ -n "${want[$opt]+set}" ]] || order+=("$opt")
        want[$opt]="$line"
    fi
done < <(cat "$fragment" "$arch_fragment")
bad=0
for opt in "${order[@]}"; do
    line="${want[$opt]}"
    if [[ "$line" == "# $opt is not set" ]]; then
        if grep -qE "^$opt=" "$src/.config"; then
            log "error: $opt should be unset but is $(grep -E "^$opt=" "$src/.config")"
            bad=1
        fi
    elif ! grep -qxF -- "$line" "$src/.config"; then
        got="$(grep -E "^(# )?$opt[= ]" "$src/.config" || true)"
        log "error: $line did not stick (final config: ${got:-absent, option unknown or dependencies unmet})"
        bad=1
    fi
done
if [[ $bad -ne 0 ]]; then
    log "error: kernel-config/kiln.config + $arch.config is not fully applied (see above): fix the option or add its dependencies"
    exit 1
fi

log "compiling with make -j$jobs"
kmake -j"$jobs" "${images[@]}" || fail "kernel build failed"

out="$work/out"
mkdir "$out"
if [[ $arch == x86_64 ]]; then
    # Strip symbols (not needed to boot, ~30% of the file); the PVH ELF note is an
    # allocated note section and survives stripping.
    strip --strip-all -o "$out/vmlinux" "$src/vmlinux" || fail "strip failed"
    cp "$src/arch/x86/boot/bzImage" "$out/bzImage"
else
    cp "$src/arch/arm64/boot/Image" "$out/Image"
fi
cp "$src/.config" "$out/config"
cp "$buildlog" "$out/build.log"
chmod 0644 "$out"/*

# Atomic install: rename(2) of a complete directory.
mv -T "$out" "$dest" || fail "cannot move result into $dest"
log "built in $((SECONDS - start)) s"
printf '%s\n' "$dest"
