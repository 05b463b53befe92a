//! Compiles the SDK's types-only BPF object, from which the Rust event and
//! sample types are generated (the layout every tuner's BPF shares).

fn main() {
    if let Err(e) = bpf_common::build_skeleton("src/bpf/types.bpf.c", "types") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
