#!/usr/bin/env python3
# udpflood.py: short-lived UDP flows over loopback in the current network
# namespace, each with a fresh receiver that asks for a 4 MiB SO_RCVBUF (as
# DNS/QUIC servers do) and drains its queue every 10 ms while the sender
# sends bursts. Prints one JSON line per flow: sent, received, loss.
# Bounded: --flows flows of --flow-secs each.
import json, socket, sys, time, argparse

p = argparse.ArgumentParser()
p.add_argument("--flows", type=int, default=10)
p.add_argument("--flow-secs", type=float, default=0.5)
p.add_argument("--burst", type=int, default=200, help="datagrams per 10 ms tick")
p.add_argument("--size", type=int, default=1200)
a = p.parse_args()



def drain(sock):
    """Receive every queued datagram; return how many there were."""
    n = 0
    while True:
        try:
            sock.recv(65536)
            n += 1
        except BlockingIOError:
            return n


payload = b"\x5a" * a.size
for flow in range(a.flows):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    rcvbuf = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = rx.getsockname()
    sent = recv = 0
    end = time.monotonic() + a.flow_secs
    while time.monotonic() < end:
        tick = time.monotonic() + 0.01
        for _ in range(a.burst):
            try:
                tx.sendto(payload, addr)
                sent += 1
            except OSError:
                pass
        recv += drain(rx)
        left = tick - time.monotonic()
        if left > 0:
            time.sleep(left)
    time.sleep(0.02)
    recv += drain(rx)
    rx.close()
    tx.close()
    loss = 0.0 if sent == 0 else 1.0 - recv / sent
    print(json.dumps({"flow": flow, "rcvbuf": rcvbuf, "sent": sent, "recv": recv, "loss": round(loss, 4)}))
    sys.stdout.flush()
