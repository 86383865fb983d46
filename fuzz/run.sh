#!/usr/bin/env bash
# Runs voltd's fuzz targets one after another, each for FUZZ_RUNS executions (default 10
# million) or FUZZ_SECONDS seconds (default 1,800), whichever comes first, starting from the
# committed seeds. New inputs go to fuzz/corpus/<target>/ (not committed); a crash stops the
# run, leaves its input in fuzz/artifacts/<target>/ and exits non-zero.
#
#   fuzz/run.sh                       # every target
#   fuzz/run.sh extract config        # some of them
#   FUZZ_RUNS=100000 fuzz/run.sh      # a quick pass
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz asks for nightly compiler flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. The code under test is safe Rust,
# so the targets are built without a sanitizer, which makes them several times faster.
set -euo pipefail

cd "$(dirname "$0")"
runs=${FUZZ_RUNS:-10000000}
seconds=${FUZZ_SECONDS:-1800}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')

export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" artifacts
    log="artifacts/$target.log"
    echo "==> $target: $runs executions or $seconds s (log: fuzz/$log)"
    status=0
    cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
        -runs="$runs" -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 30 "$log" >&2
        echo "$target: failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
