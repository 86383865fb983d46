#!/usr/bin/env python3
"""What SQLite alone does on this machine with voltd's events schema, no HTTP and no Rust.

Inserts 40,000 ~300-byte events in multi-row INSERT batches, one transaction per batch, in WAL
mode with synchronous=FULL, keyed by random message ids (as Volt's are), and varies one thing
at a time. It bounds what any voltd change can reach without changing the schema or durability.

    python3 bench/sqlite-floor.py
"""
import os
import sqlite3
import tempfile
import time
import uuid

COLUMNS = ("received_at, content_type, remote_addr, event_type, direction, from_number, "
           "to_number, message_id, status, error_code, text, body, dedup_key")


def run(label, sync="full", dedup=True, page=4096, rows=40000, batch=64):
    with tempfile.TemporaryDirectory() as work:
        db = sqlite3.connect(os.path.join(work, "floor.db"), isolation_level=None)
        db.execute(f"PRAGMA page_size={page}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sync}")
        db.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, "
            "content_type TEXT, remote_addr TEXT, event_type TEXT, direction TEXT, from_number TEXT, "
            "to_number TEXT, message_id TEXT, status TEXT, error_code TEXT, text TEXT, "
            f"body BLOB NOT NULL, dedup_key TEXT {'UNIQUE' if dedup else ''})")
        db.execute("CREATE INDEX events_by_received_at ON events (received_at)")
        db.execute("CREATE INDEX events_by_type ON events (event_type, received_at)")
        sql = (f"INSERT INTO events ({COLUMNS}) VALUES "
               + ",".join(["(" + ",".join("?" * 13) + ")"] * batch))
        body = b"x" * 300
        start, cpu = time.time(), time.process_time()
        n = 0
        for _ in range(rows // batch):
            args = []
            for _ in range(batch):
                n += 1
                message_id = str(uuid.uuid4())
                args += [f"2026-11-26T12:00:00.{n:06d}Z", "application/json", "127.0.0.1:5555",
                         "message.received", "inbound", "+15555550123", "+15555550145",
                         message_id, "received", None, "Yes please", body,
                         f"message.received\x1f{message_id}\x1fstatus:received"]
            db.execute("BEGIN")
            db.execute(sql, args)
            db.execute("COMMIT")
        wall, cpu = time.time() - start, time.process_time() - cpu
        db.close()
    print(f"| {label} | {rows / wall:.0f} | {cpu / rows * 1e6:.0f} |")


def sync_latency(writes=300):
    """Median time of one 4 KiB overwrite + fdatasync, which every durable commit waits for."""
    with tempfile.TemporaryDirectory() as work:
        fd = os.open(os.path.join(work, "sync"), os.O_RDWR | os.O_CREAT)
        os.write(fd, b"\0" * 4096 * writes)
        os.fsync(fd)
        times = []
        for i in range(writes):
            start = time.perf_counter()
            os.pwrite(fd, b"x" * 4096, 4096 * i)
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
        os.close(fd)
    times.sort()
    print(f"fdatasync of a 4 KiB overwrite: median {times[len(times) // 2] * 1e3:.2f} ms, "
          f"p90 {times[len(times) * 9 // 10] * 1e3:.2f} ms")
    print()


sync_latency()
print("| variant (batches of 64 unless noted) | rows/s | CPU us/row |")
print("|---|---:|---:|")
run("voltd's schema and settings")
run("without the UNIQUE dedup_key index", dedup=False)
run("synchronous=OFF (not durable)", sync="off")
run("page_size=1024", page=1024)
run("batches of 256", batch=256)
