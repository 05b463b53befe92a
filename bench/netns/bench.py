#!/usr/bin/env python3
"""bench/netns/bench.py: what tracking network namespaces costs the daemon.

Runs the real daemon (netns, sysctl and test tuners) twice: with no extra
namespaces and with N live ones (default 1000, made before the daemon
starts), and reports for each: time until start-up discovery has found
them all, RSS, open fds, net:[...] fds, threads, idle CPU, the time from a
new namespace's first TCP connect to the daemon resolving it (`netns
created (cookie N)`) and to the test tuner's first write in it, and the
time from `ip netns del` to `netns destroyed`. Optionally (--bpf-stats) the
cost per run of the netns BPF program.

Root only; creates namespaces named bpfbench-* and removes them at exit.
Usage: bench.py [--build DIR] [--namespaces N] [--trials T] [--bpf-stats]
"""

import argparse
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

STAGE = "/run/bpftune-bench-netns"
LOG = "/run/bpftune-bench-netns.log"
TUNERS = ["netns", "sysctl", "test"]
CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71

libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*cmd, inp=None):
    subprocess.run(cmd, input=inp, text=True, check=True, stdout=subprocess.DEVNULL)


def netns_batch(verb, names):
    if names:
        sh("ip", "-batch", "-", inp="".join(f"netns {verb} {n}\n" for n in names))


def in_netns(name, fn):
    """Run fn() on a thread inside /run/netns/<name>; return its result."""
    out = {}

    def run():
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        out["r"] = fn()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out["r"]


def cookie():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    c = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    s.close()
    return c


class Daemon:
    def __init__(self, build):
        self.log = open(LOG, "w")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(
            [os.path.join(build, "bpftune"), "-s", "-d", "--system-libdir", STAGE, "-l", STAGE],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)

    def text(self):
        with open(LOG, errors="replace") as f:
            return f.read()

    def wait(self, needle, timeout=60.0, count=1, poll=0.001):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.text().count(needle) >= count:
                return time.monotonic()
            time.sleep(poll)
        raise TimeoutError(f"'{needle}' x{count} not logged in {timeout}s")

    def status(self):
        st = {}
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                st[k] = v.strip()
        fds = os.listdir(f"/proc/{self.p.pid}/fd")
        netfds = 0
        for fd in fds:
            try:
                if os.readlink(f"/proc/{self.p.pid}/fd/{fd}").startswith("net:["):
                    netfds += 1
            except OSError:
                pass
        return {"rss_kib": int(st["VmRSS"].split()[0]), "fds": len(fds), "net_fds": netfds,
                "threads": int(st["Threads"])}

    def cpu_seconds(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()


def connect_once():
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen()
    t = time.monotonic()
    c = socket.create_connection(l.getsockname())
    s, _ = l.accept()
    c.close()
    s.close()
    l.close()
    return t


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def ms(x):
    return f"{x * 1000:.1f}"


def run_config(build, n, trials):
    names = [f"bpfbench-live-{i}" for i in range(n)]
    t = time.monotonic()
    netns_batch("add", names)
    made = time.monotonic() - t
    d = Daemon(build)
    res = {"namespaces": n, "create_s": made}
    try:
        ready = d.wait("network namespaces besides the global one")
        res["ready_s"] = ready - d.t0
        if n:
            res["all_found_s"] = d.wait("netns found (cookie", count=n, timeout=120) - d.t0
        time.sleep(3)
        res.update(d.status())
        c0 = d.cpu_seconds()
        time.sleep(20)
        res["idle_cpu_pct"] = (d.cpu_seconds() - c0) / 20 * 100

        resolve, tuned, destroyed, by_scan = [], [], [], 0
        for i in range(trials):
            name = f"bpfbench-new-{i}"
            netns_batch("add", [name])
            try:
                sh("ip", "-n", name, "link", "set", "lo", "up")
                c = in_netns(name, cookie)
                text = d.text()
                t0 = in_netns(name, connect_once)
                t1 = d.wait(f"netns created (cookie {c})")
                t2 = d.wait(f"(netns cookie {c})")
                if f"netns created (cookie {c})" in text:
                    by_scan += 1  # the inotify rescan found it before its first socket
                else:
                    resolve.append(t1 - t0)
                tuned.append(t2 - t0)
            finally:
                t3 = time.monotonic()
                netns_batch("del", [name])
            destroyed.append(d.wait(f"netns destroyed (cookie {c})", timeout=30) - t3)
            time.sleep(0.2)
        res["resolve_ms"] = resolve
        res["tuned_ms"] = tuned
        res["destroyed_ms"] = destroyed
        res["found_by_scan_first"] = by_scan
        res.update({f"after_{k}": v for k, v in d.status().items()})
    finally:
        d.stop()
        netns_batch("del", names)
    return res


def bpf_stats(build):
    """ns per run of the netns BPF program during 2000 loopback connects."""
    d = Daemon(build)
    old = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    try:
        d.wait("network namespaces besides the global one")
        netns_batch("add", ["bpfbench-stats"])
        sh("ip", "-n", "bpfbench-stats", "link", "set", "lo", "up")
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")

        def loop():
            t = time.monotonic()
            for _ in range(2000):
                connect_once()
            return time.monotonic() - t

        elapsed = in_netns("bpfbench-stats", loop)
        out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True).stdout
        progs = [p for p in json.loads(out) if p.get("name") == "bpftune_netns_first_socket"]
        p = progs[0] if progs else {}
        return {"connects": 2000, "elapsed_s": elapsed, "run_cnt": p.get("run_cnt"),
                "run_time_ns": p.get("run_time_ns")}
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(old)
        d.stop()
        netns_batch("del", ["bpfbench-stats"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BPFTUNE_BUILD_DIR", "target/release"))
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--bpf-stats", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py needs root")
    # Same machine-wide lock as the integration tests: one daemon at a time.
    os.makedirs("/run/bpftune-tests", mode=0o755, exist_ok=True)
    lock = open("/run/bpftune-tests/lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    stale = [l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                    text=True).stdout.splitlines() if l.startswith("bpfbench-")]
    for n in stale:
        subprocess.run(["ip", "netns", "del", n])
    os.makedirs(STAGE, mode=0o755, exist_ok=True)
    os.chmod(STAGE, 0o755)
    for t in TUNERS:
        dst = os.path.join(STAGE, f"{t}_tuner.so")
        shutil.copy(os.path.join(a.build, f"lib{t}_tuner.so"), dst)
        os.chmod(dst, 0o644)
    try:
        for n in (0, a.namespaces):
            r = run_config(a.build, n, a.trials)
            print(f"\n== {n} live namespaces (made in {r['create_s']:.1f} s) ==")
            print(f"ready after start: {r['ready_s']:.2f} s" +
                  (f"; all {n} found: {r['all_found_s']:.2f} s" if n else ""))
            print(f"RSS {r['rss_kib']} KiB, fds {r['fds']}, net fds {r['net_fds']}, threads {r['threads']}")
            print(f"idle CPU {r['idle_cpu_pct']:.2f} % of one core")
            for key, label in (("resolve_ms", "first connect -> 'netns created'"),
                               ("tuned_ms", "first connect -> first write in it"),
                               ("destroyed_ms", "ip netns del -> 'netns destroyed'")):
                xs = r[key]
                if xs:
                    print(f"{label}: median {ms(statistics.median(xs))} ms, p90 {ms(pct(xs, 90))} ms, "
                          f"max {ms(max(xs))} ms (n={len(xs)})")
            print(f"found by the /run/netns rescan before its first socket: {r['found_by_scan_first']}")
            print(f"after trials: RSS {r['after_rss_kib']} KiB, fds {r['after_fds']}, "
                  f"net fds {r['after_net_fds']}, threads {r['after_threads']}")
        if a.bpf_stats:
            s = bpf_stats(a.build)
            per = (s["run_time_ns"] / s["run_cnt"]) if s.get("run_cnt") else float("nan")
            print(f"\n== BPF cost == {s['connects']} connects in {s['elapsed_s']:.2f} s; "
                  f"netns program ran {s['run_cnt']} times, {per:.0f} ns per run")
    finally:
        shutil.rmtree(STAGE, ignore_errors=True)
        if os.path.exists(LOG):
            os.remove(LOG)


if __name__ == "__main__":
    main()
