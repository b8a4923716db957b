#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a real image built in a microVM:
#   1. installs the Debian packages kiln and its tests need (apt; sudo when not root),
#   2. builds the guest kernels (cached by config hash) and the guest images (kernel + initramfs
#      with the static guest agent as /init) into images/out (x86_64) and images/out-arm64,
#   3. builds kiln (release),
#   4. builds examples/hello with kiln inside a QEMU microVM and prints where the image went.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '\n==> %s\n' "$*" >&2; }

packages=(
    # guest kernel build
    linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev xz-utils cpio
    # running guests; base images for the example and the tests
    qemu-system-x86 busybox-static
    # independent checkers used by the tests
    skopeo umoci buildah
    # real registries on loopback for the registry tests (htpasswd, TLS certificates, a fake front)
    docker-registry apache2-utils openssl python3
    # ADD of git sources runs git on the host
    git
    # cross-platform RUN steps (FROM --platform=linux/arm64): static user-mode emulators
    qemu-user-static
    # zstd-compressed rootfs tars for the layer-format tests
    zstd
    # building virtiofsd (host directories shared with containers; Debian 12 has no package)
    libseccomp-dev libcap-ng-dev
    # the arm64 guest: its kernel (cross gcc), its static agent (Debian's rustc-web with the
    # aarch64 standard library) and QEMU for it (-M virt)
    qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross rustc-web cargo-web libstd-rust-web-dev:arm64
    # type-checking the host crates for Windows and macOS (tests/cross-check.sh): the standard
    # library's source for -Zbuild-std, mingw-w64 for C parts (ring) on Windows, clang and
    # llvm-ar for them on macOS
    rust-web-src gcc-mingw-w64-x86-64 clang llvm
    # running those crates' unit tests and kiln.exe as Windows executables (tests/wine-tests.sh)
    wine64
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "error: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    # arm64 packages (the aarch64 Rust standard library) need the architecture in apt's lists.
    dpkg --print-foreign-architectures | grep -qx arm64 || "${sudo[@]}" dpkg --add-architecture arm64
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# arm64 and armhf busybox binaries for the cross-platform tests (tests/e2e/platform.rs,
# tests/e2e/multiplatform.rs), from Debian's busybox-static of those architectures (needs them
# in apt's lists; nothing is installed).
for deb_arch in arm64 armhf; do
    fixture=tests/e2e/fixtures/$deb_arch/busybox
    [[ -f $fixture ]] && continue
    say "fetching busybox-static:$deb_arch for the cross-platform tests"
    sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    if ! dpkg --print-foreign-architectures | grep -qx "$deb_arch"; then
        "${sudo[@]}" dpkg --add-architecture "$deb_arch"
        "${sudo[@]}" apt-get update -qq
    fi
    deb_dir="$(mktemp -d)"
    (cd "$deb_dir" && apt-get download -qq "busybox-static:$deb_arch" && dpkg-deb -x busybox-static_*_"$deb_arch".deb x)
    mkdir -p "$(dirname "$fixture")"
    cp "$deb_dir/x/bin/busybox" "$fixture"
    rm -rf "$deb_dir"
done

say "building the guest image (kernel cached by config hash; first build takes ~5 minutes)"
images/build.sh
say "building the arm64 guest image (cross-built kernel cached by config hash; first build ~6 minutes)"
KILN_GUEST_ARCH=arm64 images/build.sh

# virtiofsd shares host directories with containers (`kiln run -v DIR:/x`) much faster than
# 9p on many files; Debian 12 does not package it, so it is built once into kiln's cache dir,
# where kiln looks for it (9p remains the fallback without it).
tools="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/tools"
if ! command -v virtiofsd >/dev/null && [[ ! -x /usr/libexec/virtiofsd && ! -x "$tools/bin/virtiofsd" ]]; then
    say "building virtiofsd 1.14 with cargo (once, ~3 minutes)"
    cargo install --quiet --locked virtiofsd --version 1.14.0 --root "$tools"
fi

# cargo-fuzz runs the fuzz targets in tests/fuzz (tests/run.sh runs each for a few seconds).
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (once, ~1 minute)"
    cargo install --quiet --locked cargo-fuzz
fi

say "building kiln"
cargo build --release --locked -p kiln-cli
kiln="$repo/target/release/kiln"

say "building examples/hello inside a microVM"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp -r examples/hello/. "$ctx/"
cp /bin/busybox "$ctx/busybox"
"$kiln" build -t kiln-example/hello "$ctx"
"$kiln" images
root="${KILN_ROOT:-${XDG_DATA_HOME:-$HOME/.local/share}/kiln}"
out="$repo/target/hello.tar"
"$kiln" save -o "$out" kiln-example/hello
say "done: image kiln-example/hello is in the store at $root; saved as $out"
