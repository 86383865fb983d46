#!/usr/bin/env bash
# Instructions per stored event: voltd under valgrind's callgrind, which counts instructions
# rather than seconds, so two builds compare to the percent on a machine whose events/s swing
# by a fifth between runs. Slow (valgrind runs the daemon on one CPU, some 50 times slower),
# so it measures a few thousand events, on SQLite.
#
#   bench/instructions.sh                                # this tree's release build
#   BENCH_VOLTD=/tmp/voltd-before bench/instructions.sh  # another build
#   BENCH_SECONDS=20 BENCH_CONNECTIONS=64 bench/instructions.sh
#
# Prints the instructions per event in all and in the parts each event passes through.
# Batches are smaller under valgrind than at full speed, so the commit's share is larger.
# Needs valgrind (Debian package valgrind).
set -euo pipefail

seconds=${BENCH_SECONDS:-10}
connections=${BENCH_CONNECTIONS:-16}
if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
    echo "bench: instructions.sh needs valgrind (Debian package valgrind)" >&2
    exit 2
fi
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
[ "$store" = sqlite ] || die "instructions.sh measures the SQLite store only"
build_bench_tools

path=/volt/bench
new_storage instructions
write_config "$work/volt.toml" "$path" "$storage_url"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$voltd_bin" --config "$work/volt.toml" run 2>"$work/voltd.log" &
voltd_pid=$!
pids+=("$voltd_pid")
voltd_addr=$(wait_for_addr "$work/voltd.log" 'Receiving webhook events on http://[0-9.:]*' "$voltd_pid" 120)
echo "Measuring $voltd_bin under callgrind: $connections connections for ${seconds}s" >&2
run_tracked "$loadgen" --addr "$voltd_addr" --path "$path" --connections "$connections" \
    --seconds "$seconds" --run-id instructions --ids random >"$work/load"
stored=$(value stored "$work/load")
[ "${stored:-0}" -gt 0 ] || die "no event was stored (see $work/voltd.log)"
# One SIGINT stops voltd cleanly; callgrind writes its counts as the process exits.
kill -INT "$voltd_pid"
wait "$voltd_pid" || true
forget_process "$voltd_pid"
callgrind_annotate --inclusive=yes "$work/callgrind.out" >"$work/inclusive.txt" 2>/dev/null

# Instructions per event of the first (largest) entry whose name contains $1.
per_event() {
    grep -F -- "$1" "$work/inclusive.txt" | head -n1 | awk -v n="$stored" '{gsub(",", "", $1); printf "%.0f", $1 / n}'
}

echo "| part | instructions per event |"
echo "|---|---:|"
echo "| all of voltd | $(grep 'PROGRAM TOTALS' "$work/inclusive.txt" | awk -v n="$stored" '{gsub(",", "", $1); printf "%.0f", $1 / n}') |"
echo "| HTTP workers (actix-http's dispatcher, the handler included) | $(per_event 'actix_http::h1::dispatcher::Dispatcher<T,S,B,X,U> as core::future::future::Future>::poll') |"
echo "| - field extraction | $(per_event 'voltd::receiver::extract::extract ') |"
echo "| - the event's log line | $(per_event 'tracing_core::event::Event::dispatch') |"
echo "| - memset, mostly actix-http clearing its header table (valgrind counts \`rep stosb\` per byte) | $(per_event 'memset') |"
echo "| event writer | $(per_event 'voltd::store::writer::Writer::run') |"
echo "| - SQLite statements | $(per_event 'sqlite3_step') |"
echo
echo "$stored events stored, $connections connections, ${seconds}s under callgrind"
