#!/usr/bin/env bash
# Memory after connection floods: RSS of voltd idle, during and after waves of slow
# connections (each sends a request head and part of its body, then stalls until voltd
# answers 408 and closes it), and FLOOD_SETTLE seconds after the last one closed.
#
#   bench/conn-flood.sh                          # release build, 3 waves x 3,000 connections
#   FLOOD_RUNS=3 bench/conn-flood.sh             # repeat, for medians
#   FLOOD_VOLTD=target/debug/voltd bench/conn-flood.sh
#   FLOOD_ENV="MALLOC_ARENA_MAX=2" bench/conn-flood.sh   # an allocator setting to compare
#   FLOOD_MAX_CONNECTIONS=10000 bench/conn-flood.sh      # another [server] max_connections
#
# Prints one line per run: RSS in MB idle, at each wave's peak, after each wave, and settled.
set -euo pipefail

waves=${FLOOD_WAVES:-3}
connections=${FLOOD_CONNECTIONS:-3000}
settle=${FLOOD_SETTLE:-10}
runs=${FLOOD_RUNS:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${FLOOD_VOLTD:-}" ]; then
    voltd_bin=$(realpath -e "$FLOOD_VOLTD")
else
    (cd "$root" && cargo build --release --locked --bin voltd >&2)
    voltd_bin=${CARGO_TARGET_DIR:-$root/target}/release/voltd
fi
ulimit -n $((connections + 1024))

work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Opens the wave's connections, samples voltd's RSS while they are open, and returns once
# voltd has closed every one of them; prints the peak RSS seen.
flood() {
    python3 - "$1" "$2" "$3" <<'PY'
import socket, sys, time
port, count, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
head = (b"POST /volt/flood HTTP/1.1\r\nHost: voltd\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{\"payload\":")
sockets, peak = [], rss()
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    sockets.append(s)
    if len(sockets) % 500 == 0:
        peak = max(peak, rss())
deadline = time.time() + 120
for s in sockets:
    s.settimeout(max(1, deadline - time.time()))
    try:
        while s.recv(65536):
            peak = max(peak, rss())
    except OSError:
        pass
    s.close()
print(f"{max(peak, rss()):.1f}")
PY
}

for run in $(seq 1 "$runs"); do
    port=$(free_port)
    db="$work/voltd-$run.db"
    cat >"$work/volt.toml" <<TOML
[api]
register = "never"
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port/volt/flood"
request_timeout_secs = 5
${FLOOD_MAX_CONNECTIONS:+max_connections = $FLOOD_MAX_CONNECTIONS}
[storage]
url = "sqlite://$db"
[log]
level = "error"
TOML
    env ${FLOOD_ENV:-} "$voltd_bin" --config "$work/volt.toml" run >"$work/voltd.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    line="run $run: idle $(rss_mb "$pid")"
    for wave in $(seq 1 "$waves"); do
        peak=$(flood "$port" "$connections" "$pid")
        line="$line | wave $wave peak $peak after $(rss_mb "$pid")"
    done
    sleep "$settle"
    echo "$line | ${settle}s later $(rss_mb "$pid") MB"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
done
