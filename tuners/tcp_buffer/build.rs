//! Compiles the tcp_buffer tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/tcp_buffer.bpf.c", "tcp_buffer") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
