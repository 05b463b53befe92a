#!/usr/bin/env python3
"""bench/netns/storm.py: what the daemon costs while many namespaces flood.

Makes N network namespaces (loopback up), starts the daemon from --build in
the foreground with only the udp_buffer, tcp_buffer, netns and sysctl tuners
staged, then in every namespace, for S seconds, one forked flood process
(it setns()es into its namespace; all traffic stays on that namespace's
loopback) sends a burst every --interval seconds, at a random phase:

  * UDP drop flood: --udp-burst datagrams to a receiver that never reads.
    The receiver keeps the default receive buffer (net.core.rmem_default,
    not locked): udp_buffer only reports a drop from a socket whose buffer
    is within 80 % of rmem_default/rmem_max, so a tiny SO_RCVBUF would drop
    just as well but never reach the daemon. RcvbufErrors grow.
  * SYN flood: --syn-burst non-blocking connects (each socket closed right
    after its SYN) to a listener with accept backlog --backlog that never
    accepts. An nftables input rule in the namespace drops the listener's
    SYN-ACKs after they were sent (an output drop would make the send fail
    and the kernel would skip the tcp_retransmit_synack tracepoint), so
    requests stay half-open, the SYN queue is full, syncookies are sent and
    the retransmitted SYN-ACKs are what tcp_buffer reports as a SYN flood.
    With syncookies on (the default) tcp_buffer reads the namespace's
    /proc/net/netstat for each such event.

Measured for the daemon over the storm window: CPU (all threads, dead ones
included: nanoseconds from a cpuacct cgroup the daemon is moved into, or
cgroup v2 cpu.stat; utime+stime of /proc/PID/stat, in 10 ms clock ticks,
is reported beside it), events received (the
daemon's own counter bpftune_events_received_total from `bpftune -q
metrics`, read before and after the window), CPU per 1,000 events, threads
and processes created (tracefs sched:sched_process_fork in a private
instance, counted where the parent's tgid is the daemon's), peak (sampled
every 0.1 s) and final thread count, RSS and VmHWM. Counters of the flood
(datagrams sent, RcvbufErrors, SYNs, SyncookiesSent) are summed over all
namespaces.

Root only. Takes the integration tests' lock (/run/bpftune-tests/lock:
one daemon at a time); wrap it in `flock /tmp/bpftune-bench.lock` so no
other benchmark runs at the same time. Creates namespaces named
bpfstorm-*, a staging directory, an accounting-only cgroup and a tracefs
instance, mounts tracefs if it is not mounted; everything is removed or unmounted at exit (also on
failure and Ctrl-C), and every sysctl of /proc/sys/net/{core,ipv4} that
differs from its value at start (the daemon changes host-wide ones such as
net.core.rmem_default) is written back.

Usage: storm.py --build DIR [--namespaces N] [--secs S] [--interval I]
                [--udp-burst D] [--syn-burst C] [--backlog B] [--debug]
                [--label L] [--json FILE]
"""

import argparse
import ctypes
import fcntl
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

PREFIX = "bpfstorm-"
STAGE = "/run/bpftune-bench-storm"
LOG = "/run/bpftune-bench-storm.log"
TUNERS = ["udp_buffer", "tcp_buffer", "netns", "sysctl"]
TRACEFS = "/sys/kernel/tracing"
INSTANCE = TRACEFS + "/instances/bpftune-storm"
SYSCTL_DIRS = ["/proc/sys/net/core", "/proc/sys/net/ipv4"]
CLONE_NEWNET = 0x40000000
UDP_PORT = 5353
TCP_PORT = 5001
NFT_RULES = f"""table inet bpfstorm {{
  chain in {{
    type filter hook input priority 0; policy accept;
    tcp sport {TCP_PORT} tcp flags & (syn | ack) == syn | ack drop
  }}
}}
"""

libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*cmd, inp=None):
    subprocess.run(cmd, input=inp, text=True, check=True, stdout=subprocess.DEVNULL)


def netns_batch(verb, names):
    if names:
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns {verb} {n}\n" for n in names),
                       text=True, check=verb != "del", stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL if verb == "del" else None)


def stale_namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [l.split()[0] for l in out.splitlines() if l.startswith(PREFIX)]


# --- sysctls -----------------------------------------------------------------

def sysctl_snapshot():
    """Every readable and writable file directly under SYSCTL_DIRS."""
    snap = {}
    for d in SYSCTL_DIRS:
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if not os.path.isfile(path) or not os.access(path, os.R_OK | os.W_OK):
                continue
            try:
                with open(path) as f:
                    snap[path] = f.read()
            except OSError:
                pass  # write-only or refusing reads (e.g. flush files)
    return snap


def sysctl_restore(snap):
    """Write back every value that changed; returns the paths restored."""
    restored = []
    for path, old in snap.items():
        try:
            with open(path) as f:
                now = f.read()
            if now.split() != old.split():
                with open(path, "w") as f:
                    f.write(old)
                restored.append(f"{path[len('/proc/sys/'):].replace('/', '.')}: {' '.join(now.split())} -> "
                                f"{' '.join(old.split())}")
        except OSError as e:
            restored.append(f"{path}: could not restore: {e}")
    return restored


# --- tracefs: threads/processes the daemon creates ----------------------------

class ForkCounter:
    """sched_process_fork in a private tracefs instance, read from
    trace_pipe on a thread; counts forks whose parent's tgid is `tgid`,
    with their trace timestamps (trace_clock mono = time.monotonic())."""

    LINE = re.compile(r"\(\s*(\d+)\)\s+\[\d+\]\s+\S+\s+([\d.]+):\s+sched_process_fork:")

    def __init__(self):
        self.mounted = False
        self.made = False
        self.pipe = None
        self.thread = None
        self.tgid = None
        self.stamps = []
        self.stop = False
        try:
            if not os.path.exists(os.path.join(TRACEFS, "instances")):
                sh("mount", "-t", "tracefs", "nodev", TRACEFS)
                self.mounted = True
            if os.path.isdir(INSTANCE):
                os.rmdir(INSTANCE)  # left by a killed run
            os.mkdir(INSTANCE)
            self.made = True
            self._write("trace_clock", "mono")
            self._write("options/record-tgid", "1")
            self._write("buffer_size_kb", "4096")
            self.pipe = os.open(os.path.join(INSTANCE, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
            self._write("events/sched/sched_process_fork/enable", "1")
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()
        except BaseException:
            self.close()
            raise

    def _write(self, rel, value):
        with open(os.path.join(INSTANCE, rel), "w") as f:
            f.write(value)

    def _read(self):
        buf = b""
        while not self.stop:
            select.select([self.pipe], [], [], 0.2)
            try:
                chunk = os.read(self.pipe, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not chunk:
                time.sleep(0.05)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = self.LINE.search(line.decode(errors="replace"))
                if m and self.tgid is not None and int(m.group(1)) == self.tgid:
                    self.stamps.append(float(m.group(2)))

    def count(self, t0, t1):
        return sum(1 for t in list(self.stamps) if t0 <= t <= t1)

    def close(self):
        """Stop reading, remove the instance, unmount tracefs if we mounted it."""
        self.stop = True
        if self.thread is not None:
            self.thread.join(5)
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        if self.made:
            try:
                self._write("events/sched/sched_process_fork/enable", "0")
            except OSError:
                pass
            for _ in range(50):
                try:
                    os.rmdir(INSTANCE)
                    self.made = False
                    break
                except OSError:
                    time.sleep(0.1)
        if self.mounted:
            subprocess.run(["umount", TRACEFS])
            self.mounted = False


# --- precise daemon CPU ---------------------------------------------------------

class CpuCgroup:
    """The daemon's CPU time in nanoseconds, all threads (dead ones too),
    from a cgroup of its own: cgroup v1 cpuacct (cpuacct.usage), or v2
    cpu.stat usage_usec. /proc/PID/stat has only clock-tick resolution
    (10 ms), too coarse for a daemon that uses tens of ms in a storm.
    Accounting only: no limit is set. Removed at exit."""

    def __init__(self, pid):
        self.path = None
        if os.path.isfile("/sys/fs/cgroup/cpuacct/cpuacct.usage"):
            root, self.v2 = "/sys/fs/cgroup/cpuacct", False
        elif os.path.isfile("/sys/fs/cgroup/cgroup.controllers"):
            root, self.v2 = "/sys/fs/cgroup", True
        else:
            return
        path = os.path.join(root, "bpftune-storm")
        if os.path.isdir(path):
            os.rmdir(path)  # left by a killed run (empty once its daemon is gone)
        os.mkdir(path)
        self.path = path
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def seconds(self):
        if self.path is None:
            return None
        if self.v2:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "usage_usec":
                        return int(v) / 1e6
            return None
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9

    def close(self):
        """After the daemon has exited: remove the (then empty) cgroup."""
        for _ in range(50):
            if self.path is None:
                return
            try:
                os.rmdir(self.path)
                self.path = None
            except OSError:
                time.sleep(0.1)


# --- the daemon --------------------------------------------------------------

class Daemon:
    def __init__(self, build, debug):
        self.build = build
        self.log = open(LOG, "w")
        args = [os.path.join(build, "bpftune"), "-s", "--system-libdir", STAGE, "-l", STAGE]
        if debug:
            args.insert(2, "-d")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)

    def metrics(self):
        """The daemon's counters and gauges from `bpftune -q metrics`."""
        r = subprocess.run([os.path.join(self.build, "bpftune"), "-q", "metrics"], capture_output=True,
                           text=True, timeout=30)
        out = {}
        for line in r.stdout.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
        return out

    def status(self):
        st = {}
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                st[k] = v.strip()
        return {"threads": int(st["Threads"]), "rss_kib": int(st["VmRSS"].split()[0]),
                "hwm_kib": int(st["VmHWM"].split()[0])}

    def cpu_seconds(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def events_received(m):
    return m.get("bpftune_events_received_total", 0.0)


def ringbuf_dropped(m):
    return m.get("bpftune_ringbuf_events_dropped_total", 0.0)


# --- the flood ---------------------------------------------------------------

def netstat_counters():
    """(RcvbufErrors, InDatagrams) of Udp and TcpExt SyncookiesSent,
    ListenDrops of this process's namespace."""
    def pairs(path):
        vals = {}
        with open(path) as f:
            lines = f.read().splitlines()
        for head, val in zip(lines[::2], lines[1::2]):
            p = head.split(":")[0]
            for k, v in zip(head.split()[1:], val.split()[1:]):
                vals[f"{p}:{k}"] = int(v)
        return vals
    snmp, netstat = pairs("/proc/net/snmp"), pairs("/proc/net/netstat")
    return {"rcvbuf_errors": snmp.get("Udp:RcvbufErrors", 0), "in_datagrams": snmp.get("Udp:InDatagrams", 0),
            "syncookies_sent": netstat.get("TcpExt:SyncookiesSent", 0),
            "listen_drops": netstat.get("TcpExt:ListenDrops", 0)}


def flooder(name, args, ready_w, go_r, result_w):
    """Body of one forked flood process; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        os.close(fd)
        subprocess.run(["nft", "-f", "-"], input=NFT_RULES, text=True, check=True)
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", UDP_PORT))  # default buffer, never read
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setblocking(False)
        tx.connect(("127.0.0.1", UDP_PORT))
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", TCP_PORT))
        ls.listen(args.backlog)  # never accepted
        os.write(ready_w, b"r")
        os.close(ready_w)
        os.read(go_r, 1)  # EOF when the parent closes the write end
        start = time.monotonic()
        before = netstat_counters()
        payload = b"x" * 64
        sent = syns = 0
        random.seed(os.getpid())
        nxt = start + random.uniform(0, args.interval)
        while True:
            now = time.monotonic()
            if now >= start + args.secs:
                break
            if now < nxt:
                time.sleep(min(nxt, start + args.secs) - now)
                continue
            for _ in range(args.udp_burst):
                try:
                    tx.send(payload)
                    sent += 1
                except OSError:
                    pass
            for _ in range(args.syn_burst):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", TCP_PORT))
                c.close()
                syns += 1
            nxt += args.interval
        after = netstat_counters()
        res = {k: after[k] - before[k] for k in after}
        res.update({"sent": sent, "syns": syns})
        os.write(result_w, (json.dumps(res) + "\n").encode())
        code = 0
    except BaseException as e:  # noqa: BLE001 - reported, then the child exits
        try:
            os.write(result_w, (json.dumps({"error": f"{name}: {e!r}"}) + "\n").encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def start_flood(names, args, pids):
    """Fork one flood process per namespace (their pids appended to `pids`
    as they start, so the caller can kill them whatever happens); returns
    (go_w, result_r, ready) once every one has its sockets ready or failed."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    result_r, result_w = os.pipe()
    fcntl.fcntl(result_w, fcntl.F_SETPIPE_SZ, 1 << 20)
    for name in names:
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.close(go_w)
            os.close(result_r)
            flooder(name, args, ready_w, go_r, result_w)
        pids.append(pid)
    os.close(ready_w)
    os.close(go_r)
    os.close(result_w)
    got = 0
    while got < len(names):
        b = os.read(ready_r, 4096)
        if not b:
            break  # every child has closed its end: some failed
        got += len(b)
    os.close(ready_r)
    return go_w, result_r, got


def reap(pids, timeout):
    end = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < end:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return len(left)


def read_results(result_r):
    data = b""
    while True:
        b = os.read(result_r, 65536)
        if not b:
            break
        data += b
    os.close(result_r)
    tot, errors = {}, []
    for line in data.decode().splitlines():
        r = json.loads(line)
        if "error" in r:
            errors.append(r["error"])
            continue
        for k, v in r.items():
            tot[k] = tot.get(k, 0) + v
    return tot, errors


# --- one run -----------------------------------------------------------------

def run(args, names):
    res = {"label": args.label, "namespaces": len(names), "secs": args.secs, "build": os.path.abspath(args.build),
           "kernel": os.uname().release, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    d = Daemon(args.build, args.debug)
    pids, go_w = [], None
    forks = cg = None
    try:
        cg = CpuCgroup(d.p.pid)
        t = time.monotonic()
        known = 0
        while time.monotonic() - t < 120:
            if not d.alive():
                raise RuntimeError(f"daemon exited with {d.p.returncode}; see {LOG}")
            try:
                known = d.metrics().get("bpftune_netns_known", 0)
            except subprocess.TimeoutExpired:
                known = 0
            if known >= len(names):
                break
            time.sleep(0.5)
        res["netns_known_at_start"] = int(known)
        res["discovery_s"] = round(time.monotonic() - t, 2)
        go_w, result_r, ready = start_flood(names, args, pids)
        if ready < len(names):
            raise RuntimeError(f"only {ready} of {len(names)} flood processes got ready")
        forks = ForkCounter()
        forks.tgid = d.p.pid
        time.sleep(args.settle)
        st = d.status()
        res["idle_before"] = st
        m0 = d.metrics()
        c0, g0 = d.cpu_seconds(), cg.seconds()
        t0 = time.monotonic()
        os.close(go_w)
        go_w = None
        peak_threads, peak_rss = st["threads"], st["rss_kib"]
        while time.monotonic() - t0 < args.secs:
            time.sleep(0.1)
            if not d.alive():
                raise RuntimeError(f"daemon exited during the storm with {d.p.returncode}; see {LOG}")
            st = d.status()
            peak_threads = max(peak_threads, st["threads"])
            peak_rss = max(peak_rss, st["rss_kib"])
        c1, g1 = d.cpu_seconds(), cg.seconds()
        t1 = time.monotonic()
        m1 = d.metrics()
        time.sleep(0.5)  # let the trace reader catch up
        left = reap(pids, 30)
        pids = []
        flood, errors = read_results(result_r)
        end = d.status()
        ev = events_received(m1) - events_received(m0)
        cpu = (g1 - g0) if g0 is not None else (c1 - c0)
        res.update({
            "window_s": round(t1 - t0, 2),
            "cpu_source": "cgroup" if g0 is not None else "proc-stat",
            "cpu_s": round(cpu, 4),
            "cpu_s_proc_stat": round(c1 - c0, 2),
            "cpu_pct_of_one_core": round(cpu / (t1 - t0) * 100, 3),
            "events": int(ev),
            "cpu_ms_per_1000_events": round(cpu * 1e6 / ev, 1) if ev else None,
            "ringbuf_dropped": int(ringbuf_dropped(m1) - ringbuf_dropped(m0)),
            "forks_in_window": forks.count(t0, t1),
            "peak_threads": peak_threads,
            "final_threads": end["threads"],
            "peak_rss_kib": peak_rss,
            "final_rss_kib": end["rss_kib"],
            "hwm_kib": end["hwm_kib"],
            "flood": flood,
            "flood_errors": errors[:5],
            "flood_killed": left,
        })
    finally:
        if go_w is not None:
            os.close(go_w)
        if pids:  # failure or Ctrl-C before the flood ended: stop it now
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reap(pids, 5)
        if forks is not None:
            forks.close()
        d.stop()
        if cg is not None:
            cg.close()
    if args.debug:
        with open(LOG, errors="replace") as f:
            text = f.read()
        res["log"] = {k: text.count(k) for k in (
            "SYN flood in netns cookie", "udp_buffer: no change for drop", "UDP counters of netns",
            "Scenario ", "tcp_buffer: ")}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BPFTUNE_BUILD_DIR", "target/release"),
                    help="directory with bpftune and lib*_tuner.so")
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--secs", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between a namespace's bursts")
    ap.add_argument("--udp-burst", type=int, default=200, help="datagrams per burst")
    ap.add_argument("--syn-burst", type=int, default=16, help="connects per burst")
    ap.add_argument("--backlog", type=int, default=1, help="listener's accept backlog")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between flood set-up and the storm")
    ap.add_argument("--debug", action="store_true", help="run the daemon with -d and count some log lines")
    ap.add_argument("--label", default="", help="name of this run in the output")
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("storm.py needs root")
    for t in TUNERS:
        if not os.path.exists(os.path.join(a.build, f"lib{t}_tuner.so")):
            sys.exit(f"{a.build}: lib{t}_tuner.so missing")

    def term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGHUP, term)

    # Same machine-wide lock as the integration tests: one daemon at a time.
    os.makedirs("/run/bpftune-tests", mode=0o755, exist_ok=True)
    lock = open("/run/bpftune-tests/lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    netns_batch("del", stale_namespaces())
    snap = sysctl_snapshot()
    names = [f"{PREFIX}{i}" for i in range(a.namespaces)]
    restored = []
    try:
        os.makedirs(STAGE, mode=0o755, exist_ok=True)
        os.chmod(STAGE, 0o755)
        for t in TUNERS:
            dst = os.path.join(STAGE, f"{t}_tuner.so")
            shutil.copy(os.path.join(a.build, f"lib{t}_tuner.so"), dst)
            os.chmod(dst, 0o644)
        netns_batch("add", names)
        for n in names:
            sh("ip", "-n", n, "link", "set", "lo", "up")
        res = run(a, names)
    finally:
        netns_batch("del", names)
        restored = sysctl_restore(snap)
        shutil.rmtree(STAGE, ignore_errors=True)
        if not a.debug and os.path.exists(LOG):
            os.remove(LOG)
    res["sysctls_restored"] = restored
    f = res["flood"]
    print(f"== {a.label or a.build}: {res['namespaces']} namespaces, {res['window_s']} s storm, "
          f"kernel {res['kernel']} ==")
    print(f"daemon CPU {res['cpu_s']:.3f} s ({res['cpu_source']}; /proc/PID/stat {res['cpu_s_proc_stat']} s; "
          f"{res['cpu_pct_of_one_core']} % of one core); "
          f"events {res['events']} (ringbuf dropped {res['ringbuf_dropped']}); "
          f"CPU per 1,000 events {res['cpu_ms_per_1000_events']} ms")
    print(f"threads/processes created {res['forks_in_window']}; threads peak {res['peak_threads']}, "
          f"final {res['final_threads']}; RSS peak {res['peak_rss_kib']} KiB, final {res['final_rss_kib']} KiB, "
          f"VmHWM {res['hwm_kib']} KiB")
    print(f"flood: {f.get('sent', 0)} datagrams sent, RcvbufErrors +{f.get('rcvbuf_errors', 0)}, "
          f"{f.get('syns', 0)} connects, SyncookiesSent +{f.get('syncookies_sent', 0)}, "
          f"ListenDrops +{f.get('listen_drops', 0)}; flood errors {len(res['flood_errors'])}")
    print(f"netns known at start {res['netns_known_at_start']} (after {res['discovery_s']} s)")
    if "log" in res:
        print(f"log line counts: {res['log']}; log kept in {LOG}")
    for r in restored:
        print(f"restored {r}")
    if a.json:
        with open(a.json, "a") as out:
            out.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Every finally above has run: flood, daemon, tracefs, cgroup,
        # namespaces, sysctls and staging directory are cleaned up.
        print("storm.py: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
