//! Compiles the sample tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/sample.bpf.c", "sample") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
