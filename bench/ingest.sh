#!/usr/bin/env bash
# Ingest benchmark: durable events/s, latency and peak RSS of a release voltd, next to a no-op
# server on the same HTTP stack, and a check that every 200 is a stored row.
#
#   bench/ingest.sh                 # 3 runs x 10 s at 16, 64 and 256 connections
#   BENCH_SECONDS=5 BENCH_RUNS=1 BENCH_LEVELS="64" bench/ingest.sh
#   BENCH_STORE=postgres bench/ingest.sh   # the same on PostgreSQL (BENCH_POSTGRES_URL)
#   BENCH_VOLTD=/tmp/voltd-before bench/ingest.sh   # run that voltd instead of building one
#   BENCH_IDS=sequential bench/ingest.sh   # message ids counted per connection, not random
#
# BENCH_VOLTD compares two builds minutes apart, on a machine as quiet for one as for the
# other: copy target/release/voltd aside (e.g. to /tmp/voltd-before), change the tree, and
# run the script once with BENCH_VOLTD set and once without. The load generator and the
# no-op server are built from this tree either way.
#
# Prints a markdown table of medians; exits non-zero if stored rows != acknowledged events.
set -euo pipefail

seconds=${BENCH_SECONDS:-10}
runs=${BENCH_RUNS:-3}
levels=${BENCH_LEVELS:-16 64 256}
# Random UUID-like message ids, as Volt's opaque ids are to voltd; "sequential" numbers them
# per connection, which flatters a store that indexes them.
ids=${BENCH_IDS:-random}
case "$ids" in random | sequential) ;; *) echo "BENCH_IDS must be random or sequential" >&2; exit 2 ;; esac
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
build_bench_tools
echo "Benchmarking $voltd_bin" >&2

path="/volt/bench-$(date +%s)-$$"
new_storage ingest
write_config "$work/volt.toml" "$path" "$storage_url"
start_voltd "$work/volt.toml" "$work/voltd.log"

"$noop_bin" "$path" >"$work/noop.out" 2>&1 &
noop_pid=$!
pids+=("$noop_pid")
noop_addr=$(wait_for_addr "$work/noop.out" 'listening on [0-9.:]*' "$noop_pid")

echo "voltd pid $voltd_pid on $voltd_addr, no-op pid $noop_pid on $noop_addr; $runs run(s) x ${seconds}s per level" >&2

# Bytes process $1 has caused to be written to storage (its WAL, database and checkpoints):
# what each event costs the disk.
written_bytes() {
    awk '/^write_bytes:/ {print $2}' "/proc/$1/io"
}

# One load of $seconds against a server; the result goes to $work/<name>-<level>-<run>.
load() {
    local name=$1 addr=$2 level=$3 run=$4 out="$work/$1-$3-$4"
    run_tracked "$loadgen" --addr "$addr" --path "$path" --connections "$level" --seconds "$seconds" \
        --run-id "$name$run" --ids "$ids" >"$out"
}

failures=0
for run in $(seq 1 "$runs"); do
    for level in $levels; do
        out="$work/voltd-$level-$run"
        before=$(count_rows "$storage_url")
        # Reset the high-water mark so each level reports its own peak.
        echo 5 >"/proc/$voltd_pid/clear_refs" 2>/dev/null || true
        thread_cpu "$voltd_pid" >"$work/cpu-before"
        written_before=$(written_bytes "$voltd_pid")
        pg_before=$(postgres_cpu)
        load voltd "$voltd_addr" "$level" "$run"
        pg_after=$(postgres_cpu)
        written_after=$(written_bytes "$voltd_pid")
        thread_cpu "$voltd_pid" >"$work/cpu-after"
        kill -0 "$voltd_pid" 2>/dev/null || die "voltd died (see $work/voltd.log)"
        after=$(count_rows "$storage_url")
        rss_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$voltd_pid/status")
        echo "rows=$((after - before))" >>"$out"
        echo "rss_kb=$rss_kb" >>"$out"
        acked=$(value stored "$out")
        written_kb=$(awk -v a="$written_before" -v b="$written_after" -v n="$acked" \
            'BEGIN {printf "%.2f", n ? (b - a) / n / 1024 : 0}')
        echo "written_kb=$written_kb" >>"$out"
        rows=$((after - before))
        echo "run $run, $level connections: $(value ok_per_sec "$out") events/s," \
            "p99 $(value p99_ms "$out") ms, acked $acked, rows $rows," \
            "503s $(value unavailable "$out"), rss ${rss_kb} kB," \
            "${written_kb} kB written per event" >&2
        echo "  voltd CPU per acknowledged event, by thread:" \
            "$(cpu_per "$acked" "$work/cpu-before" "$work/cpu-after")" >&2
        if [ "$store" = postgres ]; then
            echo "  PostgreSQL server CPU per acknowledged event:" \
                "$(us_per "$acked" "$pg_before" "$pg_after") us" >&2
        fi
        if [ "$rows" != "$acked" ] || [ "$(value other_ok "$out")" != 0 ] ||
            [ "$(value other_status "$out")" != 0 ] || [ "$(value transport_errors "$out")" != 0 ]; then
            echo "bench: MISMATCH at $level connections, run $run:" >&2
            cat "$out" >&2
            failures=$((failures + 1))
        fi
        thread_cpu "$noop_pid" >"$work/cpu-before"
        load noop "$noop_addr" "$level" "$run"
        thread_cpu "$noop_pid" >"$work/cpu-after"
        echo "run $run, $level connections, no-op: $(value ok_per_sec "$work/noop-$level-$run") req/s" >&2
        echo "  no-op CPU per answered request, by thread:" \
            "$(cpu_per "$(value stored "$work/noop-$level-$run")" "$work/cpu-before" "$work/cpu-after")" >&2
    done
done

maximum() { sort -g | tail -n1; }
over_runs() { # name level key reducer
    for run in $(seq 1 "$runs"); do value "$3" "$work/$1-$2-$run"; done | $4
}
total_over_runs() {
    for run in $(seq 1 "$runs"); do value "$3" "$work/$1-$2-$run"; done | awk '{s+=$1} END {print s}'
}

echo
echo "| connections | voltd events/s | p50 ms | p99 ms | max ms | peak RSS MB | kB written/event | 503s | acked = stored | no-op req/s | no-op p99 ms | voltd / no-op |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
for level in $levels; do
    rate=$(over_runs voltd "$level" ok_per_sec median)
    noop_rate=$(over_runs noop "$level" ok_per_sec median)
    acked=$(total_over_runs voltd "$level" stored)
    rows=$(total_over_runs voltd "$level" rows)
    check="yes ($rows)"
    [ "$acked" = "$rows" ] || check="**NO: $acked acked, $rows stored**"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$level" "$rate" \
        "$(over_runs voltd "$level" p50_ms median)" \
        "$(over_runs voltd "$level" p99_ms median)" \
        "$(over_runs voltd "$level" max_ms median)" \
        "$(over_runs voltd "$level" rss_kb maximum | awk '{printf "%.1f", $1/1024}')" \
        "$(over_runs voltd "$level" written_kb median)" \
        "$(total_over_runs voltd "$level" unavailable)" \
        "$check" "$noop_rate" \
        "$(over_runs noop "$level" p99_ms median)" \
        "$(awk -v a="$rate" -v b="$noop_rate" 'BEGIN {printf "%.0f%%", b ? 100*a/b : 0}')"
done
echo
echo "Store: $store, $ids message ids. Medians of $runs run(s) of ${seconds}s each; 503s and acked/stored are totals over the runs;" \
    "peak RSS is the highest VmHWM of the voltd process at that level;" \
    "kB written/event is the voltd process's write_bytes (/proc/PID/io) per acknowledged event."

[ "$failures" = 0 ] || die "$failures load(s) where stored rows != acknowledged events"
