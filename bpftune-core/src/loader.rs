//! Finding, trust-checking and loading tuner `.so` files.
//!
//! A plugin runs as root inside the daemon, so before it is mapped every
//! directory above it and the file itself must be root-owned, not group- or
//! other-writable, free of ACLs and not a symlink; the file is opened with
//! `O_NOFOLLOW` and loaded through `/proc/self/fd/N`, so what was checked is
//! what gets mapped. Then abi_stable checks the library's ABI version and the
//! layout of every type in the interface before anything is called.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use abi_stable::library::{LibraryError, RootModule, lib_header_from_path};

use crate::abi::{BPFTUNE_ABI_VERSION, NETNS_RELEASED_SYMBOL, NetnsReleasedFn, TunerDescriptor, TunerModuleRef};

/// Only files with this suffix are tuners.
pub const TUNER_SUFFIX: &str = "_tuner.so";
/// Upper bounds on what a tuner may declare.
pub const MAX_TUNABLES: usize = 64;
pub const MAX_SCENARIOS: usize = 64;

/// Why a plugin was not loaded. The `Display` text is the log line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Untrusted(String),
    #[error("could not open plugin '{path}': {source}")]
    Open { path: String, source: io::Error },
    #[error("could not load '{path}': {reason}")]
    Library { path: String, reason: String },
    #[error("'{path}' has an incompatible bpftune plugin ABI: {reason}")]
    Abi { path: String, reason: String },
}

/// Names a plugin directory entry must have to be considered a tuner (and
/// not a package manager's temporary file such as `x_tuner.so.dpkg-new`).
pub fn is_tuner_file_name(name: &str) -> bool {
    name.ends_with(TUNER_SUFFIX) && name.len() > TUNER_SUFFIX.len() && !name.starts_with('.')
}

fn has_xattr(path: Option<&Path>, fd: Option<i32>, name: &str) -> io::Result<bool> {
    let cname = CString::new(name).map_err(io::Error::other)?;
    let rc = match (path, fd) {
        (_, Some(fd)) => {
            // SAFETY: querying the size only (NULL buffer, 0 length) on an
            // fd we hold open.
            unsafe { libc::fgetxattr(fd, cname.as_ptr(), std::ptr::null_mut(), 0) }
        }
        (Some(p), None) => {
            let cpath = CString::new(p.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
            // SAFETY: both strings are NUL-terminated and outlive the call;
            // size query only.
            unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) }
        }
        (None, None) => return Ok(false),
    };
    if rc >= 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(err),
    }
}

/// Check every directory from the first component below `/` down to the
/// plugin's parent. `owner` is the uid that must own them (0 in the daemon).
pub fn check_directories(path: &Path, owner: u32) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("plugin path '{}' is not absolute", path.display()));
    }
    let mut components = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => components.push(n),
            _ => return Err(format!("plugin path '{}' has '.' or '..' components", path.display())),
        }
    }
    if components.is_empty() {
        return Err(format!("plugin path '{}' names no file", path.display()));
    }
    let mut dir = PathBuf::from("/");
    for comp in &components[..components.len() - 1] {
        dir.push(comp);
        let meta = std::fs::symlink_metadata(&dir)
            .map_err(|e| format!("cannot stat plugin directory '{}': {e}", dir.display()))?;
        let mode = meta.permissions().mode();
        if !meta.is_dir() || meta.uid() != owner || mode & 0o022 != 0 {
            return Err(format!(
                "untrusted plugin directory '{}' (mode {:o}, uid {})",
                dir.display(),
                mode,
                meta.uid()
            ));
        }
        match has_xattr(Some(&dir), None, "system.posix_acl_access") {
            Ok(true) => return Err(format!("plugin directory '{}' has an access ACL", dir.display())),
            Ok(false) => {}
            Err(e) => return Err(format!("cannot inspect ACL for plugin directory '{}': {e}", dir.display())),
        }
        match has_xattr(Some(&dir), None, "system.posix_acl_default") {
            Ok(true) => return Err(format!("plugin directory '{}' has a default ACL", dir.display())),
            Ok(false) => {}
            Err(e) => return Err(format!("cannot inspect ACL for plugin directory '{}': {e}", dir.display())),
        }
    }
    Ok(())
}

/// Open the plugin file without following links and check it.
pub fn open_trusted(path: &Path, owner: u32) -> Result<File, LoadError> {
    let untrusted =
        |msg: String| LoadError::Untrusted(format!("{msg}; refusing untrusted plugin '{}'", path.display()));
    check_directories(path, owner).map_err(untrusted)?;
    let mut last = None;
    // inotify may report a file a moment before it can be opened.
    for _ in 0..5 {
        match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) {
            Ok(f) => {
                let meta =
                    f.metadata().map_err(|e| untrusted(format!("cannot inspect plugin '{}': {e}", path.display())))?;
                let mode = meta.permissions().mode();
                if !meta.is_file() || meta.uid() != owner || mode & 0o022 != 0 {
                    return Err(untrusted(format!(
                        "untrusted plugin '{}' (mode {:o}, uid {})",
                        path.display(),
                        mode,
                        meta.uid()
                    )));
                }
                match has_xattr(None, Some(f.as_raw_fd()), "system.posix_acl_access") {
                    Ok(true) => return Err(untrusted(format!("plugin '{}' has an access ACL", path.display()))),
                    Ok(false) => {}
                    Err(e) => {
                        return Err(untrusted(format!("cannot inspect ACL for plugin '{}': {e}", path.display())));
                    }
                }
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(untrusted(format!("plugin '{}' is a symbolic link", path.display())));
            }
            Err(e) => return Err(LoadError::Open { path: path.display().to_string(), source: e }),
        }
    }
    Err(LoadError::Open {
        path: path.display().to_string(),
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
    })
}

/// libloading hides dlerror's text behind `source()`: walk the chain, and
/// fold abi_stable's multi-line messages into one log line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
    }
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every fd number ever passed to the dynamic loader as `/proc/self/fd/N`.
/// The loader remembers objects by that name (and some never unload), so a
/// later file must never be loaded under a number used before.
static USED_FD_NAMES: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Give `file` an fd number never used for a load before, and record it.
fn fresh_fd_name(file: File) -> io::Result<File> {
    let mut used = USED_FD_NAMES.lock().map_err(|_| io::Error::other("loader lock poisoned"))?;
    let mut file = file;
    while used.contains(&file.as_raw_fd()) {
        let min = used.iter().copied().max().unwrap_or(0) + 1;
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we own onto the lowest
        // free number >= min; the new fd is owned by the File below.
        let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we exclusively own.
        file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    }
    used.push(file.as_raw_fd());
    Ok(file)
}

/// Refuse files the dynamic loader would crash on: not a 64-bit ELF shared
/// object, or truncated (headers or loadable segments past the end).
pub fn check_elf(file: &File) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut hdr = [0u8; 64];
    file.read_exact_at(&mut hdr, 0).map_err(|_| format!("not an ELF file (only {size} bytes)"))?;
    if &hdr[..4] != b"\x7fELF" {
        return Err("not an ELF file".to_string());
    }
    if hdr[4] != 2 || hdr[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".to_string());
    }
    let u16_at = |b: &[u8], o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    if u16_at(&hdr, 0x10) != 3 {
        return Err("not an ELF shared object".to_string());
    }
    let (phoff, shoff) = (u64_at(&hdr, 0x20), u64_at(&hdr, 0x28));
    let (phentsize, phnum) = (u16_at(&hdr, 0x36), u16_at(&hdr, 0x38));
    let (shentsize, shnum) = (u16_at(&hdr, 0x3a), u16_at(&hdr, 0x3c));
    let truncated = || format!("truncated ELF file ({size} bytes)");
    let end = |off: u64, len: u64| off.checked_add(len).ok_or_else(truncated);
    if end(phoff, phentsize * phnum)? > size || end(shoff, shentsize * shnum)? > size || phentsize < 56 {
        return Err(truncated());
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        file.read_exact_at(&mut ph, phoff + i * phentsize).map_err(|_| truncated())?;
        let p_type = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        const PT_LOAD: u32 = 1;
        if p_type == PT_LOAD && end(u64_at(&ph, 8), u64_at(&ph, 0x20))? > size {
            return Err(truncated());
        }
    }
    Ok(())
}

/// A loaded, ABI-checked plugin.
pub struct Plugin {
    pub path: PathBuf,
    pub module: TunerModuleRef,
    pub descriptor: TunerDescriptor,
    /// The optional `bpftune_netns_released_v2` entry point, if exported.
    pub netns_released: Option<NetnsReleasedFn>,
    /// Kept open for as long as the process lives: the library stays mapped
    /// (abi_stable never unloads) under the name `/proc/self/fd/N`, and a
    /// reused fd number would make the dynamic loader return that old
    /// library for a new file.
    pub file: File,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("name", &self.descriptor.name).finish()
    }
}

/// Trust-check, map and ABI-check one plugin file.
pub fn load_plugin(path: &Path, owner: u32) -> Result<Plugin, LoadError> {
    let file = open_trusted(path, owner)?;
    check_elf(&file).map_err(|reason| LoadError::Library { path: path.display().to_string(), reason })?;
    let file = fresh_fd_name(file).map_err(|e| LoadError::Open { path: path.display().to_string(), source: e })?;
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let display = path.display().to_string();
    let header = lib_header_from_path(&fd_path).map_err(|e| match e {
        LibraryError::OpenError { .. } | LibraryError::GetSymbolError { .. } => {
            LoadError::Library { path: display.clone(), reason: error_chain(&e) }
        }
        other => LoadError::Abi { path: display.clone(), reason: error_chain(&other) },
    })?;
    let module = header
        .init_root_module::<TunerModuleRef>()
        .map_err(|e| LoadError::Abi { path: display.clone(), reason: error_chain(&e) })?;
    let descriptor = (module.descriptor())();
    if descriptor.abi_version != BPFTUNE_ABI_VERSION {
        return Err(LoadError::Abi {
            path: display,
            reason: format!(
                "plugin ABI version {} but the daemon speaks {BPFTUNE_ABI_VERSION}",
                descriptor.abi_version
            ),
        });
    }
    let name = descriptor.name.as_str();
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(LoadError::Abi { path: display, reason: format!("invalid tuner name '{name}'") });
    }
    if descriptor.tunables.len() > MAX_TUNABLES || descriptor.scenarios.len() > MAX_SCENARIOS {
        return Err(LoadError::Abi {
            path: display,
            reason: format!(
                "too many tunables ({}) or scenarios ({}); at most {MAX_TUNABLES}/{MAX_SCENARIOS}",
                descriptor.tunables.len(),
                descriptor.scenarios.len()
            ),
        });
    }
    let netns_released = optional_netns_released(&fd_path);
    Ok(Plugin { path: path.to_path_buf(), module, descriptor, netns_released, file })
}

/// The plugin's [`NETNS_RELEASED_SYMBOL`], if it exports one. The plugin is
/// already mapped under `fd_path` (abi_stable opened it by that name).
fn optional_netns_released(fd_path: &Path) -> Option<NetnsReleasedFn> {
    let name = CString::new(fd_path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: with RTLD_NOLOAD dlopen only returns the library already mapped
    // under this name (nothing is loaded or initialised); the reference it
    // takes is never dropped, like abi_stable's own (plugins stay mapped).
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` came from dlopen above and the name is NUL-terminated.
    let sym = unsafe { libc::dlsym(handle, NETNS_RELEASED_SYMBOL.as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: abi.rs defines a symbol of this name to have exactly this
    // signature (a changed one gets a new name), and code and data pointers
    // have the same size and representation on every target we build for.
    Some(unsafe { std::mem::transmute::<*mut libc::c_void, NetnsReleasedFn>(sym) })
}

/// The version string plugins must be compatible with.
pub fn interface_version() -> String {
    TunerModuleRef::VERSION_STRINGS.version.to_string()
}

/// Tuner files in `dir`, sorted by name so load order is stable.
pub fn scan_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_tuner_file_name(name) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_without_the_optional_entry_point_has_none() {
        // libc is mapped in every test process and exports no such symbol;
        // a name nothing is mapped under is not loaded by the lookup.
        assert!(optional_netns_released(Path::new("libc.so.6")).is_none());
        assert!(optional_netns_released(Path::new("/nonexistent/libnothing.so")).is_none());
    }

    #[test]
    fn tuner_names() {
        assert!(is_tuner_file_name("tcp_buffer_tuner.so"));
        assert!(!is_tuner_file_name("tcp_buffer_tuner.so.dpkg-new"));
        assert!(!is_tuner_file_name("tcp_buffer_tuner.so.rpmnew"));
        assert!(!is_tuner_file_name("libfoo.so"));
        assert!(!is_tuner_file_name("_tuner.so"));
        assert!(!is_tuner_file_name(".x_tuner.so"));
    }

    #[test]
    fn relative_and_dotdot_paths_are_refused() {
        assert!(check_directories(Path::new("x/y_tuner.so"), 0).is_err());
        assert!(check_directories(Path::new("/usr/../tmp/y_tuner.so"), 0).is_err());
    }

    #[test]
    fn world_writable_directory_is_refused() {
        let me = unsafe_free_uid();
        let dir = std::env::temp_dir().join(format!("bpftune-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        // /tmp itself is world-writable (sticky), so anything below fails.
        let err = check_directories(&dir.join("a_tuner.so"), me).expect_err("must refuse");
        assert!(err.contains("untrusted plugin directory"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn unsafe_free_uid() -> u32 {
        std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
    }

    #[test]
    fn non_elf_file_is_a_clear_error() {
        // /proc/self/... is root-owned only when running as root; use the
        // library step directly on a bogus file.
        let dir = std::env::temp_dir().join(format!("bpftune-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let f = dir.join("bogus_tuner.so");
        std::fs::write(&f, b"not an ELF file").expect("write");
        let err = lib_header_from_path(&f).err().map(|e| error_chain(&e)).unwrap_or_default();
        assert!(!err.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
