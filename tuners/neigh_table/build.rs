//! Compiles the neigh_table tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/neigh_table.bpf.c", "neigh_table") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
