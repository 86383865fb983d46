#!/usr/bin/env bash
# Forwarding benchmark: a burst of events posted as fast as a release voltd takes them, with
# no sink and then with a broker sink attached; how fast they are stored, how fast they reach
# the broker, and how long the broker lags behind once posting stops.
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
# deleted afterwards. Prints a markdown table of medians; exits non-zero when a run stores
# fewer events than were acknowledged or the stream never receives them all.
set -euo pipefail

events=${BENCH_EVENTS:-100000}
runs=${BENCH_RUNS:-3}
connections=${BENCH_CONNECTIONS:-64}
sinks=${BENCH_SINKS:-none redis}
store=${BENCH_STORE:-sqlite}
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
nats_url=${BENCH_NATS_URL:-nats://127.0.0.1:4222}
# How long the stream may lag behind before the run counts as failed.
drain_limit=${BENCH_DRAIN_LIMIT:-120}
postgres_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
case "$store" in sqlite | postgres) ;; *) echo "BENCH_STORE must be sqlite or postgres" >&2; exit 2 ;; esac
for kind in $sinks; do
    case "$kind" in none | redis | nats) ;; *) echo "BENCH_SINKS takes none, redis and nats, not $kind" >&2; exit 2 ;; esac
done
if [ -n "${BENCH_VOLTD:-}" ]; then
    voltd_bin=$(realpath -e "$BENCH_VOLTD" 2>/dev/null) && [ -x "$voltd_bin" ] ||
        { echo "BENCH_VOLTD must name an executable voltd binary; $BENCH_VOLTD is not one" >&2; exit 2; }
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case " $sinks " in *" redis "*)
    command -v redis-cli >/dev/null || { echo "bench: needs redis-cli (Debian package redis-tools)" >&2; exit 2; }
    redis-cli -u "$redis_url" PING >/dev/null || { echo "bench: Redis does not answer at $redis_url" >&2; exit 2; }
esac

echo "Building (release)..." >&2
if [ -z "${BENCH_VOLTD:-}" ]; then
    cargo build --release --locked --bin voltd >&2
    voltd_bin=${CARGO_TARGET_DIR:-$root/target}/release/voltd
fi
cargo build --release --locked --manifest-path bench/Cargo.toml \
    --target-dir "$root/bench/target" >&2
loadgen=$root/bench/target/release/loadgen
jetstream=$root/bench/target/release/jetstream
echo "Benchmarking $voltd_bin: $events events per run, $connections connections, $runs run(s)" >&2

work=$(mktemp -d)
voltd_pid=""
# The run's stream and its kind (redis or nats), deleted when the run ends.
stream=""
stream_kind=""
schema=""
stop_run() {
    if [ -n "$voltd_pid" ]; then
        kill "$voltd_pid" 2>/dev/null || true
        wait "$voltd_pid" 2>/dev/null || true
        voltd_pid=""
    fi
    if [ -n "$stream" ]; then
        if [ "$stream_kind" = nats ]; then
            "$jetstream" delete "$nats_url" "$stream" || true
        else
            redis-cli -u "$redis_url" DEL "$stream" >/dev/null || true
        fi
        stream=""
    fi
    if [ -n "$schema" ]; then
        psql -q "$postgres_url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true
        schema=""
    fi
}
cleanup() {
    stop_run
    rm -rf "$work"
}
trap cleanup EXIT

die() {
    echo "bench: FAILED: $*" >&2
    exit 1
}

now() { date +%s.%N; }
value() { grep "^$1=" "$2" | cut -d= -f2; }

count_rows() {
    if [ "$store" = postgres ]; then
        psql -At "$postgres_url" -c "SELECT COUNT(*) FROM $schema.events"
    else
        python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM events").fetchone()[0])' "$work/$1/voltd.db"
    fi
}

# How many events the run's stream holds.
stream_length() {
    if [ "$stream_kind" = nats ]; then
        "$jetstream" count "$nats_url" "$stream"
    else
        redis-cli -u "$redis_url" XLEN "$stream"
    fi
}

# One run with sink kind $1 (none, redis or nats), number $2; results in $work/<kind>-<run>.
run_once() {
    local kind=$1 run=$2 dir="$work/$1-$2" out="$work/$1-$2.out" storage_url path addr
    mkdir -p "$dir"
    path="/volt/bench-$$-$kind-$run"
    if [ "$store" = postgres ]; then
        schema="voltd_fwd_bench_$$_${kind}_$run"
        psql -q "$postgres_url" -c "CREATE SCHEMA $schema" || die "cannot create a schema at $postgres_url"
        case "$postgres_url" in *\?*) separator="&" ;; *) separator="?" ;; esac
        storage_url="$postgres_url${separator}options=-csearch_path%3D$schema"
    else
        storage_url="sqlite://$dir/voltd.db"
    fi
    cat >"$dir/volt.toml" <<EOF
[api]
register = "never"

[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080$path"

[storage]
url = "$storage_url"

[admin]
enabled = false
EOF
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
    "$voltd_bin" --config "$dir/volt.toml" run 2>"$dir/voltd.log" &
    voltd_pid=$!
    for _ in $(seq 1 300); do
        addr=$(grep -o 'Receiving webhook events on http://[0-9.:]*' "$dir/voltd.log" 2>/dev/null |
            grep -o '127\.0\.0\.1:[0-9]*' | head -n1 || true)
        [ -n "$addr" ] && break
        kill -0 "$voltd_pid" 2>/dev/null || { cat "$dir/voltd.log" >&2; die "voltd exited during start-up"; }
        sleep 0.1
    done
    [ -n "$addr" ] || die "voltd did not start within 30 s (see $dir/voltd.log)"

    local started ingested drained=""
    started=$(now)
    "$loadgen" --addr "$addr" --path "$path" --connections "$connections" \
        --events "$events" --seconds 600 --run-id "$kind$run" >"$out"
    ingested=$(now)
    local acked rows
    acked=$(value stored "$out")
    rows=$(count_rows "$kind-$run")
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
    echo "run $run, sink $kind: ingest $(value ok_per_sec "$out") events/s, p99 $(value p99_ms "$out") ms${drained:+, forwarded $(value forwarded_per_sec "$out") events/s, lag $(value lag_s "$out") s}" >&2
    stop_run
}

for run in $(seq 1 "$runs"); do
    for kind in $sinks; do
        run_once "$kind" "$run"
    done
done

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
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
