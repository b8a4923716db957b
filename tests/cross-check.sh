#!/usr/bin/env bash
# Portability (issue 15): type-checks the host crates that are portable so far for Windows and
# macOS, so a Linux-only call slipping into them fails the test run. Uses Debian's rustc-web
# (/usr/bin/rustc, 1.96) with -Zbuild-std from rust-web-src, since no prebuilt standard library
# for those targets is installed; mingw-w64 compiles the C parts (ring) for Windows. The
# darwin check leaves out crates with C build scripts (kiln-registry: ring needs an Apple SDK).
# A missing prerequisite is reported on stderr and fails under CI=true.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

missing=()
[[ -x /usr/bin/rustc && -x /usr/bin/cargo ]] || missing+=("rustc-web cargo-web")
[[ -d /usr/lib/rustlib/src/rust/library ]] || missing+=("rust-web-src")
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=("gcc-mingw-w64-x86-64")
if ((${#missing[@]})); then
    echo "tests/cross-check.sh: skipped: missing Debian packages ${missing[*]} (examples/setup-and-build.sh installs them)" >&2
    [[ ${CI:-} == true ]] && exit 1
    exit 0
fi

check() {
    local target="$1"; shift
    local args=()
    for c in "$@"; do args+=(-p "$c"); done
    echo "tests/cross-check.sh: cargo check --target $target $*" >&2
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$repo/target/cross" \
        /usr/bin/cargo check --quiet --locked -Zbuild-std=std,panic_abort --target "$target" "${args[@]}"
}
check x86_64-pc-windows-gnu kiln-protocol kiln-frontend kiln-store kiln-registry
check aarch64-apple-darwin kiln-protocol kiln-frontend kiln-store
echo "tests/cross-check.sh: the portable host crates type-check for Windows and macOS" >&2
