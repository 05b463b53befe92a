//! What the query verbs answer: the verb table, the original's text layouts
//! (`%20s %40s` and so on) and JSON (via serde_json, valid in every case,
//! including zero tuners). Built on the daemon's main thread from the
//! tuner set, so there is no shared state to lock.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bpftune_core::LogLevel;
use bpftune_core::abi::TunableKind;
use bpftune_core::host::OperatorAction;
use bpftune_core::registry::TunerState;
use bpftune_core::summary;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::journal::Journal;
use crate::operator;
use crate::rollback;
use crate::tuners::TunerSet;

/// The verbs, in matching order, with the descriptions `help` shows.
pub const VERBS: &[(&str, &str)] = &[
    ("help", "list supported queries"),
    ("tuners", "show state of tuners"),
    ("tunables", "show list of tunables"),
    ("jtunables", "show list of tunables(json)"),
    ("summary", "show summary of changes"),
    ("status", "show status of tunables"),
    ("jstatus", "show status of tunables(json)"),
    ("rollback", "show changes needed to roll back"),
    ("jevents", "show recent decisions(json)"),
    ("metrics", "show metrics (OpenMetrics text)"),
    ("report", "show report of changes (HTML page)"),
    ("release", "give TUNABLE [NETNS] back to bpftune"),
    ("hold", "take TUNABLE [NETNS] from bpftune"),
    ("loglevel", "show or set the log level [LEVEL]"),
    ("reload-limits", "read the limits file again"),
];

/// How many recent decisions `jevents` keeps.
pub const RECENT_MAX: usize = 256;

/// One logged decision (or other tuner notice).
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Seconds since the epoch.
    pub time: f64,
    pub level: &'static str,
    pub message: String,
}

/// The most recent decisions, bounded; fed by the tuners' log sink.
#[derive(Debug, Clone, Default)]
pub struct Recent(Rc<RefCell<VecDeque<Decision>>>);

impl Recent {
    pub fn push(&self, level: LogLevel, msg: &str) {
        if level > LogLevel::Notice {
            return;
        }
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let level = match level {
            LogLevel::Err => "err",
            LogLevel::Warning => "warning",
            _ => "notice",
        };
        if let Ok(mut q) = self.0.try_borrow_mut() {
            if q.len() >= RECENT_MAX {
                q.pop_front();
            }
            q.push_back(Decision { time, level, message: msg.to_string() });
        }
    }

    fn snapshot(&self) -> Vec<Decision> {
        self.0.try_borrow().map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }
}

/// What a reply is built from.
pub struct ReplyCtx<'a> {
    pub set: &'a TunerSet,
    pub journal: Option<&'a Journal>,
    pub recent: &'a Recent,
    /// The event loop's counters (events, drops), for `metrics`.
    pub stats: Option<&'a crate::metrics::LoopStats>,
    /// Workloads of the namespaces bpftune changed.
    pub identities: Option<&'a crate::identity::Identities>,
}

/// The verb a request selects: the first verb the request starts with (the
/// original's rule, e.g. `helpme` → `help`).
pub fn match_verb(request: &str) -> Option<&'static str> {
    VERBS.iter().map(|(v, _)| *v).find(|v| request.starts_with(v))
}

/// Printable form of a request for the error reply (garbage is not echoed
/// raw, and long requests are cut).
pub fn printable(request: &str) -> String {
    let mut s: String =
        request.chars().take(80).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if request.chars().count() > 80 {
        s.push_str("...");
    }
    s
}

/// The reply to one request.
pub fn reply(request: &str, ctx: &ReplyCtx<'_>) -> String {
    let request = request.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    match match_verb(request) {
        Some("help") => help(),
        Some("tuners") => tuners(ctx),
        Some("tunables") => tunables(ctx),
        Some("jtunables") => json(&jtunables(ctx)),
        Some("summary") => summary_reply(ctx),
        Some("status") => status(ctx),
        Some("jstatus") => json(&jstatus(ctx)),
        Some("rollback") => rollback(ctx),
        Some("jevents") => json(&serde_json::to_value(ctx.recent.snapshot()).unwrap_or(Value::Array(Vec::new()))),
        Some("metrics") => crate::metrics::openmetrics(ctx),
        Some("report") => report(ctx),
        Some("release") => operator::release_or_hold(&ctx.set.host, OperatorAction::Release, &args(request)),
        Some("hold") => operator::release_or_hold(&ctx.set.host, OperatorAction::Hold, &args(request)),
        Some("loglevel") => operator::loglevel(&ctx.set.host, &args(request)),
        Some("reload-limits") => operator::reload_limits_reply(&ctx.set.host),
        _ => format!("unknown request '{}'; supported requests are:\n{}", printable(request), help()),
    }
}

/// The words after the verb.
fn args(request: &str) -> Vec<&str> {
    request.split_whitespace().skip(1).collect()
}

/// The HTML page of `report`.
fn report(ctx: &ReplyCtx<'_>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    crate::report::html(&crate::metrics::snapshot::gather(ctx), &ctx.recent.snapshot(), now)
}

/// A reply for a request that was not a request (too long, unreadable).
pub fn error_reply(what: &str) -> String {
    format!("{what}; supported requests are:\n{}", help())
}

pub fn help() -> String {
    VERBS.iter().map(|(v, d)| format!("{v:>20} {d:>40}\n")).collect()
}

fn tuners(ctx: &ReplyCtx<'_>) -> String {
    let host = ctx.set.host.borrow();
    host.registry.iter().map(|t| format!("{:>20} {:>20}\n", t.name, t.state.as_str())).collect()
}

/// Tuners that are running, in id order.
fn running(ctx: &ReplyCtx<'_>) -> Vec<bpftune_core::registry::TunerRecord> {
    let host = ctx.set.host.borrow();
    host.registry.iter().filter(|t| t.state == TunerState::Active).cloned().collect()
}

fn kind_name(string: bool) -> &'static str {
    if string { "string" } else { "integer" }
}

fn tunables(ctx: &ReplyCtx<'_>) -> String {
    let mut out = String::new();
    for t in running(ctx) {
        for info in &t.tunables {
            out.push_str(&format!(
                "{:>16} {:>50} {:>8} {:>2}\n",
                t.name,
                info.name,
                kind_name(info.is_string()),
                info.num_values
            ));
        }
    }
    out
}

fn jtunables(ctx: &ReplyCtx<'_>) -> Value {
    let mut root = Map::new();
    for t in running(ctx) {
        let mut tunables = Map::new();
        for info in &t.tunables {
            let mut m = Map::new();
            m.insert("type".into(), Value::from(kind_name(info.is_string())));
            m.insert("num_values".into(), Value::from(info.num_values));
            tunables.insert(info.name.clone(), Value::Object(m));
        }
        root.insert(t.name.clone(), Value::Object(tunables));
    }
    Value::Object(root)
}

/// Current global value of every sysctl tunable of the running tuners.
fn values(ctx: &ReplyCtx<'_>) -> Vec<(String, String, String, bool, u8)> {
    let mut out = Vec::new();
    let tuners = running(ctx);
    let mut host = ctx.set.host.borrow_mut();
    let global = host.netns.global_cookie();
    for t in tuners {
        for info in &t.tunables {
            if info.kind != TunableKind::Sysctl {
                continue;
            }
            if let Ok(v) = host.read_text(global, &info.name) {
                out.push((t.name.clone(), info.name.clone(), v, info.is_string(), info.num_values));
            }
        }
    }
    out
}

fn status(ctx: &ReplyCtx<'_>) -> String {
    values(ctx)
        .into_iter()
        .map(|(tuner, name, v, string, _)| {
            let v =
                if string { format!("\"{}\"", v.trim()) } else { v.split_whitespace().collect::<Vec<_>>().join(" ") };
            format!("{tuner:>16} {name:>50} {v:>34}\n")
        })
        .collect()
}

fn jstatus(ctx: &ReplyCtx<'_>) -> Value {
    let mut root = Map::new();
    for t in running(ctx) {
        let mut m = Map::new();
        // Parts that do not work as designed on this kernel (as `bpftune
        // -S` lists them); a tuner that works fully keeps the original's
        // shape.
        let features: Vec<Value> = t
            .features
            .iter()
            .filter(|f| f.state != bpftune_core::abi::FeatureState::Active)
            .map(|f| serde_json::json!({"part": f.part, "state": f.state.as_str(), "detail": f.detail}))
            .collect();
        if !features.is_empty() {
            m.insert("features".to_string(), Value::Array(features));
        }
        // Namespaces where it is manual, and whose doing (an
        // administrator's write or the operator's hold); absent when none.
        let manual = manual_states(ctx, &t);
        if !manual.is_empty() {
            m.insert("manual".to_string(), Value::Array(manual));
        }
        root.insert(t.name.clone(), Value::Object(m));
    }
    for (tuner, name, v, string, num) in values(ctx) {
        let value = if string {
            Value::from(v.trim())
        } else {
            let ints: Vec<Value> = v
                .split_whitespace()
                .map(|x| x.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(x)))
                .collect();
            if num > 1 || ints.len() != 1 { Value::Array(ints) } else { ints.into_iter().next().unwrap_or(Value::Null) }
        };
        if let Some(Value::Object(m)) = root.get_mut(&tuner) {
            m.insert(name, value);
        }
    }
    Value::Object(root)
}

fn manual_states(ctx: &ReplyCtx<'_>, t: &bpftune_core::registry::TunerRecord) -> Vec<Value> {
    let host = ctx.set.host.borrow();
    let mut cookies: Vec<u64> =
        t.netns_state.iter().filter(|(_, s)| **s == TunerState::Manual).map(|(c, _)| *c).collect();
    cookies.sort_unstable();
    cookies
        .into_iter()
        .filter_map(|c| {
            let by = host.manual_by(t.id, c)?;
            let netns = if host.netns.is_global(c) { Value::from("global") } else { Value::from(c) };
            Some(serde_json::json!({"netns": netns, "by": by.as_str()}))
        })
        .collect()
}

/// Pretty JSON with tab indentation (the original's layout), newline-ended.
pub fn json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return "{}\n".to_string();
    }
    let mut s = String::from_utf8(buf).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

fn summary_reply(ctx: &ReplyCtx<'_>) -> String {
    let mut out = String::from("# Summary of changes made across all tuners:\n");
    let ids: Vec<u32> = ctx.set.host.borrow().registry.iter().map(|t| t.id).collect();
    for id in ids {
        let lines = match ctx.set.tuners.iter().position(|t| t.id == id && t.instance.is_some()) {
            Some(idx) => ctx.set.summary_lines(idx),
            None => {
                let host = ctx.set.host.borrow();
                host.registry.get(id).map(|r| summary::tuner_summary(r, host.netns.global_cookie())).unwrap_or_default()
            }
        };
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    let host = ctx.set.host.borrow();
    if host.config.advise {
        out.push_str("# Advice (advise mode: nothing was changed):\n");
        for a in host.advice.iter() {
            out.push_str(&a.log_line());
            out.push_str(&format!(" (given {} time{})\n", a.count, if a.count == 1 { "" } else { "s" }));
        }
    }
    out
}

/// `-q rollback`: the commands that would restore what this run changed
/// (still different from the original), then what earlier runs left
/// (journal entries this run does not cover). Writes nothing.
fn rollback(ctx: &ReplyCtx<'_>) -> String {
    let mut out = format!("{}\n", rollback::QUERY_HEADER);
    let host = ctx.set.host.borrow();
    let mut covered = Vec::new();
    let mut push = |c: &rollback::Change<'_>| {
        for l in rollback::query_lines(c) {
            out.push_str(&l);
            out.push('\n');
        }
    };
    for t in host.registry.iter() {
        for (idx, info) in t.tunables.iter().enumerate() {
            let Some(r) = t.records.get(idx) else { continue };
            covered.extend(r.initial.keys().map(|c| (info.name.clone(), *c)));
            if !info.is_sysctl() {
                continue;
            }
            for (cookie, initial) in &r.initial {
                let Some(current) = r.current.get(cookie) else { continue };
                let change = rollback::Change {
                    tunable: &info.name,
                    cookie: *cookie,
                    global: host.netns.is_global(*cookie),
                    original: initial,
                    written: vec![current.as_str()],
                    left_by: None,
                };
                if change.decide(current) == rollback::Decision::Restore {
                    push(&change);
                }
            }
        }
    }
    if let Some(j) = ctx.journal {
        for e in j.leftovers() {
            if covered.contains(&(e.tunable.clone(), e.cookie)) {
                continue;
            }
            push(&rollback::Change {
                tunable: &e.tunable,
                cookie: e.cookie,
                global: e.global,
                original: &e.original,
                written: Vec::new(),
                left_by: Some(e.pid),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_match_by_prefix_in_table_order() {
        assert_eq!(match_verb("help"), Some("help"));
        assert_eq!(match_verb("helpme"), Some("help"));
        assert_eq!(match_verb("tunablesX"), Some("tunables"));
        assert_eq!(match_verb("jstatus"), Some("jstatus"));
        assert_eq!(match_verb("jevents"), Some("jevents"));
        assert_eq!(match_verb("metrics"), Some("metrics"));
        assert_eq!(match_verb("report"), Some("report"));
        assert_eq!(match_verb("release net.ipv4.tcp_rmem 4096"), Some("release"));
        assert_eq!(match_verb("hold net.ipv4.tcp_rmem"), Some("hold"));
        assert_eq!(match_verb("loglevel info"), Some("loglevel"));
        assert_eq!(match_verb("reload-limits"), Some("reload-limits"));
        assert_eq!(args("release  net.ipv4.tcp_rmem\tglobal "), vec!["net.ipv4.tcp_rmem", "global"]);
        assert_eq!(match_verb("bogus"), None);
        assert_eq!(match_verb(""), None);
    }

    #[test]
    fn help_uses_the_original_widths() {
        let h = help();
        let first = h.lines().next().expect("line");
        assert_eq!(first.len(), 20 + 1 + 40);
        assert!(first.ends_with("list supported queries"));
        assert_eq!(h.lines().count(), VERBS.len());
    }

    #[test]
    fn garbage_is_made_printable() {
        assert_eq!(printable("a\u{1}b"), "a?b");
        assert!(printable(&"x".repeat(500)).ends_with("..."));
    }

    #[test]
    fn json_is_valid_even_when_empty() {
        let s = json(&Value::Object(Map::new()));
        let v: Value = serde_json::from_str(&s).expect("valid json");
        assert!(v.as_object().is_some_and(|m| m.is_empty()));
    }
}
