//! Compiles the ip_frag tuner's BPF task iterator into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/ip_frag.bpf.c", "ip_frag") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
