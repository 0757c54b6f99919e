#!/usr/bin/env python3
"""redis-py's client-side cache (RESP3 + CLIENT TRACKING) against a Meridian node.

Usage: tracking_cache.py HOST PORT [WRITER_PORT]

A redis-py client with `protocol=3` and `cache_config=CacheConfig()` reads keys on PORT;
another, plain client writes them, on the same node or on WRITER_PORT (a node of another
region: the writes then reach the reader's node by cross-region replication). Checks that:
  1. repeated reads are served from the client's cache: the server's keyspace_hits grows by
     at most one over 200 GETs of the same key;
  2. after another client's SET, DEL and FLUSHALL the cached reader sees the new state
     (bounded wait: the invalidation push travels on its own);
  3. the cached reader is really tracked by the server (INFO tracking_clients, CLIENT LIST).
Exits 0 on success; on failure prints `FAIL: ...` to stderr and exits 1.
"""
import sys
import time


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    import redis
    from redis.cache import CacheConfig
except ImportError as e:
    fail(f"redis-py >= 5.1 with redis.cache is required ({e}): run .ci/run or `pip install redis`")


def check(cond, msg):
    if not cond:
        fail(msg)


def info_int(client, section, field):
    return int(client.info(section)[field])


LIMIT = 5.0


def eventually(fn, want, what, limit=None):
    limit = limit or LIMIT
    """Polls fn() until it returns want, at most `limit` seconds."""
    deadline = time.monotonic() + limit
    got = fn()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.02)
        got = fn()
    check(got == want, f"{what}: expected {want!r}, still {got!r} after {limit} s")


def main():
    global LIMIT
    host, port = sys.argv[1], int(sys.argv[2])
    wport = int(sys.argv[3]) if len(sys.argv) > 3 else port
    if wport != port:
        LIMIT = 15.0  # cross-region replication on a loaded machine
        print(f"reader on port {port}, writer on port {wport} (another region)")
    writer = redis.Redis(host=host, port=wport, socket_timeout=5)
    stats = redis.Redis(host=host, port=port, socket_timeout=5)  # the reader's node
    reader = redis.Redis(
        host=host, port=port, protocol=3, cache_config=CacheConfig(), socket_timeout=5
    )
    writer.flushall()
    eventually(lambda: stats.dbsize(), 0, "flush replicated")
    writer.set("csc:a", "v1")

    # 1. The first read goes to the server; the next ones come from the cache.
    eventually(lambda: reader.get("csc:a"), b"v1", "first read")
    hits0 = info_int(stats, "stats", "keyspace_hits")
    for _ in range(200):
        check(reader.get("csc:a") == b"v1", "cached read")
    hits1 = info_int(stats, "stats", "keyspace_hits")
    check(hits1 - hits0 <= 1, f"200 reads reached the server {hits1 - hits0} times")
    check(info_int(stats, "clients", "tracking_clients") >= 1, "reader is not tracking")
    print(f"cached reads: 200 GETs, {hits1 - hits0} reached the server")

    # 2. Writes by another client invalidate the cached entry.
    writer.set("csc:a", "v2")
    eventually(lambda: reader.get("csc:a"), b"v2", "read after SET")
    writer.delete("csc:a")
    eventually(lambda: reader.get("csc:a"), None, "read after DEL")
    writer.mset({"{csc}:b": "1", "{csc}:c": "2"})
    eventually(lambda: reader.mget("{csc}:b", "{csc}:c"), [b"1", b"2"], "MGET")
    check(reader.get("{csc}:b") == b"1", "GET b")
    writer.incr("{csc}:b")
    eventually(lambda: reader.get("{csc}:b"), b"2", "read after INCR")
    writer.flushall()
    eventually(lambda: reader.get("{csc}:b"), None, "read after FLUSHALL")

    # And the cache still works after all that.
    writer.set("csc:d", "x")
    eventually(lambda: reader.get("csc:d"), b"x", "read d")
    h0 = info_int(stats, "stats", "keyspace_hits")
    for _ in range(50):
        reader.get("csc:d")
    h1 = info_int(stats, "stats", "keyspace_hits")
    check(h1 - h0 <= 1, f"50 reads after the flush reached the server {h1 - h0} times")
    print("invalidation: SET, DEL, INCR and FLUSHALL seen by the cached reader")
    print("OK")


if __name__ == "__main__":
    main()
