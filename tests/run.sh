#!/usr/bin/env bash
# The test command. Runs every test in the workspace: unit tests, protocol and store tests,
# the agent's tests, and the end-to-end tests that build real images in QEMU guests.
#
# Needs the setup from examples/setup-and-build.sh (packages + images/out). When run as root,
# the end-to-end tests run kiln as the unprivileged user $KILN_TEST_USER (default kilntest),
# created here if absent; kiln and the guest image are copied to a world-readable place so
# that user can reach them whatever the checkout's permissions.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

guest="${KILN_GUEST_DIR:-$repo/images/out}"
guest_arm64="${KILN_GUEST_DIR_ARM64:-$repo/images/out-arm64}"
for dir in "$guest" "$guest_arm64"; do
    if [[ ! -f "$dir/kernel" || ! -f "$dir/initramfs.cpio" ]]; then
        echo "error: no guest image in $dir: run examples/setup-and-build.sh first" >&2
        exit 1
    fi
done

cargo build --locked -p kiln-cli
if [[ $(id -u) -eq 0 ]]; then
    user="${KILN_TEST_USER:-kilntest}"
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
    shared="$(mktemp -d /tmp/kiln-tests.XXXXXX)"
    trap 'rm -rf "$shared"' EXIT
    mkdir -p "$shared/guest" "$shared/guest-arm64"
    cp target/debug/kiln "$shared/kiln"
    cp "$guest/kernel" "$guest/initramfs.cpio" "$shared/guest/"
    cp "$guest_arm64/kernel" "$guest_arm64/initramfs.cpio" "$guest_arm64/manifest.json" "$shared/guest-arm64/"
    # virtiofsd from the setup (PATH or kiln's cache dir), where the test user can run it.
    tools="${KILN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln}/tools/bin"
    vfsd="${KILN_VIRTIOFSD:-$(PATH="$PATH:$tools:/usr/libexec" command -v virtiofsd || true)}"
    if [[ -n $vfsd ]]; then
        cp "$vfsd" "$shared/virtiofsd"
        export KILN_VIRTIOFSD="$shared/virtiofsd"
    fi
    chmod -R a+rX "$shared"
    export KILN_TEST_BIN="$shared/kiln" KILN_GUEST_DIR="$shared/guest" KILN_GUEST_DIR_ARM64="$shared/guest-arm64" KILN_TEST_USER="$user"
else
    export KILN_GUEST_DIR="$guest" KILN_GUEST_DIR_ARM64="$guest_arm64"
fi
status=0
cargo test --locked --workspace --no-fail-fast "$@" || status=$?
# The portable host crates type-check for Windows and macOS (issue 15).
tests/cross-check.sh || status=$?
# The portable crates' unit tests, built for Windows, under Wine (issue 15).
tests/wine-tests.sh || status=$?
# The fuzz targets, each for KILN_FUZZ_SECONDS (default 20); KILN_FUZZ_SECONDS=0 skips them.
if [[ ${KILN_FUZZ_SECONDS:-20} != 0 ]]; then
    tests/fuzz/run.sh || status=$?
fi
exit "$status"
