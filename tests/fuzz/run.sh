#!/usr/bin/env bash
# Runs every fuzz target for KILN_FUZZ_SECONDS (default 20) from the checked-in seeds in
# tests/fuzz/corpus (copied to a temp dir: what the fuzzer finds does not touch the repo) and
# prints each target's executions. A crash fails the run; its input is left in
# tests/fuzz/artifacts/<target>/ to become a regression seed. Needs cargo-fuzz and a nightly
# toolchain (examples/setup-and-build.sh installs cargo-fuzz; without them this says so, and
# fails under CI=true).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${KILN_FUZZ_SECONDS:-20}"
missing() {
    echo "prerequisite missing: $1: the fuzz targets did not run" >&2
    [[ ${CI:-} == true ]] && exit 1
    exit 0
}
cargo +nightly --version >/dev/null 2>&1 || missing "a nightly toolchain (rustup toolchain install nightly)"
cargo fuzz --version >/dev/null 2>&1 || missing "cargo-fuzz (cargo install --locked cargo-fuzz)"
targets=(dockerfile frames layer manifest archive add_archive)
cargo +nightly fuzz build --fuzz-dir "$here" -O >&2
for t in "${targets[@]}"; do
    corpus="$(mktemp -d)"
    cp -r "$here/corpus/$t/." "$corpus/"
    log="$(mktemp)"
    if ! cargo +nightly fuzz run --fuzz-dir "$here" -O "$t" "$corpus" -- -max_total_time="$seconds" -max_len=262144 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz target $t failed: see tests/fuzz/artifacts/$t" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    printf 'fuzz %-12s %s runs in %s s (corpus %s inputs)\n' "$t" "${execs:-?}" "$seconds" "$(ls "$corpus" | wc -l)"
    rm -rf "$corpus" "$log"
done
