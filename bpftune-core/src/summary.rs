//! The summary printed at exit (and by `-q summary`): per tunable and
//! scenario how often it fired, what changed, and a ready-to-paste
//! `sysctl -w` line; plus the commands that would roll changes back.

use crate::registry::TunerRecord;

pub use crate::messages::summary_line;

/// The generic summary of one tuner; `global_cookie` identifies the
/// daemon's namespace.
pub fn tuner_summary(t: &TunerRecord, global_cookie: u64) -> Vec<String> {
    let mut out = Vec::new();
    for (idx, info) in t.tunables.iter().enumerate() {
        let Some(rec) = t.records.get(idx) else { continue };
        for (sid, sc) in t.scenarios.iter().enumerate() {
            let sid = sid as u32;
            let global_count = rec.counts.get(&(sid, global_cookie)).copied().unwrap_or(0);
            let other_count: u64 =
                rec.counts.iter().filter(|((s, c), _)| *s == sid && *c != global_cookie).map(|(_, n)| *n).sum();
            if global_count > 0 {
                out.push(summary_line(&sc.name, global_count, &info.name, true, &sc.description));
                if info.is_sysctl() {
                    if let (Some(from), Some(to)) = (rec.initial.get(&global_cookie), rec.current.get(&global_cookie)) {
                        out.push(format!("# sysctl '{}' changed from ({from}) -> ({to})", info.name));
                        out.push(
                            "# To replicate this change on another system, run the following as a privileged user in a terminal:"
                                .to_string(),
                        );
                        out.push(format!("sysctl -w {}=\"{to}\"", info.name));
                    }
                }
            }
            if other_count > 0 {
                out.push(summary_line(&sc.name, other_count, &info.name, false, &sc.description));
                if info.is_sysctl() {
                    for (cookie, from) in rec.initial.iter().filter(|(c, _)| **c != global_cookie) {
                        if let Some(to) = rec.current.get(cookie) {
                            out.push(format!(
                                "# sysctl '{}' changed from ({from}) -> ({to}) in netns (cookie {cookie})",
                                info.name
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The verdicts on one tuner's changes, one line per tunable that has any
/// (after the tuner's own summary lines).
pub fn verdict_lines(t: &TunerRecord) -> Vec<String> {
    let mut out = Vec::new();
    for (info, rec) in t.tunables.iter().zip(&t.records) {
        if rec.verdicts.iter().all(|n| *n == 0) {
            continue;
        }
        let [helped, neutral, hurt, unknown] = rec.verdicts;
        out.push(format!(
            "# Summary: verdicts on changes of '{}': {helped} helped, {neutral} neutral, {hurt} hurt ({} reverted), {unknown} unknown",
            info.name, rec.reverted
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{TunableFlags, TunableKind};
    use crate::registry::{ScenarioInfo, TunableInfo, TunableRecord, TunerState};
    use std::collections::HashMap;

    fn tuner() -> TunerRecord {
        let mut rec = TunableRecord::default();
        rec.initial.insert(1, "4096 131072 6291456".into());
        rec.current.insert(1, "4096 131072 7864320".into());
        rec.counts.insert((0, 1), 2);
        rec.initial.insert(9, "4096 131072 131072".into());
        rec.current.insert(9, "4096 131072 163840".into());
        rec.counts.insert((0, 9), 1);
        TunerRecord {
            id: 0,
            name: "tcp_buffer".into(),
            path: "p".into(),
            state: TunerState::Active,
            rollback: false,
            tunables: vec![TunableInfo {
                name: "net.ipv4.tcp_rmem".into(),
                kind: TunableKind::Sysctl,
                flags: TunableFlags::NAMESPACED,
                num_values: 3,
            }],
            scenarios: vec![ScenarioInfo {
                name: "need to increase TCP buffer size(s)".into(),
                description: "Need to increase buffer size(s) to maximize throughput".into(),
            }],
            records: vec![rec],
            judged: 1,
            netns_state: HashMap::new(),
            features: Vec::new(),
        }
    }

    #[test]
    fn summary_has_original_lines() {
        let lines = tuner_summary(&tuner(), 1);
        assert_eq!(
            lines[0],
            "# Summary: scenario 'need to increase TCP buffer size(s)' occurred 2 times for tunable 'net.ipv4.tcp_rmem' in global ns. Need to increase buffer size(s) to maximize throughput"
        );
        assert_eq!(
            lines[1],
            "# sysctl 'net.ipv4.tcp_rmem' changed from (4096 131072 6291456) -> (4096 131072 7864320)"
        );
        assert_eq!(lines[3], "sysctl -w net.ipv4.tcp_rmem=\"4096 131072 7864320\"");
        assert!(lines[4].contains("occurred 1 times for tunable 'net.ipv4.tcp_rmem' in non-global ns."));
        assert!(lines[5].contains("in netns (cookie 9)"));
        assert!(verdict_lines(&tuner()).is_empty(), "no verdicts, no line");
        let mut t = tuner();
        t.records[0].verdicts = [2, 1, 1, 3];
        t.records[0].reverted = 1;
        assert_eq!(
            verdict_lines(&t),
            vec![
                "# Summary: verdicts on changes of 'net.ipv4.tcp_rmem': 2 helped, 1 neutral, 1 hurt (1 reverted), 3 unknown"
                    .to_string()
            ]
        );
    }
}
