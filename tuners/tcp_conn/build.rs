//! Compiles the tcp_conn tuner's BPF programs into skeletons: congestion
//! control (`tcp_conn`) and the time-wait part (`tw_reuse`).

fn main() {
    for (src, name) in [("src/bpf/tcp_conn.bpf.c", "tcp_conn"), ("src/bpf/tw_reuse.bpf.c", "tw_reuse")] {
        if let Err(e) = bpf_common::build_skeleton(src, name) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
