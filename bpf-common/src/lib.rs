//! Build-time helper shared by every crate that compiles BPF C: it knows where
//! the common headers and `vmlinux.h` live and turns a `.bpf.c` into a
//! libbpf-rs skeleton in `OUT_DIR`, so each `build.rs` is three lines.

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory holding `bpftune.bpf.h` and `bpftune_common.h`.
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// Why a skeleton could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// A cargo-provided environment variable was missing.
    Env(&'static str),
    /// No committed `vmlinux.h` for this architecture and none could be made.
    NoVmlinux { arch: String, reason: String },
    /// clang or skeleton generation failed.
    Skeleton { src: PathBuf, reason: String },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Env(var) => write!(f, "cargo did not set {var}"),
            BuildError::NoVmlinux { arch, reason } => write!(
                f,
                "no vmlinux.h for {arch}: commit one under bpf-common/include/{arch}/ \
                 (bpftool btf dump file /sys/kernel/btf/vmlinux format c) or build on a \
                 machine with /sys/kernel/btf/vmlinux and bpftool: {reason}"
            ),
            BuildError::Skeleton { src, reason } => {
                write!(f, "building BPF skeleton from {}: {reason}", src.display())
            }
        }
    }
}

impl std::error::Error for BuildError {}

fn vmlinux_dir(out_dir: &Path) -> Result<PathBuf, BuildError> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").map_err(|_| BuildError::Env("CARGO_CFG_TARGET_ARCH"))?;
    let committed = include_dir().join(&arch);
    if committed.join("vmlinux.h").exists() {
        return Ok(committed);
    }
    let generated = out_dir.join("vmlinux");
    std::fs::create_dir_all(&generated)
        .map_err(|e| BuildError::NoVmlinux { arch: arch.clone(), reason: e.to_string() })?;
    let output = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"])
        .output()
        .map_err(|e| BuildError::NoVmlinux { arch: arch.clone(), reason: format!("running bpftool: {e}") })?;
    if !output.status.success() {
        return Err(BuildError::NoVmlinux { arch, reason: String::from_utf8_lossy(&output.stderr).into_owned() });
    }
    std::fs::write(generated.join("vmlinux.h"), output.stdout)
        .map_err(|e| BuildError::NoVmlinux { arch, reason: e.to_string() })?;
    Ok(generated)
}

/// Compile `src` (relative to the calling crate) into a skeleton named
/// `<name>.skel.rs` in `OUT_DIR`, and tell cargo when to redo it.
///
/// Use it from `build.rs`; include the result with
/// `include!(concat!(env!("OUT_DIR"), "/<name>.skel.rs"))`.
pub fn build_skeleton(src: &str, name: &str) -> Result<(), BuildError> {
    let manifest = env::var("CARGO_MANIFEST_DIR").map_err(|_| BuildError::Env("CARGO_MANIFEST_DIR"))?;
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|_| BuildError::Env("OUT_DIR"))?);
    let src = Path::new(&manifest).join(src);
    let vmlinux = vmlinux_dir(&out_dir)?;
    let out = out_dir.join(format!("{name}.skel.rs"));

    libbpf_cargo::SkeletonBuilder::new()
        .source(&src)
        .obj(out_dir.join(format!("{name}.bpf.o")))
        .clang_args([
            format!("-I{}", include_dir().display()),
            format!("-I{}", vmlinux.display()),
            "-Wall".to_string(),
            "-Wno-unused-function".to_string(),
            "-O2".to_string(),
            "-g".to_string(),
        ])
        .build_and_generate(&out)
        .map_err(|e| BuildError::Skeleton { src: src.clone(), reason: format!("{e:#}") })?;

    println!("cargo:rerun-if-changed={}", src.display());
    for header in ["bpftune.bpf.h", "bpftune_common.h"] {
        println!("cargo:rerun-if-changed={}", include_dir().join(header).display());
    }
    Ok(())
}
