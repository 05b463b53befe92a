#!/usr/bin/env python3
"""Validate deploy/kubernetes offline against the Kubernetes API schemas.

Every resource the kustomization lists is checked with kubernetes-validate
(PyPI; the JSON schemas ship inside the package, so nothing is fetched at
validation time) in strict mode, which rejects unknown fields, for one
Kubernetes release. Where kubectl is installed, the kustomization is also
rendered with `kubectl kustomize` and the rendered objects are validated.
A broken copy of the DaemonSet must fail (the validator really validates),
and the DaemonSet must carry what the container test shows bpftune needs:
it prints those facts (one `fact: ...` line each) for tests/tests/image.rs
to compare with the podman command it ran.

    scripts/validate-k8s.py [--dir deploy/kubernetes] [--k8s-version 1.37.0]

Installs kubernetes-validate with pip when it is missing. Exits non-zero on
the first problem.
"""

import argparse
import copy
import glob
import json
import os
import shutil
import subprocess
import sys

KV_VERSION = "1.37.0"
DEFAULT_K8S = "1.37.0"


def ensure_validator():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        print(f"installing kubernetes-validate=={KV_VERSION} (PyPI)", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"kubernetes-validate=={KV_VERSION}"],
            check=True,
        )
    import kubernetes_validate
    import yaml
    return kubernetes_validate, yaml


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def validate(kv, doc, version, where):
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as e:
        fail(f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {e.message} at {list(e.path)}")
    except kv.utils.SchemaNotFoundError as e:
        fail(f"{where}: no schema: {e}")
    print(f"ok: {where}: {doc['kind']}/{doc['metadata']['name']} valid for Kubernetes {version} (strict)")


def must_fail(kv, doc, version, what):
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError:
        print(f"ok: control: {what} is rejected")
        return
    fail(f"control: {what} was accepted: the validator does not validate")


def check_daemonset(ds):
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    if not (spec.get("hostNetwork") and spec.get("hostPID")):
        fail("DaemonSet needs hostNetwork and hostPID")
    if c.get("securityContext", {}).get("privileged") is not True:
        fail("DaemonSet container must be privileged (writable /proc/sys)")
    for probe in ("livenessProbe", "startupProbe"):
        cmd = c.get(probe, {}).get("exec", {}).get("command", [])
        if cmd[-2:] != ["-q", "status"]:
            fail(f"{probe} must run `bpftune -q status`, not {cmd}")
    res = c.get("resources", {})
    for k in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(k, {})):
            fail(f"resources.{k} must set cpu and memory")
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {}
    for m in c["volumeMounts"]:
        src = vols[m["name"]].get("hostPath", {}).get("path")
        if not src:
            fail(f"volume {m['name']} is not a hostPath")
        mounts[m["mountPath"]] = src
    args = c.get("args", [])
    if "-c" not in args:
        fail("args must give the cgroup v2 directory with -c")
    cgroup = args[args.index("-c") + 1]
    if cgroup not in mounts:
        fail(f"-c {cgroup} is not a mounted host directory")
    for path in ("/run/bpftune", "/var/lib/bpftune", "/run/netns"):
        if mounts.get(path) != path:
            fail(f"{path} must be the host's {path}")
    print("fact: mounts " + " ".join(f"{src}:{dst}" for dst, src in sorted(mounts.items())))
    print(f"fact: cgroup {cgroup}")
    print("fact: args " + " ".join(args))
    print("fact: probe " + " ".join(c["livenessProbe"]["exec"]["command"]))
    print("fact: resources " + json.dumps(res, sort_keys=True))


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(here, "deploy", "kubernetes"))
    ap.add_argument("--k8s-version", default=DEFAULT_K8S)
    a = ap.parse_args()
    kv, yaml = ensure_validator()

    with open(os.path.join(a.dir, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    listed = kust.get("resources", [])
    present = sorted(os.path.basename(p) for p in glob.glob(os.path.join(a.dir, "*.yaml"))
                     if os.path.basename(p) != "kustomization.yaml")
    if sorted(listed) != present:
        fail(f"kustomization.yaml lists {sorted(listed)} but the directory has {present}")

    docs = []
    for name in listed:
        with open(os.path.join(a.dir, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    validate(kv, doc, a.k8s_version, name)
                    docs.append(doc)

    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", a.dir], check=True, capture_output=True, text=True).stdout
        rendered = [d for d in yaml.safe_load_all(out) if d]
        if len(rendered) != len(docs):
            fail(f"kubectl kustomize rendered {len(rendered)} objects, the files hold {len(docs)}")
        for doc in rendered:
            validate(kv, doc, a.k8s_version, "kubectl kustomize")
            if doc["metadata"].get("namespace", "bpftune") != "bpftune":
                fail(f"{doc['kind']} rendered outside the bpftune namespace")
    else:
        print("note: kubectl not installed: the kustomization was not rendered (files validated one by one)")

    ds = next((d for d in docs if d["kind"] == "DaemonSet"), None)
    if ds is None:
        fail("no DaemonSet")
    check_daemonset(ds)

    # Controls: an unknown field and a wrong type must both be rejected.
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["hostNetwrok"] = True
    must_fail(kv, bad, a.k8s_version, "a misspelt field (hostNetwrok)")
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = "often"
    must_fail(kv, bad, a.k8s_version, "a string where an integer belongs")
    print(f"all {len(docs)} manifests valid for Kubernetes {a.k8s_version}")


if __name__ == "__main__":
    main()
