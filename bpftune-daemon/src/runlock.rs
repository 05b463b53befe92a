//! The run directory and the single-instance lock in it: a second daemon
//! refuses to start, with the first one's pid in the message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Holds the lock for as long as it lives; removes the file on drop.
pub struct RunLock {
    file: File,
    path: PathBuf,
}

/// Create the run directory (0755) if needed.
pub fn ensure_run_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("could not create '{}': {e}", dir.display()))
}

impl RunLock {
    pub fn acquire(dir: &Path) -> Result<Self, String> {
        let path = dir.join("bpftune.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("could not open lock file '{}': {e}", path.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(format!(
                "another bpftune is already running (pid {}); lock file '{}'",
                if pid.is_empty() { "?" } else { pid },
                path.display()
            ));
        }
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Self { file, path })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}
