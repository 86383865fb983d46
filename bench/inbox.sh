#!/usr/bin/env bash
# Web inbox benchmark: fill a store with 1,000,000 events, start a release voltd on it, and
# time the pages of the web inbox over HTTP (curl's time_total, loopback), reporting medians.
# The goal is under 50 ms each for the inbox and a conversation page.
#
#   bench/inbox.sh                          # SQLite, 1,000,000 events, 11 requests a page
#   BENCH_STORE=postgres bench/inbox.sh     # the same on PostgreSQL (BENCH_POSTGRES_URL)
#   BENCH_EVENTS=100000 BENCH_RUNS=5 bench/inbox.sh
#   BENCH_VOLTD=target/release/voltd bench/inbox.sh   # skip the build
#   BENCH_EXPLAIN=1 bench/inbox.sh          # also print the databases' query plans
#
# The events: every third one received from one of 1,000 customers by the line
# +15550000000, the others sent by the line to them (sent, then finalized). So a customer's
# conversation has 1,000 events spread over the whole table, and the line's has all of them.
set -euo pipefail

events=${BENCH_EVENTS:-1000000}
runs=${BENCH_RUNS:-11}
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
[ "$store" = postgres ] || command -v sqlite3 >/dev/null || die "needs the sqlite3 command (Debian package sqlite3)"
new_storage inbox
write_config "$work/volt.toml" /volt/bench-inbox-4f1c9a7e2b6d8035 "$storage_url" 127.0.0.1:0
cat >>"$work/volt.toml" <<EOF

[log]
level = "warn,voltd::startup=info"
EOF
"$voltd_bin" --config "$work/volt.toml" migrate >&2

# Columns: the event's number i, then the SQL of each field from it; one statement per
# database fills the table (the same rows in both).
kind="i % 3"
fields="CASE $kind WHEN 0 THEN 'message.received' WHEN 1 THEN 'message.sent' ELSE 'message.finalized' END,
    CASE $kind WHEN 0 THEN 'inbound' ELSE 'outbound' END,
    CASE $kind WHEN 0 THEN customer ELSE '+15550000000' END,
    CASE $kind WHEN 0 THEN '+15550000000' ELSE customer END,
    'm' || ((i + 1) / 3), CASE $kind WHEN 1 THEN 'sent' WHEN 2 THEN 'delivered' END,
    'Message number ' || i"
columns="received_at, event_type, direction, from_number, to_number, message_id, status, text, body"
started=$(date +%s)
echo "Filling the store with $events events..." >&2
if [ "$store" = postgres ]; then
    psql -q "$storage_url" <<EOF
INSERT INTO events ($columns)
SELECT timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', $fields,
    convert_to('{"payload":{"text":"Message number ' || i || '"}}', 'UTF8')
FROM (SELECT i, '+1555' || lpad((i / 3 % 1000 + 1)::text, 7, '0') AS customer
      FROM generate_series(1, $events) AS i) AS numbered;
ANALYZE events;
EOF
else
    sqlite3 "$(sqlite_file "$storage_url")" >/dev/null <<EOF
PRAGMA journal_mode = WAL;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $events)
INSERT INTO events ($columns)
SELECT strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', '+' || i || ' seconds') || '.000000Z', $fields,
    CAST('{"payload":{"text":"Message number ' || i || '"}}' AS BLOB)
FROM (SELECT i, printf('+1555%07d', i / 3 % 1000 + 1) AS customer FROM n);
EOF
fi
echo "Filled in $(( $(date +%s) - started )) s" >&2

start_voltd "$work/volt.toml" "$work/voltd.log" 60
admin=$(wait_for_addr "$work/voltd.log" 'web inbox on http://127\.0\.0\.1:[0-9]*' "$voltd_pid" 60)

middle=$(( events / 2 ))
pages=(
    "inbox, newest page|/"
    "inbox, a page in the middle|/?before=$middle"
    "inbox, one type|/?type=message.received"
    "inbox, one number|/?number=%2B15550000500"
    "conversation with a customer (1,000 events)|/conversations/%2B15550000500"
    "conversation with the line (every event)|/conversations/%2B15550000000"
    "conversation with a customer, earlier page|/conversations/%2B15550000500?before=$middle"
)
echo
echo "| Page | Median ms | Min ms | Max ms |"
echo "|---|---|---|---|"
slow=0
for page in "${pages[@]}"; do
    name=${page%%|*}
    path=${page#*|}
    status=$(curl -s -o "$work/page.html" -w '%{http_code}' "http://$admin$path")
    [ "$status" = 200 ] || die "GET $path answered $status: $(head -c 300 "$work/page.html")"
    grep -q 'Message number' "$work/page.html" || die "GET $path shows no event"
    times=$(for _ in $(seq 1 "$runs"); do
        curl -s -o /dev/null -w '%{time_total}\n' "http://$admin$path"
    done | awk '{ printf "%.1f\n", $1 * 1000 }')
    med=$(median <<<"$times")
    echo "| $name | $med | $(sort -n <<<"$times" | head -n1) | $(sort -n <<<"$times" | tail -n1) |"
    awk -v m="$med" 'BEGIN { exit !(m >= 50) }' && slow=1
done
echo
echo "$store, $events events, $runs requests a page (after one warm-up), $(nproc) cores"

if [ -n "${BENCH_EXPLAIN:-}" ]; then
    summary="id, received_at, event_type, direction, from_number, to_number, message_id, status, error_code, text, signature"
    inbox="SELECT $summary FROM events WHERE id < $middle ORDER BY id DESC LIMIT 51"
    branch() { echo "SELECT * FROM (SELECT $summary FROM events WHERE $1 = '+15550000500' ORDER BY id DESC LIMIT 201) AS $2"; }
    conversation="$(branch from_number sent_by) UNION $(branch to_number sent_to) ORDER BY id DESC LIMIT 201"
    echo
    if [ "$store" = postgres ]; then
        for sql in "$inbox" "$conversation"; do
            echo "EXPLAIN ANALYZE $sql;"
            psql -q "$storage_url" -c "EXPLAIN (ANALYZE, COSTS OFF) $sql"
        done
    else
        for sql in "$inbox" "$conversation"; do
            echo "EXPLAIN QUERY PLAN $sql;"
            sqlite3 "$(sqlite_file "$storage_url")" "EXPLAIN QUERY PLAN $sql"
        done
    fi
fi
[ "$slow" = 0 ] || echo "bench: a page took 50 ms or more" >&2
