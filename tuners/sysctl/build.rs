//! Compiles the sysctl tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/sysctl.bpf.c", "sysctl") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
