//! Which workload a network namespace belongs to: the cgroup of a process
//! in it and, where the cgroup path shows them, the systemd unit, the
//! Kubernetes pod UID and the container id — so a change logged or counted
//! for "netns cookie 4097" can be tied to a container. Looked up once per
//! namespace at its first change (a `/proc` scan if the namespace was found
//! through `/run/netns`), cached, logged once, and exported as
//! `bpftune_netns_info`. Parsers take text, so they are tested on captured
//! paths from Docker, containerd, CRI-O, Podman and systemd.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bpftune_core::netns::NetnsHandle;

/// What a namespace's cgroup says about its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The cgroup path (v2, else systemd's v1 hierarchy, else the first v1
    /// controller that is not at the root).
    pub cgroup: String,
    /// The innermost `.scope` or `.service` in the path.
    pub unit: String,
    /// Kubernetes pod UID (dashes, as the API shows it).
    pub pod_uid: String,
    /// Container id (64 hex digits for Docker, containerd, CRI-O, Podman).
    pub container_id: String,
    /// The process it was read from.
    pub pid: u32,
}

impl Identity {
    /// `key=value` pairs of what is known, for a log line.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in
            [("container", &self.container_id), ("pod", &self.pod_uid), ("unit", &self.unit), ("cgroup", &self.cgroup)]
        {
            if !v.is_empty() {
                parts.push(format!("{k} {v}"));
            }
        }
        parts.join(", ")
    }
}

/// The cgroup path from the text of `/proc/PID/cgroup`.
pub fn cgroup_path(text: &str) -> String {
    let mut systemd = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        if id == "0" && ctrl.is_empty() {
            if path != "/" {
                return path.to_string();
            }
        } else if ctrl == "name=systemd" {
            systemd = Some(path);
        } else if path != "/" && v1.is_none() {
            v1 = Some(path);
        }
    }
    systemd.filter(|p| *p != "/").or(v1).unwrap_or("/").to_string()
}

fn is_hex_id(s: &str) -> bool {
    s.len() >= 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Unit, pod UID and container id from a cgroup path.
pub fn from_cgroup(path: &str) -> Identity {
    let mut id = Identity { cgroup: path.to_string(), ..Identity::default() };
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if comp.ends_with(".scope") || comp.ends_with(".service") {
            id.unit = comp.to_string();
        }
        let stem = comp.trim_end_matches(".scope").trim_end_matches(".slice");
        // kubepods-burstable-pod<uid>.slice (systemd driver, '_' for '-')
        // or pod<uid> (cgroupfs driver).
        if let Some(pos) = stem.rfind("pod") {
            let uid = stem[pos + 3..].replace('_', "-");
            let hex = uid.chars().filter(|c| *c != '-').count();
            if (pos == 0 || stem[..pos].ends_with('-'))
                && hex == 32
                && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
            {
                id.pod_uid = uid;
            }
        }
        // docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope,
        // libpod-<id>.scope, or a bare <id> (cgroupfs driver).
        let last = stem.rsplit('-').next().unwrap_or(stem);
        if is_hex_id(last) && (last.len() == 64 || comp == last) {
            id.container_id = last.to_string();
        }
    }
    id
}

/// A process in the namespace `handle` names: the pid of a `/proc/PID/...`
/// path if it is still in there, else the first process whose
/// `/proc/PID/ns/net` has the namespace's inode.
pub fn pid_in_netns(proc_root: &Path, handle: &NetnsHandle) -> Option<u32> {
    let in_ns = |pid: &str| std::fs::metadata(proc_root.join(pid).join("ns/net")).is_ok_and(|m| m.ino() == handle.inum);
    let mut comps = handle.path.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
    if let (Some(_), Some(p), Some(pid)) = (comps.next(), comps.next(), comps.next()) {
        if p == "proc" && pid.parse::<u32>().is_ok() && in_ns(&pid) {
            return pid.parse().ok();
        }
    }
    let dir = std::fs::read_dir(proc_root).ok()?;
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|pid| in_ns(&pid.to_string()))
}

/// How long a namespace with no process in it (yet) is not looked at again.
const RETRY: Duration = Duration::from_secs(60);
/// Namespaces remembered; the oldest go first.
const MAX_ENTRIES: usize = 4096;

/// Identities by namespace cookie.
#[derive(Debug, Default)]
pub struct Identities {
    known: HashMap<u64, Identity>,
    order: VecDeque<u64>,
    /// Namespaces without a process, and when they were looked at.
    missed: HashMap<u64, Instant>,
}

impl Identities {
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Identity)> {
        self.known.iter()
    }

    /// Look the namespace up unless it is known (or was missed lately);
    /// returns the identity when it is newly found.
    pub fn learn(&mut self, proc_root: &Path, handle: &NetnsHandle, now: Instant) -> Option<&Identity> {
        let cookie = handle.cookie;
        if self.known.contains_key(&cookie) || self.missed.get(&cookie).is_some_and(|t| now < *t + RETRY) {
            return None;
        }
        let found = pid_in_netns(proc_root, handle).and_then(|pid| {
            let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
            Some(Identity { pid, ..from_cgroup(&cgroup_path(&text)) })
        });
        let Some(id) = found else {
            if self.missed.len() >= MAX_ENTRIES {
                self.missed.clear();
            }
            self.missed.insert(cookie, now);
            return None;
        };
        self.missed.remove(&cookie);
        if self.order.len() >= MAX_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
        self.order.push_back(cookie);
        self.known.insert(cookie, id);
        self.known.get(&cookie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn cgroup_path_prefers_v2_then_systemd() {
        assert_eq!(cgroup_path("0::/system.slice/docker-abc.scope\n"), "/system.slice/docker-abc.scope");
        let hybrid = "9:name=systemd:/user.slice/run-r1.scope\n4:memory:/x\n0::/\n";
        assert_eq!(cgroup_path(hybrid), "/user.slice/run-r1.scope");
        assert_eq!(cgroup_path("9:name=systemd:/\n4:memory:/process_api/7bc3\n0::/\n"), "/process_api/7bc3");
        assert_eq!(cgroup_path("0::/\n"), "/");
        assert_eq!(cgroup_path(""), "/");
    }

    #[test]
    fn runtimes_and_drivers() {
        let d = from_cgroup(&format!("/system.slice/docker-{DOCKER}.scope"));
        assert_eq!((d.container_id.as_str(), d.pod_uid.as_str()), (DOCKER, ""));
        assert_eq!(d.unit, format!("docker-{DOCKER}.scope"));
        let k8s = from_cgroup(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-{DOCKER}.scope"
        ));
        assert_eq!(k8s.pod_uid, "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901");
        assert_eq!(k8s.container_id, DOCKER);
        let cgroupfs = from_cgroup(&format!("/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{DOCKER}"));
        assert_eq!(cgroupfs.pod_uid, "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901");
        assert_eq!(cgroupfs.container_id, DOCKER);
        assert_eq!(cgroupfs.unit, "");
        let podman = from_cgroup(&format!("/machine.slice/libpod-{DOCKER}.scope/container"));
        assert_eq!(podman.container_id, DOCKER);
        let crio = from_cgroup(&format!("/kubepods.slice/crio-{DOCKER}.scope"));
        assert_eq!(crio.container_id, DOCKER);
        let scope = from_cgroup("/system.slice/run-r3f1b2c.scope");
        assert_eq!((scope.unit.as_str(), scope.container_id.as_str()), ("run-r3f1b2c.scope", ""));
        let service = from_cgroup("/system.slice/nginx.service");
        assert_eq!(service.unit, "nginx.service");
        assert_eq!(from_cgroup("/").describe(), "cgroup /");
        assert_eq!(scope.describe(), "unit run-r3f1b2c.scope, cgroup /system.slice/run-r3f1b2c.scope");
        // Words that merely contain "pod" are not pods.
        assert_eq!(from_cgroup("/system.slice/podman.service").pod_uid, "");
    }

    #[test]
    fn own_namespace_is_found_by_scan() {
        let ino = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).expect("own netns");
        let handle = NetnsHandle { cookie: 7, inum: ino, path: "/run/netns/none".into() };
        assert!(pid_in_netns(Path::new("/proc"), &handle).is_some());
        let mut ids = Identities::default();
        let now = Instant::now();
        assert!(ids.learn(Path::new("/proc"), &handle, now).is_some());
        assert!(ids.iter().any(|(c, _)| *c == 7));
        assert!(ids.learn(Path::new("/proc"), &handle, now).is_none(), "learned once");
        let me = std::process::id();
        let by_pid = NetnsHandle { cookie: 9, inum: ino, path: format!("/proc/{me}/ns/net").into() };
        assert_eq!(pid_in_netns(Path::new("/proc"), &by_pid), Some(me), "the pid the path names");
        let gone = NetnsHandle { cookie: 8, inum: 1, path: "/proc/999999999/ns/net".into() };
        assert!(ids.learn(Path::new("/proc"), &gone, now).is_none());
        assert!(!ids.iter().any(|(c, _)| *c == 8));
    }
}
