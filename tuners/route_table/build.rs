//! Compiles the route_table tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/route_table.bpf.c", "route_table") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
