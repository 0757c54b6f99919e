#!/usr/bin/env python3
"""What client-side caching costs, Meridian against redis-server side by side.

Usage: tracking.py MERIDIAN_PORT REDIS_PORT [ROUNDS]

For each server, in the same run (a shared machine is noisy: compare the ratios):
  1. write throughput (redis-benchmark SET, 50 clients, pipeline 16) with no tracking client,
     then with 10 RESP3 clients in BCAST mode receiving an invalidation for every write;
  2. invalidation latency: a default-mode tracking client reads a key, another client
     writes it; the time from sending the SET to the push arriving at the reader (p50, p99),
     ROUNDS times (default 2000).
Needs redis-benchmark (Debian's redis-tools) on PATH.
"""
import re
import socket
import subprocess
import sys
import threading
import time


def enc(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def conn(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until(s, buf, token):
    while token not in buf:
        d = s.recv(65536)
        if not d:
            raise RuntimeError("connection closed")
        buf += d
    i = buf.index(token) + len(token)
    return buf[i:]


def hello3(s):
    s.sendall(enc("HELLO", "3"))
    return read_until(s, b"", b"modules\r\n*0\r\n")


class Bcast(threading.Thread):
    """A RESP3 BCAST client that reads and discards its pushes, counting bytes."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.s = conn(port)
        rest = hello3(self.s)
        self.s.sendall(enc("CLIENT", "TRACKING", "on", "BCAST"))
        read_until(self.s, rest, b"+OK\r\n")
        self.bytes = 0
        self.stop = False

    def run(self):
        self.s.settimeout(0.2)
        while not self.stop:
            try:
                d = self.s.recv(1 << 20)
            except socket.timeout:
                continue
            if not d:
                break
            self.bytes += len(d)


def set_rps(port):
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-t", "set", "-n", "200000", "-c", "50",
         "-P", "16", "-r", "100000", "-q"],
        capture_output=True, text=True, timeout=300,
    ).stdout
    m = re.search(r"SET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    return float(m.group(1)) if m else 0.0


def throughput(port):
    base = set_rps(port)
    clients = [Bcast(port) for _ in range(10)]
    for c in clients:
        c.start()
    tracked = set_rps(port)
    time.sleep(0.5)
    for c in clients:
        c.stop = True
    received = sum(c.bytes for c in clients)
    for c in clients:
        c.join()
        c.s.close()
    return base, tracked, received


def latency(port, rounds):
    reader, writer = conn(port), conn(port)
    rbuf = hello3(reader)
    reader.sendall(enc("CLIENT", "TRACKING", "on"))
    rbuf = read_until(reader, rbuf, b"+OK\r\n")
    push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nlat\r\n"
    samples = []
    wbuf = b""
    for _ in range(rounds):
        reader.sendall(enc("GET", "lat"))
        while True:  # the reply: `_` the first time, `$1 1` after
            if rbuf.startswith(b"_\r\n"):
                rbuf = rbuf[3:]
                break
            if rbuf.startswith(b"$1\r\n1\r\n"):
                rbuf = rbuf[7:]
                break
            rbuf += reader.recv(65536)
        t0 = time.perf_counter()
        writer.sendall(enc("SET", "lat", "1"))
        rbuf = read_until(reader, rbuf, push)
        samples.append(time.perf_counter() - t0)
        wbuf = read_until(writer, wbuf, b"+OK\r\n")
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def main():
    mer, red = int(sys.argv[1]), int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    print("machine shared with other jobs: compare ratios within this run")
    rows = {}
    for name, port in (("meridian", mer), ("redis", red)):
        conn(port).sendall(enc("FLUSHALL"))
        base, tracked, received = throughput(port)
        p50, p99 = latency(port, rounds)
        rows[name] = (base, tracked, p50, p99)
        print(f"{name:9} SET rps no tracking {base:10.0f} | 10 BCAST clients {tracked:10.0f} "
              f"({tracked / base:.2f}x, {received / 1e6:.1f} MB of pushes) | "
              f"invalidation latency p50 {p50:.0f} us p99 {p99:.0f} us")
    m, r = rows["meridian"], rows["redis"]
    print(f"meridian/redis: SET {m[0] / r[0]:.2f}, SET with 10 BCAST {m[1] / r[1]:.2f}, "
          f"latency p50 {m[2] / r[2]:.2f}, p99 {m[3] / r[3]:.2f}")


if __name__ == "__main__":
    main()
