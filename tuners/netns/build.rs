//! Compiles the netns tuner's BPF program into a skeleton.

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/netns.bpf.c", "netns") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
