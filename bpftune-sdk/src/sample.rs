//! Adaptive sampling, seen from userspace: how often each sampled BPF
//! program ran and how often it did its work, read from the tuner's
//! per-CPU `sample_map` (`struct bpftune_sample` in `bpftune.bpf.h`) and
//! logged at exit in the original's words.

use libbpf_rs::{MapCore, MapFlags};

use crate::types_skel::types::bpftune_sample;

/// One sampled program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleCount {
    /// The name the original gives the sample (e.g. `rcv_space_sample`).
    pub name: &'static str,
    /// Times the program was called.
    pub calls: u64,
    /// It did its work once every `rate` calls (the busiest CPU's rate).
    pub rate: u64,
}

impl SampleCount {
    /// `Sample '<name>': associated program was called N times, collected
    /// data every M of these.`
    pub fn line(&self) -> String {
        format!(
            "Sample '{}': associated program was called {} times, collected data every {} of these.",
            self.name, self.calls, self.rate
        )
    }
}

/// Decode one CPU's `struct bpftune_sample`; `None` if the size is wrong.
fn decode(bytes: &[u8]) -> Option<bpftune_sample> {
    if bytes.len() != std::mem::size_of::<bpftune_sample>() {
        return None;
    }
    // SAFETY: the length matches and bpftune_sample is three u64s, valid
    // for any bit pattern; read_unaligned copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<bpftune_sample>()) })
}

/// Sum the per-CPU values of `values` (one entry per CPU).
fn sum(name: &'static str, values: &[Vec<u8>]) -> SampleCount {
    let mut out = SampleCount { name, calls: 0, rate: 0 };
    let mut busiest = 0;
    for s in values.iter().filter_map(|v| decode(v)) {
        out.calls = out.calls.saturating_add(s.count);
        if s.count >= busiest {
            busiest = s.count;
            out.rate = s.rate;
        }
    }
    if out.rate == 0 {
        // Never sampled yet: the BPF default.
        out.rate = 4;
    }
    out
}

/// Read entry `i` of the per-CPU array `map` for each `names[i]`.
pub fn read_samples(map: &impl MapCore, names: &[&'static str]) -> Vec<SampleCount> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let key = u32::try_from(i).ok()?.to_ne_bytes();
            let values = map.lookup_percpu(&key, MapFlags::ANY).ok()??;
            Some(sum(name, &values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(count: u64, rate: u64) -> Vec<u8> {
        [count, 123, rate].iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn per_cpu_values_are_summed_and_the_busiest_rate_kept() {
        let s = sum("rcv_space_sample", &[cpu(10, 4), cpu(1000, 64), vec![1, 2]]);
        assert_eq!(s, SampleCount { name: "rcv_space_sample", calls: 1010, rate: 64 });
        assert_eq!(
            s.line(),
            "Sample 'rcv_space_sample': associated program was called 1010 times, collected data every 64 of these."
        );
        assert_eq!(sum("x", &[]).rate, 4);
    }
}
