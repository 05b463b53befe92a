//! Compiles the tcp_conn tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/tcp_conn.bpf.c", "tcp_conn") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
