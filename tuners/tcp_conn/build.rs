//! Compiles the tcp_conn tuner's BPF program (congestion control, with the
//! time-wait part included from `tw_reuse.bpf.h`) into a skeleton.

fn main() {
    println!("cargo:rerun-if-changed=src/bpf/tw_reuse.bpf.h");
    if let Err(e) = bpf_common::build_skeleton("src/bpf/tcp_conn.bpf.c", "tcp_conn") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
