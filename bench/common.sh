# shellcheck shell=bash disable=SC2034 # the variables set here are read by the scripts sourcing it
# Shared by the bench scripts, sourced right after `set -euo pipefail` and the script's own
# settings. On sourcing it picks the store (BENCH_STORE, BENCH_POSTGRES_URL) and the voltd to
# run (BENCH_VOLTD, or a release build of this tree), makes a scratch directory $work and
# sets the trap that undoes everything on exit, failed or not. The rest are functions:
# storages, configs, starting servers, counting rows, CPU time.

store=${BENCH_STORE:-sqlite}
# A local server without TLS, as a PostgreSQL on the same machine is usually reached.
postgres_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
case "$store" in sqlite | postgres) ;; *) echo "BENCH_STORE must be sqlite or postgres" >&2; exit 2 ;; esac
if [ -n "${BENCH_VOLTD:-}" ]; then
    # Resolved before the cd below, so a relative path means what it meant to the caller.
    if ! voltd_bin=$(realpath -e "$BENCH_VOLTD" 2>/dev/null) || [ ! -x "$voltd_bin" ]; then
        echo "BENCH_VOLTD must name an executable voltd binary; $BENCH_VOLTD is not one" >&2
        exit 2
    fi
fi
if [ "$store" = postgres ] && ! command -v psql >/dev/null; then
    echo "bench: BENCH_STORE=postgres needs psql (Debian package postgresql-client)" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2

echo "Building (release)..." >&2
if [ -z "${BENCH_VOLTD:-}" ]; then
    cargo build --release --locked --bin voltd >&2
    voltd_bin=${CARGO_TARGET_DIR:-$root/target}/release/voltd
fi

work=$(mktemp -d)
# Every process started (killed on exit), every PostgreSQL schema and SQLite file made
# (dropped by drop_storages, and on exit).
pids=()
schemas=()
sqlite_files=()
cleanup() {
    local pid
    # All told to stop before any is waited for: a voltd may wait for the load generator's
    # connections to close.
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    # A script with more to undo (a broker's stream, say) defines bench_cleanup; it runs once
    # nothing can write there any more.
    if declare -F bench_cleanup >/dev/null; then bench_cleanup || true; fi
    drop_storages
    rm -rf "$work"
}
trap cleanup EXIT

die() {
    echo "bench: FAILED: $*" >&2
    exit 1
}

# The value of key $1 in a key=value file $2.
value() { grep "^$1=" "$2" | cut -d= -f2; }

# The median of the numbers on standard input, one a line.
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# Builds the load generator and its helpers (loadgen, noop-server, jetstream).
build_bench_tools() {
    cargo build --release --locked --manifest-path bench/Cargo.toml \
        --target-dir "$root/bench/target" >&2
    loadgen=$root/bench/target/release/loadgen
    noop_bin=$root/bench/target/release/noop-server
    jetstream=$root/bench/target/release/jetstream
}

# Sets storage_url to an empty database of its own, named after $1 (letters, digits and _):
# a new schema on PostgreSQL, a new file in $work on SQLite. Not a function to call in $(...):
# the schema or file must be recorded here to be dropped.
new_storage() {
    if [ "$store" = postgres ]; then
        local schema="voltd_bench_$$_$1" separator="?"
        psql -q "$postgres_url" -c "CREATE SCHEMA $schema" || die "cannot create a schema at $postgres_url"
        schemas+=("$schema")
        case "$postgres_url" in *\?*) separator="&" ;; esac
        storage_url="$postgres_url${separator}options=-csearch_path%3D$schema"
    else
        local file="$work/$1.db"
        [ ! -e "$file" ] || die "$file exists already"
        sqlite_files+=("$file")
        storage_url="sqlite://$file"
    fi
}

# Drops every schema and deletes every SQLite file made so far: a run's data need not outlive it.
drop_storages() {
    local schema file
    for schema in "${schemas[@]}"; do
        psql -q "$postgres_url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true
    done
    for file in "${sqlite_files[@]}"; do
        rm -f "$file" "$file-wal" "$file-shm"
    done
    schemas=()
    sqlite_files=()
}

# The path of the SQLite file of storage URL $1.
sqlite_file() { echo "${1#sqlite://}"; }

# How many events the storage at URL $1 holds.
count_rows() {
    case "$1" in
    sqlite://*)
        if command -v sqlite3 >/dev/null; then
            sqlite3 "$(sqlite_file "$1")" "SELECT COUNT(*) FROM events"
        else
            python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM events").fetchone()[0])' "$(sqlite_file "$1")"
        fi
        ;;
    *) psql -At "$1" -c "SELECT COUNT(*) FROM events" ;;
    esac
}

# Writes to $1 the config every bench starts from: registration off, any free loopback port,
# webhook path $2, storage URL $3, no admin listener unless $4 gives its address. A script
# appends its own sections ([[forward]], [log]).
write_config() {
    local admin='enabled = false'
    [ -z "${4:-}" ] || admin="listen = \"$4\""
    cat >"$1" <<EOF
[api]
register = "never"

[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080$2"

[storage]
url = "$3"

[admin]
$admin
EOF
}

# Waits (at most $4 seconds, 30 unless given) for a line matching $2 in file $1, written by
# process $3, and prints the loopback address in it.
wait_for_addr() {
    local file=$1 pattern=$2 pid=$3 limit=${4:-30} addr=""
    for _ in $(seq 1 $((limit * 10))); do
        addr=$(grep -o "$pattern" "$file" 2>/dev/null | grep -o '127\.0\.0\.1:[0-9]*' | head -n1 || true)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "server exited during start-up (see $file)"; }
        sleep 0.1
    done
    die "server did not start within $limit s (see $file)"
}

# Starts voltd with config $1, its log in $2, and waits (at most $3 seconds, 30 unless given)
# until it receives webhooks: sets voltd_pid and voltd_addr. Not a function to call in $(...):
# the pid must be recorded here to be killed.
start_voltd() {
    "$voltd_bin" --config "$1" run 2>"$2" &
    voltd_pid=$!
    pids+=("$voltd_pid")
    voltd_addr=$(wait_for_addr "$2" 'Receiving webhook events on http://[0-9.:]*' "$voltd_pid" "${3:-30}")
}

# Stops process $1, started by this script, and forgets it.
stop_process() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_process "$1"
}

# Takes process $1 off the list of those to kill on exit.
forget_process() {
    local pid kept=()
    for pid in "${pids[@]}"; do
        [ "$pid" = "$1" ] || kept+=("$pid")
    done
    pids=("${kept[@]}")
}

# Runs a command to its end, with its status, as a process the exit trap knows of: a load
# generator must not outlive an interrupted bench.
run_tracked() {
    local pid status=0
    "$@" &
    pid=$!
    pids+=("$pid")
    wait "$pid" || status=$?
    forget_process "$pid"
    return "$status"
}

# CPU time (ns) of each thread of process $1, summed by thread name: where a request's CPU goes.
thread_cpu() {
    for task in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr ' ' _ <"$task/comm")" "$(cut -d' ' -f1 "$task/schedstat")"
    done | awk '{ns[$1] += $2} END {for (n in ns) print n, ns[n]}' | sort
}

# CPU per item (µs) of each thread between the thread_cpu files $2 and $3, for $1 items, one
# "name µs" a line. A thread started in between counts from zero.
cpu_per_thread() {
    join -a 2 -e 0 -o 0,1.2,2.2 "$2" "$3" |
        awk -v n="$1" '{printf "%s %.1f\n", $1, n ? ($3 - $2) / n / 1000 : 0}'
}

# The same on one line, for the progress messages.
cpu_per() {
    cpu_per_thread "$@" | awk '{printf "%s %s us; ", $1, $2}'
}

# CPU time (ns) of every process named exactly $1 (its server processes: redis-server,
# nats-server, postgres); fails, printing nothing, if none runs.
server_cpu() {
    local ticks pids_of
    pids_of=$(pgrep -x "$1") || return 1
    ticks=$(getconf CLK_TCK)
    for pid in $pids_of; do
        awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null
    done | awk -v t="$ticks" '{s += $1} END {printf "%.0f\n", s * 1e9 / t}'
}

# CPU time (ns) of every PostgreSQL server process: with that store, part of each event's
# work is done there. 0 on SQLite.
postgres_cpu() {
    if [ "$store" != postgres ]; then echo 0; return; fi
    server_cpu postgres || echo 0
}

# Microseconds per item of $1 items between the nanosecond counts $2 and $3.
us_per() {
    awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {printf "%.1f", n ? (b - a) / n / 1000 : 0}'
}
