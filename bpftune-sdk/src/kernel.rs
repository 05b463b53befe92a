//! What the running kernel offers a tuner, asked at load time rather than
//! inferred from its version: whether a BPF program type may call a helper,
//! whether kernel BTF has an enum value (a tracepoint argument or drop
//! reason), whether a sysctl exists, and the release for the few facts that
//! only a version tells (a limit that stopped mattering in some release).
//!
//! Every answer defaults to "no" when the question cannot be asked, so a
//! tuner never loads a program the kernel would refuse.

use std::path::Path;

use libbpf_rs::ProgramType;
use libbpf_rs::btf::Btf;
use libbpf_rs::btf::types::Enum;

/// A BPF helper a tuner may call where the kernel allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Helper {
    pub id: u32,
    pub name: &'static str,
}

macro_rules! helpers {
    ($($konst:ident = $id:ident, $name:literal;)*) => {
        $(pub const $konst: Helper = Helper { id: libbpf_rs::libbpf_sys::$id, name: $name };)*
    };
}

helpers! {
    GET_CURRENT_PID_TGID = BPF_FUNC_get_current_pid_tgid, "bpf_get_current_pid_tgid";
    GET_CURRENT_TASK_BTF = BPF_FUNC_get_current_task_btf, "bpf_get_current_task_btf";
    GET_CURRENT_COMM = BPF_FUNC_get_current_comm, "bpf_get_current_comm";
    GET_NETNS_COOKIE = BPF_FUNC_get_netns_cookie, "bpf_get_netns_cookie";
    SYSCTL_GET_NEW_VALUE = BPF_FUNC_sysctl_get_new_value, "bpf_sysctl_get_new_value";
}

/// Environment variable naming kernel features to treat as missing
/// (comma-separated helper names, `enum:VALUE` names, sysctl names), so
/// the fallback paths of older kernels can be exercised on a new one.
pub const PRETEND_MISSING_ENV: &str = "BPFTUNE_PRETEND_MISSING";

/// Is `name` listed in [`PRETEND_MISSING_ENV`]?
pub fn pretend_missing(name: &str) -> bool {
    std::env::var(PRETEND_MISSING_ENV).is_ok_and(|v| v.split(',').any(|n| n.trim() == name))
}

/// Whether programs of type `prog` may call `helper` on this kernel
/// (libbpf loads a two-instruction probe program). False on any error,
/// including program types libbpf cannot probe this way (tracing).
pub fn helper_supported(prog: ProgramType, helper: Helper) -> bool {
    !pretend_missing(helper.name) && prog.is_helper_supported(helper.id).unwrap_or(false)
}

/// Whether kernel BTF has enum `enum_name` with a value named `value`.
pub fn btf_enum_value_exists(enum_name: &str, value: &str) -> bool {
    if pretend_missing(value) {
        return false;
    }
    let Ok(btf) = Btf::from_vmlinux() else { return false };
    let Some(e) = btf.type_by_name::<Enum<'_>>(enum_name) else { return false };
    e.iter().any(|m| m.name.is_some_and(|n| n == value))
}

/// Whether sysctl `name` (dotted) exists in the daemon's namespace.
pub fn sysctl_exists(name: &str) -> bool {
    !pretend_missing(name) && sysctl_exists_under(Path::new("/proc/sys"), name)
}

fn sysctl_exists_under(root: &Path, name: &str) -> bool {
    root.join(name.replace('.', "/")).exists()
}

/// The running kernel's release as (major, minor, patch), from
/// `/proc/sys/kernel/osrelease`.
pub fn release() -> Option<(u32, u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_release(&text)
}

/// `6.1.0-28-amd64` → (6, 1, 0); `5.10.226` → (5, 10, 226).
pub fn parse_release(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        assert_eq!(parse_release("6.1.0-28-amd64\n"), Some((6, 1, 0)));
        assert_eq!(parse_release("5.10.226"), Some((5, 10, 226)));
        assert_eq!(parse_release("6.18.44-fc-v1272"), Some((6, 18, 44)));
        assert_eq!(parse_release("6.12"), Some((6, 12, 0)));
        assert_eq!(parse_release("junk"), None);
        // Distribution and release-candidate suffixes.
        assert_eq!(parse_release("5.14.0-284.el9.x86_64\n"), Some((5, 14, 0)));
        assert_eq!(parse_release("5.4"), Some((5, 4, 0)));
        assert_eq!(parse_release("6.1-rc1"), Some((6, 1, 0)));
    }

    #[test]
    fn sysctl_paths() {
        let dir = std::env::temp_dir().join(format!("bpftune-kernel-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net/core")).expect("mkdir");
        std::fs::write(dir.join("net/core/netdev_budget"), "300\n").expect("write");
        assert!(sysctl_exists_under(&dir, "net.core.netdev_budget"));
        assert!(!sysctl_exists_under(&dir, "net.core.flow_limit_cpu_bitmap"));
        std::fs::remove_dir_all(&dir).expect("rm");
    }
}
