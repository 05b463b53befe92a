//! Every namespace's fragment reassembly memory in one kernel pass: the
//! BPF task iterator (`bpf/ip_frag.bpf.c`) visits each process once and
//! reports its namespace's IPv4/IPv6 `fqdir` memory and high threshold,
//! read here and folded by namespace inode. Running it costs one walk of
//! the task list per tick and nothing per packet; it tells which
//! namespaces hold fragment memory at all, so only those are read in
//! detail (thresholds, counters) by the daemon inside them.

use std::collections::HashMap;
use std::io::Read;

use bpftune_sdk::{Host, OwnedSkel, prepare_object};
use libbpf_rs::Link;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

bpftune_sdk::include_skeleton!(mod skel = "ip_frag");
bpftune_sdk::skel_family!(BpfSkel = skel::IpFragSkel);
// The record is integers only (ip_frag.bpf.c).
bpftune_sdk::plain!(skel::types::frag_mem_record);

/// One namespace's reassembly memory and thresholds as BPF read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetnsFragMem {
    pub mem4: i64,
    pub high4: i64,
    /// `None` if the namespace has no IPv6 reassembly state.
    pub v6: Option<(i64, i64)>,
}

impl NetnsFragMem {
    /// Whether any reassembly memory is held (the namespace is worth a
    /// detailed look).
    pub fn holds_memory(&self) -> bool {
        self.mem4 > 0 || self.v6.is_some_and(|(mem, _)| mem > 0)
    }
}

/// The loaded iterator.
pub struct FragMem {
    link: Link,
    _skel: OwnedSkel<BpfSkel>,
}

impl FragMem {
    /// Load and attach the iterator (attaching runs nothing until read).
    pub fn load(host: &Host) -> Result<Self, String> {
        let skel = OwnedSkel::<BpfSkel>::new(|storage| {
            let mut open = skel::IpFragSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
            prepare_object!(open, host)?;
            open.load().map_err(|e| format!("load: {e}"))
        })?;
        let link =
            skel.get().progs.bpftune_ip_frag_mem.attach().map_err(|e| format!("cannot attach iter/task: {e}"))?;
        Ok(Self { link, _skel: skel })
    }

    /// Run one pass: every namespace a process lives in, by inode.
    pub fn read(&self) -> Result<HashMap<u64, NetnsFragMem>, String> {
        let mut iter = libbpf_rs::Iter::new(&self.link).map_err(|e| format!("iterator: {e}"))?;
        let mut bytes = Vec::new();
        iter.read_to_end(&mut bytes).map_err(|e| format!("reading the iterator: {e}"))?;
        Ok(fold(&bytes))
    }
}

/// Fold the records (one per process) by namespace inode.
pub fn fold(bytes: &[u8]) -> HashMap<u64, NetnsFragMem> {
    let size = std::mem::size_of::<skel::types::frag_mem_record>();
    let mut out = HashMap::new();
    for chunk in bytes.chunks_exact(size) {
        let Some(r) = bpftune_sdk::read_plain::<skel::types::frag_mem_record>(chunk) else { continue };
        let v6 = (r.has_v6 != 0).then_some((r.mem6, r.high6));
        out.insert(u64::from(r.inum), NetnsFragMem { mem4: r.mem4, high4: r.high4, v6 });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(inum: u32, mem4: i64, v6: Option<i64>) -> Vec<u8> {
        let r = skel::types::frag_mem_record {
            inum,
            has_v6: u32::from(v6.is_some()),
            mem4,
            high4: 4 << 20,
            mem6: v6.unwrap_or(0),
            high6: 4 << 20,
        };
        // SAFETY: a #[repr(C)] struct of integers, viewed as its bytes for
        // exactly its size.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(&r).cast::<u8>(), std::mem::size_of_val(&r)) }.to_vec()
    }

    #[test]
    fn records_fold_by_namespace() {
        let mut bytes = record(10, 0, Some(0));
        bytes.extend(record(10, 0, Some(0)));
        bytes.extend(record(11, 4096, None));
        bytes.extend(record(12, 0, Some(512)));
        bytes.extend([1, 2, 3]); // a torn tail is ignored
        let m = fold(&bytes);
        assert_eq!(m.len(), 3);
        assert!(!m[&10].holds_memory());
        assert!(m[&11].holds_memory());
        assert_eq!(m[&11].v6, None);
        assert!(m[&12].holds_memory());
    }
}
