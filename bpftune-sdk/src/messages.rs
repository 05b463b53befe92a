//! The log lines every tuner shares, in the original's words, in one place:
//! the "Scenario ... occurred" line, the "Due to ... change" reason and the
//! summary line.

/// `[4096, 131072, 6291456]` → `4096 131072 6291456`.
pub fn format_values(values: &[i64]) -> String {
    values.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")
}

/// The original's first line of every change.
pub fn scenario_line(scenario: &str, tunable: &str, global: bool, description: &str) -> String {
    let ns = if global { "global" } else { "non-global" };
    format!("Scenario '{scenario}' occurred for tunable '{tunable}' in {ns} ns. {description}")
}

/// `Due to <why> change <name>(<labels>) from (<old>) -> (<new>)`, the
/// reason line most tuners log.
pub fn change_reason(why: &str, name: &str, labels: &str, old: &[i64], new: &[i64]) -> String {
    let labels = if labels.is_empty() { String::new() } else { format!("({labels})") };
    format!("Due to {why} change {name}{labels} from ({}) -> ({})", format_values(old), format_values(new))
}

/// `# Summary: scenario '…' occurred N times for tunable '…' in [non-]global ns. …`,
/// the original's summary line (the daemon's generic summary and a tuner's
/// own use it alike).
pub fn summary_line(scenario: &str, count: u64, tunable: &str, global: bool, description: &str) -> String {
    let ns = if global { "global" } else { "non-global" };
    format!("# Summary: scenario '{scenario}' occurred {count} times for tunable '{tunable}' in {ns} ns. {description}")
}
