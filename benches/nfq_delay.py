#!/usr/bin/env python3
"""Constant one-way delay for the packets an iptables NFQUEUE rule hands to queue QUEUE.

A stand-in for `tc qdisc ... netem delay`, for kernels built without sch_netem (this VM's:
CONFIG_NET_SCH_NETEM is not set). benches/regions.sh sends the UDP between two regions' mesh
ports here with `iptables -I INPUT ... -j NFQUEUE --queue-num Q --queue-bypass` (both
directions, DELAY_MS = RTT/2 each), so only that traffic is delayed.

Speaks nfnetlink_queue directly (standard library only): binds the queue in meta-data copy mode
(the payload is never copied to user space), records each packet's arrival time, and once the
oldest packets are DELAY_MS old accepts them all with one batch verdict (NFQNL_MSG_VERDICT_BATCH
accepts every queued id up to the given one). With one constant delay, arrival order = release
order, so packets are never reordered. Timer precision: select() wake-ups, ~0.1 ms.

Usage: nfq_delay.py QUEUE DELAY_MS     (runs until SIGTERM/SIGINT; prints one status line on
stderr when it stops: packets delayed, overflow events)"""
import collections, os, select, signal, socket, struct, sys, time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
AF_INET = 2


def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)


def msg(kind, queue, attrs, flags=NLM_F_REQUEST, seq=0):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0) + body


def main():
    queue, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000.0
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    s.bind((0, 0))

    def config(attrs):
        s.send(msg(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK, 1))
        data = s.recv(65536)
        _, kind, _, _, _ = struct.unpack_from("=IHHII", data)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, 16)
            if err:
                sys.exit(f"nfq_delay: queue {queue} config refused: {os.strerror(-err)}")

    config([attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, AF_INET))])
    config([attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))])
    config([attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 200000))])

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    pending = collections.deque()  # (due, packet id), arrival order
    delayed = overflows = 0
    print(f"nfq_delay: queue {queue}, {delay * 1000:g} ms", file=sys.stderr, flush=True)
    while not stop:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else 0.2
        try:
            ready, _, _ = select.select([s], [], [], timeout)
        except InterruptedError:
            continue
        if ready:
            try:
                data = s.recv(1 << 20)
            except OSError:  # ENOBUFS: messages lost; their packets go with the next batch verdict
                overflows += 1
                data = b""
            now = time.monotonic()
            off = 0
            while off + 16 <= len(data):
                n, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
                if n < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    a = off + 20
                    while a + 4 <= off + n:
                        alen, akind = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        if akind & 0x7FFF == NFQA_PACKET_HDR:
                            (pid,) = struct.unpack_from("!I", data, a + 4)
                            pending.append((now + delay, pid))
                            break
                        a += (alen + 3) & ~3
                off += (n + 3) & ~3
        now = time.monotonic()
        last = None
        while pending and pending[0][0] <= now:
            last = pending.popleft()[1]
            delayed += 1
        if last is not None:
            s.send(msg(NFQNL_MSG_VERDICT_BATCH, queue,
                       [attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last))]))
    # Release whatever is still held, then unbind.
    if pending:
        s.send(msg(NFQNL_MSG_VERDICT_BATCH, queue,
                   [attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pending[-1][1]))]))
    s.send(msg(NFQNL_MSG_CONFIG, queue,
               [attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_UNBIND, 0, AF_INET))]))
    print(f"nfq_delay: queue {queue}: {delayed} packets delayed, {overflows} receive overflows",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
