#!/usr/bin/env bash
# Portability (issue 15): type-checks every host crate (kiln-cli and all it depends on, and
# kiln-vmm) for Windows and for both macOS architectures, so a Linux-only call slipping into the
# host fails the test run. Uses Debian's rustc-web (/usr/bin/rustc, 1.96) with -Zbuild-std from
# rust-web-src, since no prebuilt standard library for those targets is installed; mingw-w64
# compiles ring's C for Windows. For macOS, clang compiles ring's C against the stand-in headers
# in tests/darwin-stub (no Apple SDK exists here): the objects only let ring's build script
# finish for `cargo check`; nothing is linked. Windows' kiln.exe is built and run by
# tests/wine-tests.sh. A missing prerequisite is reported on stderr and fails under CI=true.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

missing=()
[[ -x /usr/bin/rustc && -x /usr/bin/cargo ]] || missing+=("rustc-web cargo-web")
[[ -d /usr/lib/rustlib/src/rust/library ]] || missing+=("rust-web-src")
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=("gcc-mingw-w64-x86-64")
command -v clang >/dev/null && command -v llvm-ar >/dev/null || missing+=("clang llvm")
if ((${#missing[@]})); then
    echo "tests/cross-check.sh: skipped: missing Debian packages ${missing[*]} (examples/setup-and-build.sh installs them)" >&2
    [[ ${CI:-} == true ]] && exit 1
    exit 0
fi

check() {
    local target="$1"; shift
    local args=() var="${target//-/_}"
    for c in "$@"; do args+=(-p "$c"); done
    echo "tests/cross-check.sh: cargo check --target $target $*" >&2
    env "CC_$var=clang" "AR_$var=llvm-ar" "CFLAGS_$var=-ffreestanding -nostdlibinc -I$repo/tests/darwin-stub" \
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$repo/target/cross" \
        /usr/bin/cargo check --quiet --locked -Zbuild-std=std,panic_abort --target "$target" "${args[@]}"
}
host_crates=(kiln-cli kiln-vmm)
# Windows: mingw's gcc is the default C compiler there; the darwin variables do not apply.
echo "tests/cross-check.sh: cargo check --target x86_64-pc-windows-gnu ${host_crates[*]}" >&2
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$repo/target/cross" \
    /usr/bin/cargo check --quiet --locked -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu -p kiln-cli -p kiln-vmm
check aarch64-apple-darwin "${host_crates[@]}"
check x86_64-apple-darwin "${host_crates[@]}"
echo "tests/cross-check.sh: every host crate type-checks for Windows and macOS (arm64 and x86_64)" >&2
