//! Operator controls of a running daemon that keep zero-config the
//! default: `-q release` / `-q hold` of a tunable per namespace, `-q
//! loglevel`, and the limits file (`--limits`, reloaded on SIGHUP or `-q
//! reload-limits`). Replies that are errors start with [`ERROR_PREFIX`], and
//! the `-q` client exits 1 for them.

use std::path::Path;

use bpftune_core::LogLevel;
use bpftune_core::host::{OperatorAction, SharedHost};
use bpftune_core::limits::{Limits, LimitsSource};

use crate::logging;

/// Start of every error reply of these verbs.
pub const ERROR_PREFIX: &str = "error: ";

fn error(msg: &str) -> String {
    format!("{ERROR_PREFIX}{msg}\n")
}

/// Read the limits file and its drop-ins at start; an error names the file
/// and line. Says what is in force when there is something.
pub fn load_limits(file: &Path) -> Result<Limits, String> {
    let limits = Limits::load(LimitsSource::new(file))
        .map_err(|e| format!("cannot use limits: {e}; fix or remove the file (see bpftune(8))"))?;
    if !limits.is_empty() {
        logging::notice(&format!("limits: {}", describe(&limits)));
    }
    Ok(limits)
}

fn describe(limits: &Limits) -> String {
    format!("{} rule(s) from {}", limits.rule_count(), limits.files().join(", "))
}

/// Read the limits again (SIGHUP, `-q reload-limits`). A bad file keeps
/// the limits in force, with an error.
pub fn reload_limits(host: &SharedHost) -> Result<String, String> {
    let Ok(mut h) = host.try_borrow_mut() else { return Err("daemon state is busy; try again".to_string()) };
    match h.limits().reload() {
        Ok(l) => {
            let msg = if l.is_empty() {
                let file = l.source().map(|s| s.file.display().to_string()).unwrap_or_default();
                format!("limits reloaded: none ({file} and its limits.d are absent or empty)")
            } else {
                format!("limits reloaded: {}", describe(&l))
            };
            h.set_limits(l);
            drop(h);
            logging::notice(&msg);
            Ok(msg)
        }
        Err(e) => {
            drop(h);
            let msg = format!("cannot reload limits: {e}; the limits in force are kept");
            logging::err(&msg);
            Err(msg)
        }
    }
}

/// `reload-limits`.
pub fn reload_limits_reply(host: &SharedHost) -> String {
    match reload_limits(host) {
        Ok(msg) => format!("{msg}\n"),
        Err(msg) => error(&msg),
    }
}

/// `release TUNABLE [NETNS]` and `hold TUNABLE [NETNS]`.
pub fn release_or_hold(host: &SharedHost, action: OperatorAction, args: &[&str]) -> String {
    let verb = match action {
        OperatorAction::Release => "release",
        OperatorAction::Hold => "hold",
    };
    let (tunable, netns) = match args {
        [t] => (*t, None),
        [t, n] => (*t, Some(*n)),
        _ => return error(&format!("usage: {verb} TUNABLE [NETNS] (NETNS: global, a cookie or a /run/netns name)")),
    };
    let Ok(mut h) = host.try_borrow_mut() else { return error("daemon state is busy; try again") };
    let cookie = match h.resolve_netns(netns) {
        Ok(c) => c,
        Err(e) => return error(&e),
    };
    match h.operator(action, tunable, cookie) {
        Ok(lines) => lines.iter().map(|l| format!("{l}\n")).collect(),
        Err(e) => error(&e),
    }
}

/// `loglevel [LEVEL]`: show or change the level logged.
pub fn loglevel(host: &SharedHost, args: &[&str]) -> String {
    let level = match args {
        [] => return format!("log level {}\n", logging::level_name(logging::level())),
        [l] => match logging::parse_level(l) {
            Ok(level) => level,
            Err(e) => return error(&e),
        },
        _ => return error(&format!("usage: loglevel [{}]", logging::LEVEL_NAMES.join("|"))),
    };
    let old = logging::set_level(level);
    let debug = level == LogLevel::Debug;
    if let Ok(mut h) = host.try_borrow_mut() {
        // Tuners' debug lines pass the host only when it is on.
        h.config.debug = debug;
    }
    logging::install_libbpf_logger(debug);
    let msg = format!("log level {} -> {}", logging::level_name(old), logging::level_name(level));
    // At notice, or at the new level if that is more severe, so it shows.
    logging::log(level.min(LogLevel::Notice), &msg);
    format!("{msg}\n")
}
