#!/usr/bin/env python3
"""Table kernel x check from the results scripts/test-kernels.sh left in
target/kernels/<kernel>/; printed, and written as Markdown with --doc.

    report.py --out target/kernels [--only 6.1] [--doc docs/kernels.md]
"""

import argparse
import datetime
import glob
import os
import re
import sys

ORDER = ["5.10", "6.1", "6.12", "host"]
TREE = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
WHY_SKIPPED = {
    "operations:sample_tuner_builds_out_of_tree_and_runs_end_to_end":
        "runs `cargo build` of sample_tuner: needs a writable tree (read-only in the guest) "
        "and takes many minutes under TCG",
}
WHY_EXCLUDED = {
    "packaging": "builds rpm/deb packages: nothing kernel-specific, and the guest's tree is read-only",
    "service": "`make install` into / and the init script: host-only, covered by `make test`",
    "image": "builds and runs a podman container on the host's image store: host-only, covered by `make test`",
    "metrics": "exposition format, HTTP and headless Chromium: nothing kernel-specific, covered by `make test`",
}


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def short(line, n=240):
    line = line.strip()
    return line if len(line) <= n else line[: n - 3] + "..."


def meta_of(d):
    m = {}
    for line in read(os.path.join(d, "meta")).splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            m[k] = v
    return m


def parse_daemon(g, tuners):
    log = read(os.path.join(g, "daemon.log"))
    rc = read(os.path.join(g, "daemon.rc")).split()
    lines = log.splitlines()
    loaded = set(re.findall(r"succ?essfully initialized tuner (\w+)\[", log))
    # Split the log into one segment per plugin file ("found lib X, init").
    segs, cur = {}, None
    for line in lines:
        m = re.search(r"found lib (\S+?)/(\w+)_tuner\.so, init", line)
        if m:
            cur = m.group(2)
            segs[cur] = []
            continue
        if cur is not None:
            segs[cur].append(line)
        if re.search(r"succ?essfully initialized tuner", line) or "error initializing" in line:
            cur = None
    res = {}
    for t in sorted(set(tuners) | loaded | set(segs)):
        seg = segs.get(t, [])
        errs = [l for l in lines if re.search(rf"['/]{t}_tuner\.so'?", l) and "found lib" not in l
                and ("error" in l or "incompatible" in l or "refus" in l or "could not" in l)]
        detail = []
        in_log, block = False, []
        for l in seg:
            if "-- BEGIN PROG LOAD LOG --" in l:
                in_log, block = True, []
                continue
            if "-- END PROG LOAD LOG --" in l:
                in_log = False
                keep = [b for b in block if not re.search(r"processed \d+ insns|verification time|stack depth", b)]
                detail.extend(keep[-2:])
                continue
            if in_log:
                block.append(l)
            elif "libbpf:" in l and re.search(r"failed|error|unknown|invalid|not (found|supported)|-EINVAL|-ENOENT|-EPERM", l) \
                    and "optional step" not in l and "skipped loading" not in l:
                detail.append(l)
        if t in loaded:
            res[t] = ("loaded", [])
        elif errs or detail:
            res[t] = ("FAILED", [short(x, 400) for x in errs] + [short(x) for x in detail][:12])
        elif segs and t not in segs:
            res[t] = ("not in that run's build", [])
        else:
            res[t] = ("not loaded (no log line)", [])
    # What each tuner logged as off or degraded on this kernel.
    offs = []
    for l in lines:
        m = re.match(r"bpftune: (\w+): (.*)$", l)
        if m and m.group(1) in res and re.search(r"\b(off|disabled|not|unavailable|missing|inactive|absent|fallback|without|cannot|no)\b", m.group(2)):
            if l not in offs:
                offs.append(l)
    res["__off__"] = ("", [short(x.replace("bpftune: ", "", 1), 300) for x in offs])
    status = "no run"
    if rc:
        code, alive = rc[0], (rc[1] if len(rc) > 1 else "?")
        if alive == "yes" and code == "0":
            status = "ran, exit 0 on SIGTERM"
        elif alive == "yes":
            status = f"ran, exit {code} on SIGTERM"
        else:
            last = [l for l in lines if "libbpf:" not in l][-1:] or [""]
            status = f"exited early ({code}): {short(last[0], 160)}"
    return status, res


def parse_test(g, name, skip_spec):
    log = read(os.path.join(g, f"test-{name}.log"), None)
    if log is None:
        return None
    rc = read(os.path.join(g, f"test-{name}.rc")).strip()
    secs = read(os.path.join(g, f"test-{name}.secs")).strip()
    results = re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", log, re.M)
    started = re.findall(r"^test (\S+) \.\.\. ", log, re.M)
    passed = [n for n, r in results if r == "ok"]
    failed = [n for n, r in results if r == "FAILED"]
    ignored = [n for n, r in results if r == "ignored"]
    skips = sorted(set(re.findall(r"^SKIP (\S+?): (.*)$", log, re.M)))
    harness_skips = [s.split(":", 1)[1] for s in skip_spec if s.split(":", 1)[0] == name]
    panics = {}
    for m in re.finditer(r"^---- (\S+) std(?:out|err) ----\n(.*?)(?=^---- |^failures:|\Z)", log, re.M | re.S):
        if m.group(1) not in failed:
            continue
        p = re.search(r"panicked at ([^\n]*?):(\d+):\d+:\n(.*)", m.group(2), re.S)
        if not p:
            continue
        where, line_no, rest = p.group(1), int(p.group(2)), p.group(3)
        # The message is often the daemon's whole log, of which the last
        # lines tell most. (No source line: the tree may have moved on since
        # the binary was built.)
        msg = [l for l in rest.splitlines() if l.strip() and not l.startswith("note: run with")]
        tail = [l for l in msg if l.startswith("bpftune:") and not l.startswith("bpftune: libbpf:")
                and "event scenario" not in l][-2:]
        head = [l for l in msg[:3] if not l.startswith("bpftune:")][:1]
        text = " / ".join(head + (["daemon log ends: " + " / ".join(tail)] if tail else []))
        panics[m.group(1)] = f"`{where}:{line_no}`: {short(text, 300)}"
    n_skip = len({s[0] for s in skips}) + len(ignored) + len(harness_skips)
    counts = f"{len(passed)} passed"
    if failed:
        counts += f", {len(failed)} failed"
    if n_skip:
        counts += f", {n_skip} skipped"
    if rc in ("124", "137"):
        hung = [n for n in started if n not in dict(results)]
        cell = f"TIMEOUT after {secs} s ({counts}; hung in {hung[-1] if hung else '?'})"
    elif failed:
        cell = f"FAILED ({counts})"
    elif rc == "0" and results:
        cell = f"passed ({counts})"
    elif rc == "0":
        cell = "passed (no tests)"
    else:
        cell = f"FAILED (exit {rc}; {counts})"
    cell += f", {secs} s"
    return {"cell": cell, "failed": failed, "panics": panics, "skips": skips,
            "ignored": ignored, "harness_skips": harness_skips, "secs": secs}


def collect(out, only=None):
    kernels = []
    labels = [l for l in ORDER if os.path.isdir(os.path.join(out, l))]
    if only:
        labels = [l for l in labels if l == only]
    tuners = sorted(os.path.basename(p)[: -len("_tuner.so")]
                    for p in glob.glob(os.path.join(out, "build", "plugins", "*_tuner.so")))
    for label in labels:
        d = os.path.join(out, label)
        g = os.path.join(d, "guest")
        m = meta_of(d)
        if not m:
            continue
        k = {"label": label, "meta": m, "dir": d}
        k["done"] = os.path.exists(os.path.join(g, "done"))
        k["env"] = read(os.path.join(g, "env.txt"))
        k["support"] = read(os.path.join(g, "support.txt")).rstrip()
        k["support_rc"] = read(os.path.join(g, "support.rc")).strip()
        k["daemon"], k["tuners"] = parse_daemon(g, tuners) if os.path.exists(os.path.join(g, "daemon.rc")) \
            else ("not run", {t: ("not run", []) for t in tuners})
        k["off"] = k["tuners"].pop("__off__", ("", []))[1]
        skip_spec = m.get("skip", "").split()
        k["tests"] = {}
        for spec in m.get("tests", "").split():
            name = spec.split("=", 1)[0]
            k["tests"][name] = parse_test(g, name, skip_spec)
        times = dict(x.split("=", 1) for x in read(os.path.join(g, "times")).split() if "=" in x)
        start, end = int(m.get("start", 0)), int(m.get("end", 0) or 0)
        k["total"] = end - start if end else None
        try:
            k["smoke"] = int(times["daemon_end"]) - start
            k["boot"] = int(times["checks_start"]) - start
        except (KeyError, ValueError):
            k["smoke"] = k["boot"] = None
        k["date"] = datetime.datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M") if start else "?"
        k["uname"] = next((l[len("uname: "):] for l in k["env"].splitlines() if l.startswith("uname: ")), "")
        kernels.append(k)
    return kernels, tuners


def support_cell(k):
    if k["support_rc"] == "":
        return "not run"
    first = [l.replace("bpftune: ", "") for l in k["support"].splitlines() if l.strip()]
    head = first[0] if first else "(no output)"
    rc = k["support_rc"]
    return (f"{head}" if rc == "0" else f"exit {rc}: {head}")


def table(kernels, tuners):
    cols = [f"{k['label']} ({k['meta'].get('release', '?')})" for k in kernels]
    rows = [["check"] + cols]
    rows.append(["boot + checks completed"] + [
        ("yes" if k["done"] else f"NO (vng exit {k['meta'].get('rc', '?')}; see console.log)") if k["meta"].get("mode") == "vm"
        else ("yes" if k["done"] else "NO") for k in kernels])
    rows.append(["`bpftune -S`"] + [support_cell(k) for k in kernels])
    rows.append([f"daemon, all tuners, {20} s"] + [k["daemon"] for k in kernels])
    all_tuners = sorted(set(tuners).union(*[set(k["tuners"]) for k in kernels]))
    for t in all_tuners:
        rows.append([f"tuner {t}"] + [k["tuners"].get(t, ("-", []))[0] for k in kernels])
    names = sorted(set().union(*[set(k["tests"]) for k in kernels])) if kernels else []
    for n in names:
        cells = []
        for k in kernels:
            r = k["tests"].get(n, "absent")
            cells.append("not run (not selected)" if r == "absent" else ("not run (VM stopped before it)" if r is None else r["cell"]))
        rows.append([f"tests/{n}.rs"] + cells)
    for n, why in WHY_EXCLUDED.items():
        rows.append([f"tests/{n}.rs"] + [f"skipped: {why}" if n not in k["tests"] else "-" for k in kernels])
    rows.append(["time: boot to end of 20 s run"] + [f"{k['smoke']} s" if k["smoke"] is not None else "?" for k in kernels])
    rows.append(["time: total"] + [f"{k['total']} s" if k["total"] is not None else "?" for k in kernels])
    return rows


def markdown(rows):
    def esc(c):
        return str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(esc(c) for c in rows[0]) + " |",
             "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def plain(rows):
    widths = [min(60, max(len(str(r[i])) for r in rows)) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        out.append("  ".join(short(str(c), widths[i]).ljust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(out)


def details(kernels):
    out = []
    for k in kernels:
        m = k["meta"]
        out.append(f"### {k['label']}: {m.get('release', '?')}\n")
        out.append(f"Run {k['date']}; `{k['uname']}`; "
                   f"{'virtme-ng guest (QEMU TCG, ' + m.get('budget', '?') + ' s budget)' if m.get('mode') == 'vm' else 'the running kernel, no VM'}; "
                   f"build `{m.get('build', '?')}`; logs in `target/kernels/{k['label']}/`.\n")
        out.append("`bpftune -S`:\n")
        out.append("```\n" + (k["support"] or "(not run)") + "\n```\n")
        failed = {t: v for t, v in k["tuners"].items() if v[0] not in ("loaded", "not in that run's build")}
        if failed:
            out.append("Tuners that did not load, with the daemon's and libbpf's error lines:\n")
            for t, (st, lines) in failed.items():
                out.append(f"- **{t}**: {st}")
                if lines:
                    out.append("  ```")
                    out.extend("  " + l for l in lines)
                    out.append("  ```")
            out.append("")
        else:
            out.append("Every staged tuner loaded.\n")
        if k["off"]:
            out.append("Parts the tuners logged as off or degraded during the daemon run:\n")
            out.append("```\n" + "\n".join(k["off"]) + "\n```\n")
        notes = []
        for n, r in sorted(k["tests"].items()):
            if r is None:
                continue
            for t in r["failed"]:
                notes.append(f"- {n}::{t} FAILED: {r['panics'].get(t, '(see log)')}")
            for t, why in r["skips"]:
                notes.append(f"- {n}::{t} skipped by the test: {why}")
            for t in r["ignored"]:
                notes.append(f"- {n}::{t} ignored (#[ignore])")
            for t in r["harness_skips"]:
                notes.append(f"- {n}::{t} left out by the harness: "
                             f"{WHY_SKIPPED.get(n + ':' + t, 'KT_SKIP')}")
        if notes:
            out.append("Tests:\n")
            out.extend(notes)
            out.append("")
    return "\n".join(out)


DOC_HEAD = """# bpftune on other kernels

Generated by `make test-kernels` (`scripts/test-kernels.sh`); do not edit by
hand, run it again. Each Debian kernel boots in QEMU without KVM (TCG) with
virtme-ng on this machine's root filesystem; `host` is the running kernel,
no VM. On each: `bpftune -S`, the daemon with every staged tuner for 20 s
(`bpftune -s -d --system-libdir target/plugins -l target/plugins`, then
SIGTERM; which tuners loaded is read from its log: `sucessfully initialized
tuner NAME` or `error initializing '...'`), and the integration test
binaries, each run directly with `--test-threads=1` under a timeout. A test
that reports `SKIP name: reason` (the kernel lacks a feature) counts as
skipped. On the host the daemon run adds `-R` (roll back) and holds the
integration tests' lock.

Build under test (`git describe --dirty` of the tree when the run started;
other columns may come from earlier runs, see each kernel's details): `{commit}`.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only")
    ap.add_argument("--doc")
    a = ap.parse_args()
    kernels, tuners = collect(a.out, a.only)
    if not kernels:
        print("no results", file=sys.stderr)
        return 1
    rows = table(kernels, tuners)
    print(plain(rows))
    if a.doc:
        commit = read(os.path.join(a.out, "build", "commit.txt")).strip() or "?"
        dates = ", ".join(f"{k['label']} {k['date']}" for k in kernels)
        text = DOC_HEAD.format(commit=commit)
        builds = {k["meta"].get("build", "?") for k in kernels}
        if len(builds) > 1:
            text += ("\n**The columns come from different builds** (" +
                     ", ".join(f"{k['label']}: `{k['meta'].get('build', '?')}`" for k in kernels) +
                     "); the tree changed between the runs. Run `make test-kernels` again for one build.\n")
        text += f"\nRuns: {dates}.\n\n## Results\n\n" + markdown(rows) + "\n\n## Details\n\n" + details(kernels)
        extra = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")
        if os.path.exists(extra):
            text += "\n" + read(extra)
        with open(a.doc, "w") as f:
            f.write(text.rstrip() + "\n")
        print(f"written {a.doc}", file=sys.stderr)
    ok = all(k["done"] and k["daemon"].startswith("ran")
             and all(v[0] in ("loaded", "not in that run's build") for v in k["tuners"].values())
             and all(r and not r["failed"] and "TIMEOUT" not in r["cell"] and "FAILED" not in r["cell"]
                     for r in k["tests"].values()) for k in kernels)
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
