#!/usr/bin/env python3
"""Smoke test of a Meridian region through redis-py's RedisCluster.

Usage: cluster_smoke.py HOST PORT [EXPECTED_PRIMARIES]   (default 3 primaries)

Runs twice, with the default client and with read_from_replicas=True: writes 2000 keys spread
over all slots (and checks they hit every primary), reads them back (200 one command at a time,
the rest through cluster pipelines), INCR, MSET/MGET with a hash
tag, and checks that a cross-slot MSET sent to a node is refused with CROSSSLOT.
Exits 0 on success; on any failure prints `FAIL: ...` to stderr and exits 1.
"""
import sys
import warnings


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    import redis
    from redis.cluster import RedisCluster
    from redis.exceptions import ClusterCrossSlotError, ResponseError
except ImportError as e:
    fail(f"the Python package `redis` is missing ({e}): run .ci/run or `pip install redis`")


def check(cond, msg):
    if not cond:
        fail(msg)


def run(host, port, expected_primaries, mode, **kwargs):
    rc = RedisCluster(host=host, port=port, decode_responses=True, socket_timeout=5, **kwargs)
    try:
        primaries = rc.get_primaries()
        replicas = rc.get_replicas()
        check(
            len(primaries) == expected_primaries,
            f"[{mode}] {len(primaries)} primaries {[p.name for p in primaries]}, expected {expected_primaries}",
        )
        if kwargs.get("read_from_replicas"):
            check(len(replicas) > 0, f"[{mode}] the client sees no replicas")

        # 2000 keys over all slots, hitting every primary.
        keys = [f"smoke:{mode}:{i}" for i in range(2000)]
        slots = {rc.keyslot(k) for k in keys}
        hit = {rc.get_node_from_key(k).name for k in keys}
        all_primaries = {p.name for p in primaries}
        check(hit == all_primaries, f"[{mode}] keys hit primaries {sorted(hit)}, not all of {sorted(all_primaries)}")
        # The first 200 one command at a time, the rest through cluster pipelines (which split
        # the commands by node, as an application writing in bulk would).
        for i, k in enumerate(keys[:200]):
            check(rc.set(k, f"v{i}") is True, f"[{mode}] SET {k} did not answer OK")
        for start in range(200, len(keys), 300):
            pipe = rc.pipeline()
            for i in range(start, min(start + 300, len(keys))):
                pipe.set(keys[i], f"v{i}")
            replies = pipe.execute()
            check(all(r is True for r in replies), f"[{mode}] pipelined SETs answered {set(map(str, replies))}")
        if kwargs.get("read_from_replicas"):
            # Replication is asynchronous: wait until every primary's writes reached a replica
            # before reading from replicas.
            for node in primaries:
                n = node.redis_connection.execute_command("WAIT", 1, 5000)
                check(n >= 1, f"[{mode}] WAIT 1 5000 on {node.name} answered {n}")
        got = [rc.get(k) for k in keys[:200]]
        for start in range(200, len(keys), 300):
            pipe = rc.pipeline()
            for k in keys[start : start + 300]:
                pipe.get(k)
            got.extend(pipe.execute())
        bad = [(k, g) for i, (k, g) in enumerate(zip(keys, got)) if g != f"v{i}"]
        check(not bad, f"[{mode}] {len(bad)} of {len(keys)} keys read back wrong, e.g. {bad[:5]}")

        # INCR.
        ctr = f"smoke:{mode}:counter"
        rc.delete(ctr)
        for _ in range(10):
            last = rc.incr(ctr)
        check(last == 10, f"[{mode}] INCR x10 ended at {last}")
        check(rc.incrby(ctr, 5) == 15, f"[{mode}] INCRBY 5 did not give 15")

        # MSET / MGET with a hash tag: one slot, one command.
        tagged = {f"{{smoke-{mode}}}:{n}": f"t{n}" for n in range(5)}
        check(len({rc.keyslot(k) for k in tagged}) == 1, f"[{mode}] hash-tagged keys span several slots")
        check(rc.mset(tagged) is True, f"[{mode}] MSET with a hash tag failed")
        got = rc.mget(list(tagged))
        check(got == list(tagged.values()), f"[{mode}] MGET with a hash tag: {got}")

        # A cross-slot MSET sent straight to a node is refused with CROSSSLOT.
        a, b = f"smoke:{mode}:x", f"smoke:{mode}:y"
        check(rc.keyslot(a) != rc.keyslot(b), "test keys share a slot")
        node = rc.get_node_from_key(a)
        try:
            node.redis_connection.execute_command("MSET", a, "1", b, "2")
            fail(f"[{mode}] cross-slot MSET on {node.name} was accepted")
        except ClusterCrossSlotError:
            pass  # redis-py maps the `-CROSSSLOT ...` error reply to this class
        except ResponseError as e:
            fail(f"[{mode}] cross-slot MSET refused with {type(e).__name__}: {e}, not CROSSSLOT")
        print(
            f"[{mode}] ok: {len(keys)} keys over {len(slots)} slots on {len(hit)} primaries "
            f"({len(replicas)} replicas known), INCR, hash-tag MSET/MGET, CROSSSLOT"
        )
    finally:
        rc.close()


def main():
    if len(sys.argv) < 3:
        fail("usage: cluster_smoke.py HOST PORT [EXPECTED_PRIMARIES]")
    host, port = sys.argv[1], int(sys.argv[2])
    expected = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    print(f"redis-py {redis.__version__} against {host}:{port}")
    run(host, port, expected, "default")
    # redis-py >= 5.3 prefers load_balancing_strategy and warns about read_from_replicas.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    run(host, port, expected, "replicas", read_from_replicas=True)
    print("cluster_smoke: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # any unexpected client error is a failure with its message
        fail(f"{type(e).__name__}: {e}")
