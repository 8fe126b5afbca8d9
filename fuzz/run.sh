#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each; FUZZ_SECONDS
# sets it) on the nightly toolchain, starting from the regression inputs.
# Installs cargo-fuzz from crates.io if it is missing. A crash lands in
# fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/ so that
# `cargo test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in header decode receive ring; do
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run "$target" "corpus/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 | tee "/tmp/fuzz-$target.log" | grep -E "^#[0-9]+.*(DONE|pulse)|ERROR|panicked" || true
    grep -E "^stat::number_of_executed_units|Done [0-9]+ runs" "/tmp/fuzz-$target.log" || true
done
