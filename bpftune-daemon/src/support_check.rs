//! `bpftune -S`: after the original's support lines, load every tuner the
//! daemon would load (init, then fini at once; nothing is written), and say
//! per tuner what works on this kernel, what works another way and what is
//! off and why, so `-S` never says "works fully" while a tuner cannot load.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{Context, Result};
use bpftune_core::abi::{FeatureState, SupportLevel};
use bpftune_core::host::{HostConfig, HostState, LogSink, SharedFds};
use bpftune_core::netns::NetnsRegistry;
use bpftune_core::registry::TunerRecord;
use bpftune_core::ringbuf::SharedRing;
use bpftune_core::sysctl::ProcSysctl;
use bpftune_core::{LearningRate, LogLevel};

use crate::logging;
use crate::tuners::TunerSet;

/// What loading every tuner showed.
pub struct TunerReport {
    /// (tuner, line) for each tuner, in load order.
    pub lines: Vec<String>,
    /// Some tuner failed to load or works only partly another way.
    pub degraded: bool,
}

/// `tcp_conn_tuner.so` → `tcp_conn`.
fn tuner_name(file_name: &str) -> &str {
    file_name.strip_suffix(".so").map(|n| n.strip_suffix("_tuner").unwrap_or(n)).unwrap_or(file_name)
}

/// The lines for one loaded tuner: `works fully`, or each part that is not
/// active; then the scenarios it can act on.
fn record_lines(t: &TunerRecord) -> Vec<String> {
    let parts: Vec<String> =
        t.features.iter().filter(|f| f.state != FeatureState::Active).map(|f| f.line(&t.name)).collect();
    let mut lines = if parts.is_empty() { vec![format!("{}: works fully", t.name)] } else { parts };
    if !t.scenarios.is_empty() {
        let names: Vec<String> = t.scenarios.iter().map(|s| format!("'{}'", s.name)).collect();
        lines.push(format!("{} scenarios: {}", t.name, names.join(", ")));
    }
    lines
}

/// Load the tuners in `dirs` as the daemon would and report on each.
pub fn check_tuners(
    config: HostConfig,
    global_cookie: u64,
    cgroup_fd: i32,
    allow: Vec<String>,
    dirs: &[PathBuf],
) -> Result<TunerReport> {
    let ring = SharedRing::create().context("could not create the shared ring buffer")?;
    let debug = config.debug;
    // Tuners' own lines would repeat what the report says: errors only,
    // unless debugging.
    let sink: LogSink = Rc::new(move |level, msg: &str| {
        if debug || level <= LogLevel::Warning {
            logging::log(level, msg);
        }
    });
    let host =
        HostState::new(config, NetnsRegistry::new(global_cookie, "/proc"), Box::new(ProcSysctl::default()), sink);
    let host = Rc::new(RefCell::new(host));
    let fds = SharedFds { ringbuf_fd: ring.ringbuf_fd(), stats_map_fd: ring.stats_fd(), cgroup_fd };
    let mut set = TunerSet::new(host.clone(), fds, allow, false);
    for dir in dirs {
        set.load_dir(dir);
    }
    let mut lines = Vec::new();
    let mut degraded = false;
    for t in host.borrow().registry.iter() {
        degraded |= t.features.iter().any(|f| f.state == FeatureState::Fallback);
        lines.extend(record_lines(t));
    }
    for (file, why) in &set.failures {
        degraded = true;
        lines.push(format!("{}: cannot load: {why}", tuner_name(file)));
    }
    set.discard_all();
    Ok(TunerReport { lines, degraded })
}

/// The level `-S` reports once the tuners were tried: a tuner that failed
/// or works another way means legacy mode at best.
pub fn level_with_tuners(level: SupportLevel, report: &TunerReport) -> SupportLevel {
    if report.degraded && level > SupportLevel::Legacy { SupportLevel::Legacy } else { level }
}

/// Host settings for the check (never advises, never writes).
pub fn check_config(debug: bool, level: SupportLevel, netns_cookie_supported: bool) -> HostConfig {
    HostConfig {
        debug,
        advise: true,
        learning_rate: LearningRate::default(),
        support: level,
        daemon_pid: std::process::id(),
        netns_cookie_supported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_core::registry::FeatureInfo;

    #[test]
    fn names_and_lines() {
        assert_eq!(tuner_name("tcp_conn_tuner.so"), "tcp_conn");
        assert_eq!(tuner_name("odd.so"), "odd");
        let mut rec = TunerRecord {
            id: 0,
            name: "net_buffer".into(),
            path: String::new(),
            state: bpftune_core::registry::TunerState::Active,
            rollback: false,
            tunables: Vec::new(),
            scenarios: Vec::new(),
            records: Vec::new(),
            judged: 0,
            netns_state: Default::default(),
            features: vec![FeatureInfo {
                part: "backlog drops".into(),
                state: FeatureState::Active,
                detail: String::new(),
            }],
        };
        assert_eq!(record_lines(&rec), vec!["net_buffer: works fully".to_string()]);
        let with_scenarios = TunerRecord {
            scenarios: vec![bpftune_core::registry::ScenarioInfo {
                name: "need to increase max backlog".into(),
                description: String::new(),
            }],
            ..rec.clone()
        };
        assert_eq!(
            record_lines(&with_scenarios),
            vec![
                "net_buffer: works fully".to_string(),
                "net_buffer scenarios: 'need to increase max backlog'".to_string()
            ]
        );
        rec.features.push(FeatureInfo {
            part: "flow_limit_cpu_bitmap".into(),
            state: FeatureState::Off,
            detail: "not in this kernel (CONFIG_NET_FLOW_LIMIT); backlog and budget tuning active".into(),
        });
        assert_eq!(
            record_lines(&rec),
            vec![
                "net_buffer: flow_limit_cpu_bitmap off: not in this kernel (CONFIG_NET_FLOW_LIMIT); backlog and budget tuning active"
                    .to_string()
            ]
        );
    }
}
