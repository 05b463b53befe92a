//! The cgroup v2 directory cgroup BPF programs (sockops, sysctl) attach to:
//! create and mount it if needed, unmount on exit if we mounted it, and
//! detach `bpftune_*` programs a crashed earlier run left attached.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::logging;

/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == CGROUP2_MAGIC)
}

/// An open cgroup v2 directory.
pub struct Cgroup {
    path: PathBuf,
    dir: File,
    mounted: bool,
}

impl Cgroup {
    /// Make `path` a usable cgroup v2 directory: create it, mount cgroup2
    /// there unless it already is one, open it.
    pub fn setup(path: &Path) -> Result<Self, String> {
        if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o755).create(path) {
            return Err(format!("couldnt create cgroup dir '{}': {e}", path.display()));
        }
        let already = is_cgroup2(path).map_err(|e| format!("cannot inspect cgroup dir '{}': {e}", path.display()))?;
        // A cgroup2 mount inside our run directory is one an earlier run
        // made and could not remove (it was killed): adopt it, so it is
        // unmounted at exit. Mounts elsewhere belong to someone else.
        let mut mounted = already && (path.starts_with("/var/run/bpftune") || path.starts_with("/run/bpftune"));
        if !already {
            let target = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: all pointers are valid NUL-terminated strings (or NULL
            // data) for the duration of the call.
            let rc =
                unsafe { libc::mount(c"none".as_ptr(), target.as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null()) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EBUSY) {
                    return Err(format!("couldnt mount cgroup2 for '{}': {e}", path.display()));
                }
            } else {
                mounted = true;
            }
        }
        let dir = File::open(path).map_err(|e| format!("cannot open cgroup dir '{}': {e}", path.display()))?;
        Ok(Self { path: path.to_path_buf(), dir, mounted })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    pub fn raw_fd(&self) -> i32 {
        self.dir.as_raw_fd()
    }

    /// Detach programs named `bpftune_*` left attached to this cgroup by a
    /// previous run that did not exit cleanly (link-based attachments go
    /// away with their process; legacy attachments do not).
    pub fn detach_leftovers(&self) {
        use libbpf_rs::libbpf_sys as sys;
        for attach_type in [sys::BPF_CGROUP_SOCK_OPS, sys::BPF_CGROUP_SYSCTL] {
            let mut ids = [0u32; 64];
            let mut count = ids.len() as u32;
            let mut flags = 0u32;
            // SAFETY: ids/count describe a valid buffer; the fd is open.
            let rc =
                unsafe { sys::bpf_prog_query(self.raw_fd(), attach_type, 0, &mut flags, ids.as_mut_ptr(), &mut count) };
            if rc < 0 {
                continue;
            }
            for &id in ids.iter().take(count as usize) {
                // SAFETY: plain syscall wrapper; a negative result is an error.
                let fd = unsafe { sys::bpf_prog_get_fd_by_id(id) };
                if fd < 0 {
                    continue;
                }
                // SAFETY: zeroed info struct with its size passed in.
                let mut info: sys::bpf_prog_info = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
                // SAFETY: info/len describe a valid buffer; fd is ours.
                let ok =
                    unsafe { sys::bpf_obj_get_info_by_fd(fd, (&mut info as *mut sys::bpf_prog_info).cast(), &mut len) }
                        == 0;
                let name: String = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect();
                if ok && name.starts_with("bpftune_") {
                    logging::debug(&format!("detaching old BPF program '{name}'"));
                    // SAFETY: detaching a program fd we hold from our cgroup.
                    let rc = unsafe { sys::bpf_prog_detach2(fd, self.raw_fd(), attach_type) };
                    if rc < 0 {
                        logging::debug(&format!(
                            "error detaching old prog {name} fd {fd}, cgroup fd {}: {}",
                            self.raw_fd(),
                            io::Error::last_os_error()
                        ));
                    }
                }
                // SAFETY: closing the fd bpf_prog_get_fd_by_id gave us.
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        // The daemon dropped its capabilities after start-up.
        let _caps = bpftune_core::privilege::Raised::raise(&[caps::Capability::CAP_SYS_ADMIN]);
        if let Ok(target) = CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path; lazy unmount of our mount.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } < 0 {
                logging::debug(&format!("could not unmount '{}': {}", self.path.display(), io::Error::last_os_error()));
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}
