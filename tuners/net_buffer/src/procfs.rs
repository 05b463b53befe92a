//! What the net_buffer tuner reads from `/proc` on its timer: the NAPI
//! time-squeeze counters (`/proc/net/softnet_stat`, column 3) and how long
//! tasks wait to run, as a percentage, from `/proc/schedstat` (what the
//! original reads) or, on kernels built without schedstats (like this
//! one), from CPU pressure stall information (`/proc/pressure/cpu`).
//! Parsers take text so they are tested on captured samples; a failed read
//! is "unknown", never a made-up number.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bpftune_sdk::procfs::{self, ProcError};

/// Sum over CPUs of `time_squeeze` (third hex column of softnet_stat): how
/// often a NET_RX softirq run ended with work left because it ran out of
/// netdev_budget packets or netdev_budget_usecs time.
pub fn time_squeeze_total(softnet_stat: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut lines = 0;
    for line in softnet_stat.lines().filter(|l| !l.trim().is_empty()) {
        let col = line.split_whitespace().nth(2)?;
        total = total.wrapping_add(u64::from_str_radix(col, 16).ok()?);
        lines += 1;
    }
    (lines > 0).then_some(total)
}

/// Read the squeeze total from `<proc_root>/net/softnet_stat`.
pub fn read_time_squeeze(proc_root: &Path) -> Result<Option<u64>, ProcError> {
    Ok(time_squeeze_total(&procfs::read(&proc_root.join("net/softnet_stat"))?))
}

/// Per CPU, packets dropped because its input backlog was full (second
/// hex column of softnet_stat), as (cpu, dropped). The CPU is the
/// thirteenth column where the kernel prints it (rows skip offline CPUs),
/// else the row number.
pub fn backlog_drops_per_cpu(softnet_stat: &str) -> Option<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for (row, line) in softnet_stat.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let dropped = u64::from_str_radix(cols.get(1)?, 16).ok()?;
        let cpu = match cols.get(12) {
            Some(c) => u32::from_str_radix(c, 16).ok()?,
            None => u32::try_from(row).ok()?,
        };
        out.push((cpu, dropped));
    }
    (!out.is_empty()).then_some(out)
}

/// Read the per-CPU backlog drops from `<proc_root>/net/softnet_stat`.
pub fn read_backlog_drops(proc_root: &Path) -> Result<Option<Vec<(u32, u64)>>, ProcError> {
    Ok(backlog_drops_per_cpu(&procfs::read(&proc_root.join("net/softnet_stat"))?))
}

/// Time tasks spent running and waiting on a run queue (ns), summed over
/// the `cpuN` lines of `/proc/schedstat` (fields 7 and 8).
pub fn schedstat_run_wait(schedstat: &str) -> Option<(u64, u64)> {
    let (mut run, mut wait, mut cpus) = (0u64, 0u64, 0);
    for line in schedstat.lines() {
        let mut f = line.split_whitespace();
        if !f.next().is_some_and(|n| n.starts_with("cpu")) {
            continue;
        }
        let fields: Vec<&str> = f.collect();
        let r = fields.get(6)?.parse::<u64>().ok()?;
        let w = fields.get(7)?.parse::<u64>().ok()?;
        run = run.wrapping_add(r);
        wait = wait.wrapping_add(w);
        cpus += 1;
    }
    (cpus > 0).then_some((run, wait))
}

/// `total=` of the `some` line of `/proc/pressure/cpu`: microseconds during
/// which at least one task was runnable but waiting for a CPU.
pub fn psi_cpu_some_total(pressure: &str) -> Option<u64> {
    let line = pressure.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|kv| kv.strip_prefix("total=")).and_then(|v| v.parse().ok())
}

/// Where the wait measure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitSource {
    /// `/proc/schedstat`: waiting time over running time.
    Schedstat,
    /// `/proc/pressure/cpu`: stalled time over wall-clock time.
    Pressure,
}

/// One reading of the cumulative counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitReading {
    pub source: WaitSource,
    /// Waiting time (ns for schedstat, us for pressure).
    pub wait: u64,
    /// What it is compared with: running time (ns) or wall time (us).
    pub base: u64,
}

/// Waiting as a percentage of the base between two readings of the same
/// source; `None` if the sources differ or no time passed. Unlike the
/// original (cumulative since boot, which barely moves), this is the ratio
/// over the last interval. It can exceed 100 for schedstat.
pub fn wait_pct(prev: WaitReading, now: WaitReading) -> Option<i64> {
    if prev.source != now.source {
        return None;
    }
    let dbase = now.base.checked_sub(prev.base).filter(|d| *d > 0)?;
    let dwait = now.wait.checked_sub(prev.wait)?;
    i64::try_from(u128::from(dwait) * 100 / u128::from(dbase)).ok()
}

/// Takes a [`WaitReading`] per tick and turns consecutive ones into
/// percentages.
#[derive(Debug)]
pub struct WaitSampler {
    proc_root: PathBuf,
    origin: Instant,
    last: Option<WaitReading>,
}

impl WaitSampler {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self { proc_root: proc_root.into(), origin: Instant::now(), last: None }
    }

    fn read(&self) -> Option<WaitReading> {
        if let Ok(text) = procfs::read(&self.proc_root.join("schedstat")) {
            if let Some((run, wait)) = schedstat_run_wait(&text) {
                return Some(WaitReading { source: WaitSource::Schedstat, wait, base: run });
            }
        }
        let text = procfs::read(&self.proc_root.join("pressure/cpu")).ok()?;
        let wait = psi_cpu_some_total(&text)?;
        let base = u64::try_from(self.origin.elapsed().as_micros()).ok()?;
        Some(WaitReading { source: WaitSource::Pressure, wait, base })
    }

    /// Read the counters; the percentage since the previous call, if both
    /// readings worked.
    pub fn sample(&mut self) -> Option<i64> {
        let now = self.read();
        let pct = match (self.last, now) {
            (Some(p), Some(n)) => wait_pct(p, n),
            _ => None,
        };
        self.last = now;
        pct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFTNET: &str = "\
07fea9a5 00000000 00000007 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
10031c2b 00000000 0000001a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000
";

    #[test]
    fn squeeze_is_the_hex_third_column_summed() {
        assert_eq!(time_squeeze_total(SOFTNET), Some(7 + 0x1a));
        assert_eq!(time_squeeze_total(""), None);
        assert_eq!(time_squeeze_total("0001 0002\n"), None, "too few columns");
        assert_eq!(time_squeeze_total("0001 0002 zz\n"), None);
    }

    #[test]
    fn backlog_drops_per_cpu_from_columns_2_and_13() {
        // 6.x layout (13 columns, CPU 1 offline) and the 5.10 one (11).
        let new = "00000010 00000003 00000001 0 0 0 0 0 0 0 00000000 00000000 00000000\n\
                   00000020 0000000a 00000000 0 0 0 0 0 0 0 00000000 00000000 00000002\n";
        assert_eq!(backlog_drops_per_cpu(new), Some(vec![(0, 3), (2, 10)]));
        let old = "00000010 00000003 00000001 0 0 0 0 0 0 0 00000000\n00000020 0000000a 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(backlog_drops_per_cpu(old), Some(vec![(0, 3), (1, 10)]));
        assert_eq!(backlog_drops_per_cpu(""), None);
        assert_eq!(backlog_drops_per_cpu("zz"), None);
    }

    #[test]
    fn schedstat_fields_7_and_8() {
        let text = "\
version 15
timestamp 4295632184
cpu0 0 0 0 0 0 0 1000 300 55
domain0 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
cpu1 0 0 0 0 0 0 2000 700 66
";
        assert_eq!(schedstat_run_wait(text), Some((3000, 1000)));
        assert_eq!(schedstat_run_wait("version 15\n"), None);
        assert_eq!(schedstat_run_wait("cpu0 0 0 0\n"), None);
    }

    #[test]
    fn pressure_some_total() {
        let text = "some avg10=0.33 avg60=0.85 avg300=5.53 total=2522331037\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(psi_cpu_some_total(text), Some(2522331037));
        assert_eq!(psi_cpu_some_total("full total=1\n"), None);
    }

    #[test]
    fn wait_pct_over_the_interval() {
        let r = |source, wait, base| WaitReading { source, wait, base };
        let s = WaitSource::Schedstat;
        assert_eq!(wait_pct(r(s, 100, 1000), r(s, 400, 2000)), Some(30));
        assert_eq!(wait_pct(r(s, 100, 1000), r(s, 2100, 2000)), Some(200), "can exceed 100");
        assert_eq!(wait_pct(r(s, 100, 1000), r(s, 100, 1000)), None, "no time passed");
        assert_eq!(wait_pct(r(s, 100, 1000), r(WaitSource::Pressure, 100, 2000)), None);
        assert_eq!(wait_pct(r(s, 500, 1000), r(s, 100, 2000)), None, "counter went back");
    }

    #[test]
    fn sampler_on_fixture_files() {
        let dir = std::env::temp_dir().join(format!("net_buffer_procfs_{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pressure")).expect("mkdir");
        std::fs::write(dir.join("pressure/cpu"), "some avg10=0 avg60=0 avg300=0 total=100\n").expect("write");
        let mut s = WaitSampler::new(&dir);
        assert_eq!(s.sample(), None, "first reading has nothing to compare with");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(s.sample(), Some(0), "no stall since");
        std::fs::write(dir.join("schedstat"), "cpu0 0 0 0 0 0 0 1000 500 1\n").expect("write");
        assert_eq!(s.sample(), None, "source changed");
        std::fs::write(dir.join("schedstat"), "cpu0 0 0 0 0 0 0 2000 1000 1\n").expect("write");
        assert_eq!(s.sample(), Some(50));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
