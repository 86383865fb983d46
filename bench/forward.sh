#!/usr/bin/env bash
# Forwarding benchmark: a burst of events posted as fast as a release voltd takes them, with
# no sink and then with a broker sink attached; how fast they are stored, how fast they reach
# the broker, how long the broker lags behind once posting stops, and where the CPU goes.
#
#   bench/forward.sh                              # 3 runs of 100,000 events, 64 connections
#   BENCH_EVENTS=20000 BENCH_RUNS=1 bench/forward.sh
#   BENCH_SINKS="none nats" bench/forward.sh      # a JetStream sink instead of Redis
#   BENCH_STORE=postgres bench/forward.sh         # the same on PostgreSQL (BENCH_POSTGRES_URL)
#   BENCH_VOLTD=/tmp/voltd-before bench/forward.sh   # run that voltd instead of building one
#
# BENCH_SINKS (default "none redis") lists the kinds to run, in turn within each run:
#   none   no sink: the ingest baseline
#   redis  a Redis stream; needs Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379/0)
#          and redis-cli, which counts the entries (XLEN)
#   nats   a JetStream stream (file storage) capturing voltd.bench.<pid>.<run>; needs
#          nats-server -js at BENCH_NATS_URL (default nats://127.0.0.1:4222). bench/'s own
#          `jetstream` helper creates, counts and deletes it: no `nats` CLI is needed
# Each run starts voltd on a fresh database and uses a stream of its own, created before and
# deleted afterwards. Prints a markdown table of medians, then one of CPU per event: voltd's
# by thread, and the broker's (redis-server or nats-server on this machine, when found) and
# PostgreSQL's server processes'. Exits non-zero when a run stores fewer events than were
# acknowledged or the stream never receives them all.
set -euo pipefail

events=${BENCH_EVENTS:-100000}
runs=${BENCH_RUNS:-3}
connections=${BENCH_CONNECTIONS:-64}
sinks=${BENCH_SINKS:-none redis}
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
nats_url=${BENCH_NATS_URL:-nats://127.0.0.1:4222}
# How long the stream may lag behind before the run counts as failed.
drain_limit=${BENCH_DRAIN_LIMIT:-120}
for kind in $sinks; do
    case "$kind" in none | redis | nats) ;; *) echo "BENCH_SINKS takes none, redis and nats, not $kind" >&2; exit 2 ;; esac
done
case " $sinks " in *" redis "*)
    command -v redis-cli >/dev/null || { echo "bench: needs redis-cli (Debian package redis-tools)" >&2; exit 2; }
    redis-cli -u "$redis_url" PING >/dev/null || { echo "bench: Redis does not answer at $redis_url" >&2; exit 2; }
esac
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
build_bench_tools
echo "Benchmarking $voltd_bin: $events events per run, $connections connections, $runs run(s)" >&2

# The run's stream and its kind (redis or nats), deleted when the run ends or the script exits.
stream=""
stream_kind=""
delete_stream() {
    if [ -n "$stream" ]; then
        if [ "$stream_kind" = nats ]; then
            "$jetstream" delete "$nats_url" "$stream" || true
        else
            redis-cli -u "$redis_url" DEL "$stream" >/dev/null || true
        fi
        stream=""
    fi
}
bench_cleanup() { delete_stream; }

now() { date +%s.%N; }

# How many events the run's stream holds.
stream_length() {
    if [ "$stream_kind" = nats ]; then
        "$jetstream" count "$nats_url" "$stream"
    else
        redis-cli -u "$redis_url" XLEN "$stream"
    fi
}

# The broker server's process name for sink kind $1; nothing for none.
broker_of() {
    case "$1" in redis) echo redis-server ;; nats) echo nats-server ;; esac
}

# One run with sink kind $1 (none, redis or nats), number $2; results in $work/<kind>-<run>.out
# and, CPU per event as "label<TAB>µs" lines, $work/<kind>-<run>.cpu.
run_once() {
    local kind=$1 run=$2 dir="$work/$1-$2" out="$work/$1-$2.out" cpu="$work/$1-$2.cpu" path
    mkdir -p "$dir"
    path="/volt/bench-$$-$kind-$run"
    new_storage "${kind}_$run"
    write_config "$dir/volt.toml" "$path" "$storage_url"
    if [ "$kind" = redis ]; then
        stream="voltd-bench:$$:$run" stream_kind=redis
        cat >>"$dir/volt.toml" <<EOF

[[forward]]
name = "bus"
type = "redis"
url = "$redis_url"
stream = "$stream"
EOF
    elif [ "$kind" = nats ]; then
        local subject="voltd.bench.$$.$run"
        "$jetstream" create "$nats_url" "VOLTD_BENCH_$$_$run" "$subject" ||
            die "cannot create a JetStream stream at $nats_url (is nats-server running with -js?)"
        stream="VOLTD_BENCH_$$_$run" stream_kind=nats
        cat >>"$dir/volt.toml" <<EOF

[[forward]]
name = "bus"
type = "nats"
url = "$nats_url"
subject = "$subject"
EOF
    fi
    start_voltd "$dir/volt.toml" "$dir/voltd.log"

    # CPU is counted from before the first post until the stream holds every event (with no
    # sink, until the last acknowledgement): forwarding's work is part of each event's cost.
    local broker broker_before="" broker_after="" pg_before pg_after
    broker=$(broker_of "$kind")
    [ -z "$broker" ] || broker_before=$(server_cpu "$broker" || true)
    pg_before=$(postgres_cpu)
    thread_cpu "$voltd_pid" >"$dir/cpu-before"

    local started ingested drained=""
    started=$(now)
    run_tracked "$loadgen" --addr "$voltd_addr" --path "$path" --connections "$connections" \
        --events "$events" --seconds 600 --run-id "$kind$run" >"$out"
    ingested=$(now)
    local acked rows
    acked=$(value stored "$out")
    rows=$(count_rows "$storage_url")
    [ "$acked" = "$events" ] || die "$kind run $run: $acked of $events events acknowledged (see $out)"
    [ "$rows" = "$acked" ] || die "$kind run $run: $rows rows stored, $acked acknowledged"
    if [ "$kind" != none ]; then
        local deadline entries
        deadline=$(awk -v t="$ingested" -v l="$drain_limit" 'BEGIN {printf "%.3f", t + l}')
        while :; do
            entries=$(stream_length) || die "$kind run $run: cannot count the events in $stream"
            if [ "$entries" -ge "$events" ]; then drained=$(now); break; fi
            awk -v t="$(now)" -v d="$deadline" 'BEGIN {exit !(t > d)}' &&
                die "$kind run $run: $entries of $events events in the stream after ${drain_limit} s"
            sleep 0.05
        done
        # The load generator starts posting 0.2 s after it is started.
        awk -v s="$started" -v i="$ingested" -v d="$drained" -v n="$events" 'BEGIN {
            printf "forwarded_per_sec=%.0f\nlag_s=%.2f\n", n / (d - s - 0.2), d - i }' >>"$out"
    fi
    kill -0 "$voltd_pid" 2>/dev/null || die "$kind run $run: voltd died (see $dir/voltd.log)"
    thread_cpu "$voltd_pid" >"$dir/cpu-after"
    pg_after=$(postgres_cpu)
    [ -z "$broker_before" ] || broker_after=$(server_cpu "$broker" || true)

    cpu_per_thread "$events" "$dir/cpu-before" "$dir/cpu-after" | awk '{printf "%s\t%s\n", $1, $2}' >"$cpu"
    [ -z "$broker_after" ] ||
        printf '%s (process)\t%s\n' "$broker" "$(us_per "$events" "$broker_before" "$broker_after")" >>"$cpu"
    [ "$store" != postgres ] ||
        printf 'postgres (processes)\t%s\n' "$(us_per "$events" "$pg_before" "$pg_after")" >>"$cpu"

    echo "run $run, sink $kind: ingest $(value ok_per_sec "$out") events/s, p99 $(value p99_ms "$out") ms${drained:+, forwarded $(value forwarded_per_sec "$out") events/s, lag $(value lag_s "$out") s}" >&2
    echo "  voltd CPU per event, by thread:" \
        "$(cpu_per "$events" "$dir/cpu-before" "$dir/cpu-after")" >&2
    if [ -n "$broker_after" ]; then
        echo "  $broker CPU per event: $(us_per "$events" "$broker_before" "$broker_after") us" >&2
    fi
    if [ "$store" = postgres ]; then
        echo "  PostgreSQL server CPU per event: $(us_per "$events" "$pg_before" "$pg_after") us" >&2
    fi
    stop_run
}

# Ends the run: its voltd, its stream and its database.
stop_run() {
    stop_process "$voltd_pid"
    delete_stream
    drop_storages
}

for run in $(seq 1 "$runs"); do
    for kind in $sinks; do
        run_once "$kind" "$run"
    done
done

over_runs() { # kind key
    for run in $(seq 1 "$runs"); do value "$2" "$work/$1-$run.out"; done | median
}

echo
echo "| sink | ingest events/s | ingest p99 ms | forwarded events/s | lag after ingest stops (s) |"
echo "|---|---:|---:|---:|---:|"
for kind in $sinks; do
    if [ "$kind" != none ]; then
        printf '| %s | %s | %s | %s | %s |\n' "$kind" "$(over_runs "$kind" ok_per_sec)" \
            "$(over_runs "$kind" p99_ms)" "$(over_runs "$kind" forwarded_per_sec)" \
            "$(over_runs "$kind" lag_s)"
    else
        printf '| %s | %s | %s | - | - |\n' "$kind" "$(over_runs "$kind" ok_per_sec)" \
            "$(over_runs "$kind" p99_ms)"
    fi
done
echo
echo "Store: $store. Medians of $runs run(s) of $events events at $connections connections."

# CPU per event: per sink, each label's median over the runs (0 in a run that lacks it), the
# largest first, leaving out the idle (0.0).
echo
echo "| sink | thread or server | CPU µs per event |"
echo "|---|---|---:|"
for kind in $sinks; do
    cut -f1 "$work/$kind"-*.cpu | sort -u | while IFS= read -r label; do
        printf '%s\t%s\t%s\n' "$kind" "$label" "$(for run in $(seq 1 "$runs"); do
            awk -F '\t' -v l="$label" '$1 == l {v = $2} END {print v + 0}' "$work/$kind-$run.cpu"
        done | median)"
    done | sort -t "$(printf '\t')" -k3,3gr -k2,2 |
        awk -F '\t' '$3 > 0 {
            # A | in a thread name (actix-rt|system) would end the cell.
            n = split($2, part, "|"); label = part[1]
            for (i = 2; i <= n; i++) label = label "\\|" part[i]
            printf "| %s | %s | %.1f |\n", $1, label, $3
        }'
done
echo
echo "CPU from before the first post until the stream held every event (no sink: until the last" \
    "acknowledgement), per event posted: voltd's threads from /proc/PID/task/*/schedstat, summed by" \
    "name (threads at 0.0 left out); servers from /proc/PID/stat of every process of that name on" \
    "this machine, the bench's polling of the stream included. Medians of $runs run(s)."
