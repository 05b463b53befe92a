//! Rebuild the daemon when the install layout changes: `BPFTUNE_PREFIX` and
//! `BPFTUNE_LIBDIR` (exported by the Makefile) are compiled in to form the
//! plugin directories `bpftune -P` prints.

fn main() {
    println!("cargo:rerun-if-env-changed=BPFTUNE_PREFIX");
    println!("cargo:rerun-if-env-changed=BPFTUNE_LIBDIR");
}
