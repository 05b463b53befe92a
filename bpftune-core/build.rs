//! Compiles the core BPF object (support probe; carries the event type from
//! which the Rust `Event` is generated).

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/probe.bpf.c", "probe") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
