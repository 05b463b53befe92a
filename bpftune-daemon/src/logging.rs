//! The daemon's one logger: syslog (ident `bpftune`, facility daemon, with
//! pid) or stderr with a `bpftune: ` prefix, filtered by level. Identical
//! lines repeated within a short window are collapsed into one line with a
//! count, so a flapping condition cannot flood the journal. The level can
//! be changed at run time (`-q loglevel`).

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bpftune_core::LogLevel;
use syslog::{Facility, Formatter3164, LoggerBackend};

/// Repeats of the same line within this window are counted, not printed.
pub const COLLAPSE_WINDOW: Duration = Duration::from_secs(10);

enum Dest {
    Stderr,
    Syslog(Box<syslog::Logger<LoggerBackend, Formatter3164>>),
    /// Tests: keep lines in memory.
    #[cfg(test)]
    Memory(Vec<String>),
}

struct Last {
    msg: String,
    level: LogLevel,
    since: Instant,
    repeats: u64,
}

struct Inner {
    dest: Dest,
    last: Option<Last>,
}

/// The logger; one per process, see [`init`].
pub struct Logger {
    /// The most verbose level logged, as its syslog number.
    max_level: AtomicU8,
    inner: Mutex<Inner>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

impl Logger {
    fn emit(dest: &mut Dest, level: LogLevel, msg: &str) {
        match dest {
            Dest::Stderr => {
                let mut err = std::io::stderr().lock();
                for line in msg.lines() {
                    let _ = writeln!(err, "bpftune: {line}");
                }
            }
            Dest::Syslog(l) => {
                let r = match level {
                    LogLevel::Err => l.err(msg),
                    LogLevel::Warning => l.warning(msg),
                    LogLevel::Notice => l.notice(msg),
                    LogLevel::Info => l.info(msg),
                    LogLevel::Debug => l.debug(msg),
                };
                if r.is_err() {
                    let _ = writeln!(std::io::stderr(), "bpftune: {msg}");
                }
            }
            #[cfg(test)]
            Dest::Memory(v) => v.push(msg.to_string()),
        }
    }

    fn max_level(&self) -> LogLevel {
        level_from_u8(self.max_level.load(Ordering::Relaxed))
    }

    fn log(&self, level: LogLevel, msg: &str) {
        if level > self.max_level() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        let now = Instant::now();
        let inner = &mut *inner;
        if let Some(last) = inner.last.as_mut() {
            if last.msg == msg && now.duration_since(last.since) < COLLAPSE_WINDOW {
                last.repeats += 1;
                return;
            }
        }
        Self::flush_repeats(inner);
        Self::emit(&mut inner.dest, level, msg);
        inner.last = Some(Last { msg: msg.to_string(), level, since: now, repeats: 0 });
    }

    fn flush_repeats(inner: &mut Inner) {
        if let Some(last) = inner.last.take() {
            if last.repeats > 0 {
                let line = format!("last message repeated {} times: {}", last.repeats, last.msg);
                Self::emit(&mut inner.dest, last.level, &line);
            }
        }
    }

    fn flush(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            Self::flush_repeats(&mut inner);
        }
    }
}

/// Where logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stderr,
    Syslog,
}

/// The names `--log-level` and `-q loglevel` take, most severe first.
pub const LEVEL_NAMES: &[&str] = &["err", "warning", "notice", "info", "debug"];

fn level_from_u8(v: u8) -> LogLevel {
    match v {
        0..=3 => LogLevel::Err,
        4 => LogLevel::Warning,
        5 => LogLevel::Notice,
        6 => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

/// `err`, `warning`, `notice`, `info` or `debug` (also `error`, `warn`).
pub fn parse_level(s: &str) -> Result<LogLevel, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "err" | "error" => Ok(LogLevel::Err),
        "warning" | "warn" => Ok(LogLevel::Warning),
        "notice" => Ok(LogLevel::Notice),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        other => Err(format!("unknown log level '{other}'; levels are {}", LEVEL_NAMES.join(", "))),
    }
}

pub fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Err => "err",
        LogLevel::Warning => "warning",
        LogLevel::Notice => "notice",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

/// Set up the process logger once, logging `max_level` and more severe.
/// Falls back to stderr if syslog cannot be reached (no /dev/log), saying
/// so.
pub fn init(target: Target, max_level: LogLevel) {
    let max_level = AtomicU8::new(max_level as u8);
    let (dest, fallback) = match target {
        Target::Stderr => (Dest::Stderr, None),
        Target::Syslog => {
            let formatter = Formatter3164 {
                facility: Facility::LOG_DAEMON,
                hostname: None,
                process: "bpftune".into(),
                pid: std::process::id(),
            };
            match syslog::unix(formatter) {
                Ok(l) => (Dest::Syslog(Box::new(l)), None),
                Err(e) => (Dest::Stderr, Some(format!("cannot reach syslog ({e}); logging to stderr"))),
            }
        }
    };
    let _ = LOGGER.set(Logger { max_level, inner: Mutex::new(Inner { dest, last: None }) });
    if let Some(msg) = fallback {
        log(LogLevel::Warning, &msg);
    }
}

/// Log one message (no-op before [`init`]).
pub fn log(level: LogLevel, msg: &str) {
    if let Some(l) = LOGGER.get() {
        l.log(level, msg);
    }
}

/// Is debug logging on?
pub fn debug_enabled() -> bool {
    LOGGER.get().is_some_and(|l| l.max_level() >= LogLevel::Debug)
}

/// The level logged now.
pub fn level() -> LogLevel {
    LOGGER.get().map(Logger::max_level).unwrap_or(LogLevel::Notice)
}

/// Change the level at run time; returns the previous one.
pub fn set_level(level: LogLevel) -> LogLevel {
    match LOGGER.get() {
        Some(l) => {
            if let Ok(mut inner) = l.inner.lock() {
                Logger::flush_repeats(&mut inner);
            }
            level_from_u8(l.max_level.swap(level as u8, Ordering::Relaxed))
        }
        None => level,
    }
}

/// Print any pending "repeated" line (at exit).
pub fn flush() {
    if let Some(l) = LOGGER.get() {
        l.flush();
    }
}

pub fn err(msg: &str) {
    log(LogLevel::Err, msg);
}
pub fn warn(msg: &str) {
    log(LogLevel::Warning, msg);
}
pub fn notice(msg: &str) {
    log(LogLevel::Notice, msg);
}
pub fn info(msg: &str) {
    log(LogLevel::Info, msg);
}
pub fn debug(msg: &str) {
    log(LogLevel::Debug, msg);
}

/// The daemon's own libbpf messages, at debug.
pub fn install_libbpf_logger(debug: bool) {
    fn forward(_level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        if msg.starts_with("libbpf:") {
            log(LogLevel::Debug, msg);
        } else {
            log(LogLevel::Debug, &format!("libbpf: {msg}"));
        }
    }
    if debug {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, forward)));
    } else {
        libbpf_rs::set_print(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_logger(level: LogLevel) -> Logger {
        Logger {
            max_level: AtomicU8::new(level as u8),
            inner: Mutex::new(Inner { dest: Dest::Memory(Vec::new()), last: None }),
        }
    }

    fn lines(l: &Logger) -> Vec<String> {
        match &l.inner.lock().expect("lock").dest {
            Dest::Memory(v) => v.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn repeats_are_collapsed() {
        let l = memory_logger(LogLevel::Debug);
        for _ in 0..5 {
            l.log(LogLevel::Notice, "same");
        }
        l.log(LogLevel::Notice, "other");
        assert_eq!(lines(&l), vec!["same", "last message repeated 4 times: same", "other"]);
    }

    #[test]
    fn level_filter() {
        let l = memory_logger(LogLevel::Notice);
        l.log(LogLevel::Debug, "hidden");
        l.log(LogLevel::Err, "shown");
        assert_eq!(lines(&l), vec!["shown"]);
        l.max_level.store(LogLevel::Info as u8, Ordering::Relaxed);
        l.log(LogLevel::Info, "info shown");
        l.log(LogLevel::Debug, "still hidden");
        assert_eq!(lines(&l), vec!["shown", "info shown"]);
    }

    #[test]
    fn level_names_round_trip() {
        for name in LEVEL_NAMES {
            assert_eq!(level_name(parse_level(name).expect("level")), *name);
        }
        assert_eq!(parse_level("WARN"), Ok(LogLevel::Warning));
        assert!(parse_level("verbose").expect_err("bad").contains("err, warning, notice, info, debug"));
    }
}
