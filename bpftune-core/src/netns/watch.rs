//! inotify on `/run/netns`, where `ip netns` bind-mounts named namespaces:
//! a cheap way to notice them come and go between full scans. If the
//! directory does not exist yet, `/run` is watched until it appears. One fd
//! for the daemon's lifetime.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const RUN_NETNS: &str = "/run/netns";
const RUN: &str = "/run";

#[derive(Debug)]
pub struct RunNetnsWatch {
    fd: OwnedFd,
    /// Watch descriptor of `/run/netns`, once it exists.
    netns_wd: Option<i32>,
    /// Paths created or removed since last taken.
    changed: Vec<PathBuf>,
    /// Of those, the ones created (or moved in): each is a namespace made,
    /// even if it is gone before anyone looks.
    created: Vec<PathBuf>,
    /// Something happened since last asked.
    dirty: bool,
}

fn add_watch(fd: &OwnedFd, path: &str, mask: u32) -> io::Result<i32> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid inotify fd and NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
    if wd < 0 { Err(io::Error::last_os_error()) } else { Ok(wd) }
}

impl RunNetnsWatch {
    pub fn new() -> io::Result<Self> {
        // SAFETY: inotify_init1 with valid flags; the fd is owned right after.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut w = Self { fd, netns_wd: None, changed: Vec::new(), created: Vec::new(), dirty: false };
        w.arm()?;
        Ok(w)
    }

    /// Watch `/run/netns`, or `/run` until it exists.
    fn arm(&mut self) -> io::Result<()> {
        let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO | libc::IN_DELETE_SELF;
        match add_watch(&self.fd, RUN_NETNS, mask) {
            Ok(wd) => {
                self.netns_wd = Some(wd);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => add_watch(&self.fd, RUN, libc::IN_CREATE).map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// Read whatever inotify queued; true if anything happened since the
    /// last call to [`RunNetnsWatch::changed_paths`].
    pub fn pending(&mut self) -> bool {
        self.drain();
        self.dirty
    }

    /// Paths under `/run/netns` created or removed since last asked, and
    /// (second) the ones created.
    pub fn changed_paths(&mut self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        self.drain();
        self.dirty = false;
        (std::mem::take(&mut self.changed), std::mem::take(&mut self.created))
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut rearm = false;
        loop {
            // SAFETY: reading into a buffer of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            let mut off = 0;
            while off + header <= n {
                // SAFETY: the kernel wrote whole inotify_event records (it
                // never splits one); read_unaligned copes with alignment.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(off).cast()) };
                let name_len = ev.len as usize;
                let name_bytes = buf.get(off + header..off + header + name_len).unwrap_or(&[]);
                let name_end = name_bytes.iter().position(|b| *b == 0).unwrap_or(name_bytes.len());
                let name = OsStr::from_bytes(&name_bytes[..name_end]);
                off += header + name_len;
                self.dirty = true;
                if Some(ev.wd) == self.netns_wd {
                    if ev.mask & (libc::IN_DELETE_SELF | libc::IN_IGNORED) != 0 {
                        self.netns_wd = None;
                        rearm = true;
                    } else if !name.is_empty() {
                        let path = Path::new(RUN_NETNS).join(name);
                        if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                            self.created.push(path.clone());
                        }
                        self.changed.push(path);
                    }
                } else if self.netns_wd.is_none() && name == OsStr::new("netns") {
                    rearm = true;
                }
            }
            if self.changed.len() > 65536 {
                // Far more than a scan needs to know; a scan checks all anyway.
                self.changed.clear();
                self.created.clear();
            }
        }
        if rearm && self.netns_wd.is_none() {
            let _ = self.arm();
        }
    }
}
