#!/usr/bin/env python3
# storm.py: a bounded UDP drop storm over loopback in the current network
# namespace, for measuring the per-drop cost of the udp_buffer tuner's BPF:
# --socks receivers that never read, sent to round-robin as fast as one
# sender can for --secs seconds. Whether the drops are -ENOMEM (each
# receiver's queue full) or -ENOBUFS (UDP memory, net.ipv4.udp_mem, full)
# depends on the limits the caller set. Prints the datagrams sent.
import argparse, socket, time

p = argparse.ArgumentParser()
p.add_argument("--socks", type=int, default=8)
p.add_argument("--secs", type=float, default=5.0)
p.add_argument("--size", type=int, default=1200)
a = p.parse_args()

rx = []
for _ in range(a.socks):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    rx.append(s)
addrs = [s.getsockname() for s in rx]
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"\x5a" * a.size
sent = 0
end = time.monotonic() + a.secs
while time.monotonic() < end:
    for addr in addrs:
        for _ in range(64):
            try:
                tx.sendto(payload, addr)
                sent += 1
            except OSError:
                pass
print(sent)
