//! `-q report`: one self-contained HTML page (inline CSS, no scripts, no
//! outside resources) of what the running daemon changed — per tuner,
//! tunable and namespace the value it found and the value it set, how often
//! — with the tuners' states, the parts that are off on this kernel and the
//! latest decisions, for a person to open in a browser
//! (`bpftune -q report > report.html`).

use std::fmt::Write;

use crate::metrics::snapshot::Snapshot;
use crate::replies::Decision;

/// Text made safe for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch (civil-from-days,
/// proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:80em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.5em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;\
vertical-align:top}th{background:#f0f0f0}td.num{text-align:right;font-family:monospace}\
code,.val{font-family:monospace}.arrow{color:#888}.state-active{color:#060}.state-failed{color:#a00}\
.state-manual{color:#a60}.muted{color:#777}";

fn table(out: &mut String, class: &str, head: &[&str], rows: &[Vec<String>]) {
    let _ = write!(out, "<table class=\"{class}\"><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for cell in r {
            // Cells are HTML already (escaped by the caller).
            out.push_str(cell);
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn td(s: &str) -> String {
    format!("<td>{}</td>", escape(s))
}

fn td_num(n: u64) -> String {
    format!("<td class=\"num\">{n}</td>")
}

/// The page; `now` is seconds since the epoch.
pub fn html(s: &Snapshot, recent: &[Decision], now: u64) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"generator\" content=\"bpftune {v}\"><title>bpftune report</title>\
         <style>{STYLE}</style></head><body>\n<h1>bpftune report</h1>\n\
         <p id=\"about\">bpftune {v}, pid {pid}, generated {when}{advise}. \
         {n} change(s) to {t} tunable value(s); {ns} network namespace(s) besides the host's.</p>\n",
        v = escape(&s.version),
        pid = s.pid,
        when = utc(now),
        advise = if s.advise { " (advise mode: nothing was changed)" } else { "" },
        n = s.changes.iter().map(|c| c.count).sum::<u64>(),
        t = s.changed.len(),
        ns = s.netns_known,
    );

    let workload =
        |netns: &str| s.netns_info.iter().find(|n| n.netns == netns).map(|n| n.identity.describe()).unwrap_or_default();
    out.push_str("<h2>Changes</h2>\n");
    if s.changed.is_empty() {
        out.push_str("<p id=\"no-changes\" class=\"muted\">bpftune has changed nothing yet.</p>\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .changed
            .iter()
            .map(|c| {
                let mut ns = if c.netns_path.is_empty() || c.netns == "global" {
                    escape(&c.netns)
                } else {
                    format!("{} <span class=\"muted\">({})</span>", escape(&c.netns), escape(&c.netns_path))
                };
                let who = workload(&c.netns);
                if !who.is_empty() {
                    ns.push_str(&format!("<br><span class=\"workload\">{}</span>", escape(&who)));
                }
                vec![
                    td(&c.tuner),
                    format!("<td><code>{}</code></td>", escape(&c.tunable)),
                    format!("<td>{ns}</td>"),
                    format!(
                        "<td class=\"val\"><span class=\"from\">{}</span> <span class=\"arrow\">&rarr;</span> <span class=\"to\">{}</span></td>",
                        escape(&c.original),
                        escape(&c.current)
                    ),
                    td_num(c.count),
                ]
            })
            .collect();
        table(&mut out, "changes", &["tuner", "tunable", "namespace", "original → current", "changes"], &rows);
    }

    out.push_str("<h2>Why</h2>\n");
    if s.changes.is_empty() {
        out.push_str("<p class=\"muted\">No scenario has fired yet.</p>\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .changes
            .iter()
            .map(|c| vec![td(&c.tuner), td(&c.tunable), td(&c.scenario), td(&c.netns), td_num(c.count)])
            .collect();
        table(&mut out, "scenarios", &["tuner", "tunable", "scenario", "namespace", "times"], &rows);
    }

    out.push_str("<h2>Tuners</h2>\n");
    let rows: Vec<Vec<String>> = s
        .tuners
        .iter()
        .map(|t| {
            vec![
                td(&t.name),
                format!("<td class=\"state-{}\">{}</td>", escape(t.state), escape(t.state)),
                td(&t.detail),
            ]
        })
        .collect();
    table(&mut out, "tuners", &["tuner", "state", "detail"], &rows);

    let off: Vec<Vec<String>> = s
        .features
        .iter()
        .filter(|f| f.state != "active")
        .map(|f| vec![td(&f.tuner), td(&f.part), td(f.state), td(&f.detail)])
        .collect();
    out.push_str("<h2>Features not working as designed on this kernel</h2>\n");
    if off.is_empty() {
        out.push_str("<p class=\"muted\">Every part of every tuner works as designed.</p>\n");
    } else {
        table(&mut out, "features", &["tuner", "part", "state", "detail"], &off);
    }

    out.push_str("<h2>Latest decisions</h2>\n");
    if recent.is_empty() {
        out.push_str("<p class=\"muted\">None yet.</p>\n");
    } else {
        let rows: Vec<Vec<String>> =
            recent.iter().rev().take(50).map(|d| vec![td(&utc(d.time as u64)), td(d.level), td(&d.message)]).collect();
        table(&mut out, "decisions", &["time", "level", "message"], &rows);
    }
    let _ = write!(
        out,
        "<p class=\"muted\">Events received {}, lost in the ring buffer {}, discarded {}.</p>\n</body></html>\n",
        s.events.received,
        s.events.ringbuf_dropped,
        s.events.malformed + s.events.queue_full
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::{ChangeCount, FeatureStatus, TunableChange, TunerStatus};

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn page_shows_changes_escaped() {
        let s = Snapshot {
            version: "1.0".into(),
            changes: vec![ChangeCount {
                tuner: "t".into(),
                tunable: "net.x".into(),
                scenario: "<script>".into(),
                netns: "global".into(),
                count: 4,
            }],
            changed: vec![TunableChange {
                tuner: "t".into(),
                tunable: "net.x".into(),
                netns: "4097".into(),
                netns_path: "/run/netns/a&b".into(),
                original: "1 2 3".into(),
                current: "1 2 4".into(),
                count: 4,
            }],
            tuners: vec![TunerStatus { name: "t".into(), state: "active", detail: String::new() }],
            features: vec![FeatureStatus { tuner: "t".into(), part: "p".into(), state: "off", detail: "d".into() }],
            ..Snapshot::default()
        };
        let recent = vec![Decision { time: 0.0, level: "notice", message: "a < b".into() }];
        let page = html(&s, &recent, 0);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<span class=\"from\">1 2 3</span>"), "{page}");
        assert!(page.contains("<span class=\"to\">1 2 4</span>"), "{page}");
        assert!(page.contains("/run/netns/a&amp;b"), "{page}");
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"), "{page}");
        assert!(page.contains("a &lt; b"), "{page}");
        assert!(!page.contains("http://") && !page.contains("https://"), "self-contained");
        let empty = html(&Snapshot::default(), &[], 0);
        assert!(empty.contains("id=\"no-changes\""), "{empty}");
    }
}
