//! Compiles the net_buffer tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/net_buffer.bpf.c", "net_buffer") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
