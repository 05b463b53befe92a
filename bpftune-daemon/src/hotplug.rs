//! Plugins at run time: inotify (non-blocking, served from the mio loop) on
//! the plugin directories. A `*_tuner.so` that is written and closed, or
//! renamed into place, is trust-checked and loaded; one that is deleted or
//! renamed away is finalised (and rolled back with `-R`); one replaced by a
//! rename over it (a package upgrade) has the old tuner finalised and the
//! new one loaded. Package managers' temporary files (`*.dpkg-new`,
//! `*.rpmnew`, `.#*`, …) are ignored: only names
//! [`loader::is_tuner_file_name`] accepts count.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bpftune_core::loader;
use bpftune_core::registry::TunerState;

use crate::journal::Journal;
use crate::logging;
use crate::tuners::TunerSet;

/// What happened in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A complete file appeared (closed after writing, or renamed in).
    Added(PathBuf),
    /// The file went away (deleted or renamed out).
    Removed(PathBuf),
    /// Events were lost: compare the directories with what is loaded.
    Rescan,
}

/// The inotify instance and its watches.
pub struct Hotplug {
    fd: OwnedFd,
    watches: HashMap<i32, PathBuf>,
}

const MASK: u32 = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_ONLYDIR;

impl Hotplug {
    /// Watch `dirs`; a directory that cannot be watched (e.g. missing) is
    /// noted at debug level and skipped.
    pub fn new(dirs: &[PathBuf]) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned right after.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we exclusively own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut watches = HashMap::new();
        for dir in dirs {
            let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else { continue };
            // SAFETY: valid inotify fd and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), MASK) };
            if wd < 0 {
                logging::debug(&format!(
                    "cannot monitor '{}' for changes: {}",
                    dir.display(),
                    io::Error::last_os_error()
                ));
                continue;
            }
            logging::debug(&format!("monitoring '{}' for tuner changes", dir.display()));
            watches.insert(wd, dir.clone());
        }
        Ok(Self { fd, watches })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Read every pending event (until the fd would block).
    pub fn read_changes(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    _ => {
                        logging::err(&format!("cannot read plugin directory changes: {e}"));
                        break;
                    }
                }
            }
            if n == 0 {
                break;
            }
            out.extend(self.parse(&buf[..n as usize]));
        }
        out
    }

    fn parse(&mut self, mut bytes: &[u8]) -> Vec<Change> {
        const HDR: usize = std::mem::size_of::<libc::inotify_event>();
        let mut out = Vec::new();
        while bytes.len() >= HDR {
            // SAFETY: at least HDR bytes remain; read_unaligned copes with
            // any alignment of the byte buffer.
            let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let len = ev.len as usize;
            let Some(name_bytes) = bytes.get(HDR..HDR + len) else { break };
            let name_end = name_bytes.iter().position(|&b| b == 0).unwrap_or(len);
            let name = OsStr::from_bytes(&name_bytes[..name_end]);
            bytes = &bytes[HDR + len..];
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                out.push(Change::Rescan);
                continue;
            }
            if ev.mask & libc::IN_IGNORED != 0 {
                self.watches.remove(&ev.wd);
                continue;
            }
            if ev.mask & libc::IN_ISDIR != 0 {
                continue;
            }
            let Some(dir) = self.watches.get(&ev.wd) else { continue };
            let Some(name) = name.to_str() else { continue };
            if !loader::is_tuner_file_name(name) {
                continue;
            }
            let path = dir.join(name);
            if ev.mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) != 0 {
                out.push(Change::Added(path));
            } else if ev.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                out.push(Change::Removed(path));
            }
        }
        out
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Finalise the tuner loaded from `path` (state manual, as the original),
/// rolling it back if it has the rollback flag.
fn remove(set: &mut TunerSet, journal: Option<&std::cell::RefCell<Journal>>, path: &Path, why: &str) {
    let Some(idx) = set.index_by_path(path) else { return };
    let name = set.tuners[idx].name().to_string();
    logging::notice(&format!("{why} '{}', fini tuner {name}", file_name(path)));
    set.finalize(idx, TunerState::Manual);
    if set.tuners[idx].rollback {
        if let Some(j) = journal {
            j.borrow_mut().forget_tuner(&name);
        }
    }
}

fn add(set: &mut TunerSet, path: &Path) {
    if !set.allowed(&file_name(path)) {
        logging::debug(&format!("skipping {} as not on allowlist", file_name(path)));
        return;
    }
    match set.load_file(path) {
        Ok(_) => logging::notice(&format!("added lib {}, init succeeded", path.display())),
        Err(_) => logging::notice(&format!("added lib {}, init failed", path.display())),
    }
}

/// Act on directory changes.
pub fn apply(
    set: &mut TunerSet,
    journal: Option<&std::cell::RefCell<Journal>>,
    changes: Vec<Change>,
    dirs: &[PathBuf],
) {
    for change in changes {
        match change {
            Change::Added(path) => {
                if set.index_by_path(&path).is_some() {
                    remove(set, journal, &path, "replaced");
                }
                add(set, &path);
            }
            Change::Removed(path) => remove(set, journal, &path, "removed"),
            Change::Rescan => {
                logging::warn("plugin directory events were lost; rescanning");
                for path in set.paths() {
                    if !path.exists() {
                        remove(set, journal, &path, "removed");
                    }
                }
                for dir in dirs {
                    for path in loader::scan_dir(dir).unwrap_or_default() {
                        if set.index_by_path(&path).is_none() {
                            add(set, &path);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(wd: i32, mask: u32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        padded.push(0);
        while padded.len() % 16 != 0 {
            padded.push(0);
        }
        let ev = libc::inotify_event { wd, mask, cookie: 0, len: padded.len() as u32 };
        // SAFETY: viewing a plain-old-data struct as bytes.
        let hdr = unsafe {
            std::slice::from_raw_parts((&ev as *const libc::inotify_event).cast::<u8>(), std::mem::size_of_val(&ev))
        };
        let mut v = hdr.to_vec();
        v.extend(padded);
        v
    }

    #[test]
    fn parses_and_filters_names() {
        let mut h = Hotplug::new(&[]).expect("inotify");
        h.watches.insert(1, PathBuf::from("/p"));
        let mut bytes = event(1, libc::IN_MOVED_TO, "x_tuner.so");
        bytes.extend(event(1, libc::IN_CLOSE_WRITE, "x_tuner.so.dpkg-new"));
        bytes.extend(event(1, libc::IN_CLOSE_WRITE, ".#x_tuner.so"));
        bytes.extend(event(1, libc::IN_DELETE, "y_tuner.so"));
        bytes.extend(event(1, libc::IN_CLOSE_WRITE | libc::IN_ISDIR, "d_tuner.so"));
        bytes.extend(event(2, libc::IN_CLOSE_WRITE, "z_tuner.so"));
        bytes.extend(event(-1, libc::IN_Q_OVERFLOW, ""));
        assert_eq!(
            h.parse(&bytes),
            vec![
                Change::Added(PathBuf::from("/p/x_tuner.so")),
                Change::Removed(PathBuf::from("/p/y_tuner.so")),
                Change::Rescan
            ]
        );
    }
}
