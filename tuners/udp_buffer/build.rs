//! Compiles the udp_buffer tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/udp_buffer.bpf.c", "udp_buffer") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
