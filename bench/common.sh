# Shared by the bench scripts, sourced right after `set -euo pipefail`: the store to run on
# (BENCH_STORE, BENCH_POSTGRES_URL), the voltd to run (BENCH_VOLTD, or a release build of
# this tree), a scratch directory, and the PostgreSQL schema that holds the run's tables.

store=${BENCH_STORE:-sqlite}
# A local server without TLS, as a PostgreSQL on the same machine is usually reached.
postgres_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
schema="voltd_bench_$$"
case "$store" in sqlite | postgres) ;; *) echo "BENCH_STORE must be sqlite or postgres" >&2; exit 2 ;; esac
if [ -n "${BENCH_VOLTD:-}" ]; then
    # Resolved before the cd below, so a relative path means what it meant to the caller.
    voltd_bin=$(realpath -e "$BENCH_VOLTD" 2>/dev/null) && [ -x "$voltd_bin" ] ||
        { echo "BENCH_VOLTD must name an executable voltd binary; $BENCH_VOLTD is not one" >&2; exit 2; }
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "Building (release)..." >&2
if [ -z "${BENCH_VOLTD:-}" ]; then
    cargo build --release --locked --bin voltd >&2
    voltd_bin=${CARGO_TARGET_DIR:-$root/target}/release/voltd
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
    if [ "$store" = postgres ]; then
        psql -q "$postgres_url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true
    fi
}
trap cleanup EXIT

die() {
    echo "bench: FAILED: $*" >&2
    exit 1
}

# The storage.url of this run: a new schema on PostgreSQL, a file in $work on SQLite.
if [ "$store" = postgres ]; then
    command -v psql >/dev/null || die "BENCH_STORE=postgres needs psql (Debian package postgresql-client)"
    psql -q "$postgres_url" -c "CREATE SCHEMA $schema" || die "cannot create a schema at $postgres_url"
    case "$postgres_url" in *\?*) separator="&" ;; *) separator="?" ;; esac
    storage_url="$postgres_url${separator}options=-csearch_path%3D$schema"
else
    storage_url="sqlite://$work/voltd.db"
fi
