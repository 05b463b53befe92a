//! The operator's envelope: optional floors and ceilings per tunable (and
//! per namespace) from `/etc/bpftune/limits.conf` and `limits.d/*.conf`,
//! which the sysctl writer clamps every value a tuner wants into. Without
//! the files there are no limits and nothing changes.
//!
//! One rule a line: `TUNABLE min|max V1 [V2 ...] [netns COOKIE]`, `-` for a
//! field left unbounded, `#` starts a comment. A bad line is an error
//! naming the file and line; the caller decides what to do with it (the
//! daemon refuses to start, a reload keeps the previous limits).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::sysctl;

/// The envelope file read by default.
pub const DEFAULT_LIMITS_FILE: &str = "/etc/bpftune/limits.conf";
/// Drop-in directory name, next to the file: `/etc/bpftune/limits.d`.
pub const DROPIN_DIR: &str = "limits.d";

/// Why limits could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}:{line}: {msg}")]
    Parse { path: String, line: usize, msg: String },
}

/// Floor or ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Min,
    Max,
}

/// One line of a limits file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Dotted sysctl name.
    pub tunable: String,
    pub bound: Bound,
    /// Per field; `None` leaves that field unbounded.
    pub values: Vec<Option<i64>>,
    /// Only in this namespace (cookie); `None` for every namespace.
    pub netns: Option<u64>,
    /// The file it came from (named in the clamp line).
    pub file: String,
}

/// The files the limits were read from, to read again on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSource {
    pub file: PathBuf,
    pub dropin: PathBuf,
}

impl LimitsSource {
    /// `file` and the `limits.d` directory next to it.
    pub fn new(file: &Path) -> Self {
        let dropin = file.parent().unwrap_or(Path::new("/")).join(DROPIN_DIR);
        Self { file: file.to_path_buf(), dropin }
    }
}

/// A value clamped by the limits: what was wanted, what is allowed, and
/// the file(s) whose rules changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clamped {
    pub values: Vec<i64>,
    pub files: Vec<String>,
}

/// Every rule in force; empty means no limits.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    rules: Vec<Rule>,
    source: Option<LimitsSource>,
    /// Files actually read (for the reply to a reload).
    files: Vec<String>,
}

fn parse_value(s: &str) -> Result<Option<i64>, String> {
    if s == "-" {
        return Ok(None);
    }
    s.parse::<i64>().map(Some).map_err(|e| format!("'{s}' is not an integer or '-': {e}"))
}

/// Parse one line (without its comment); `Ok(None)` for a blank line.
fn parse_line(line: &str, file: &str) -> Result<Option<Rule>, String> {
    let line = line.split('#').next().unwrap_or("");
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if words.is_empty() {
        return Ok(None);
    }
    if words.len() < 3 {
        return Err("expected 'TUNABLE min|max VALUE [VALUE ...] [netns COOKIE]'".to_string());
    }
    let mut netns = None;
    if words.len() >= 5 && words[words.len() - 2] == "netns" {
        let c = words[words.len() - 1];
        netns = Some(c.parse::<u64>().map_err(|_| format!("netns cookie '{c}' is not a number"))?);
        words.truncate(words.len() - 2);
    }
    let tunable = sysctl::path_name_to_dotted(words[0]);
    if !tunable.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(format!("'{}' is not a sysctl name", words[0]));
    }
    let bound = match words[1] {
        "min" => Bound::Min,
        "max" => Bound::Max,
        other => return Err(format!("'{other}' is neither 'min' nor 'max'")),
    };
    let values = words[2..].iter().map(|w| parse_value(w)).collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() {
        return Err("no value".to_string());
    }
    Ok(Some(Rule { tunable, bound, values, netns, file: file.to_string() }))
}

/// Parse the text of one file.
pub fn parse(text: &str, file: &str) -> Result<Vec<Rule>, LimitsError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line, file) {
            Ok(Some(r)) => rules.push(r),
            Ok(None) => {}
            Err(msg) => return Err(LimitsError::Parse { path: file.to_string(), line: i + 1, msg }),
        }
    }
    Ok(rules)
}

/// Read one file; a missing file is no rules.
fn read_file(path: &Path) -> Result<Option<Vec<Rule>>, LimitsError> {
    let name = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(text) => parse(&text, &name).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LimitsError::Io { path: name, source: e }),
    }
}

impl Limits {
    /// Read `source.file`, then `source.dropin/*.conf` in name order.
    /// Missing files and directory mean no limits.
    pub fn load(source: LimitsSource) -> Result<Self, LimitsError> {
        let mut limits = Limits { rules: Vec::new(), source: None, files: Vec::new() };
        if let Some(rules) = read_file(&source.file)? {
            limits.files.push(source.file.display().to_string());
            limits.rules.extend(rules);
        }
        let mut dropins: Vec<PathBuf> = match fs::read_dir(&source.dropin) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(LimitsError::Io { path: source.dropin.display().to_string(), source: e }),
        };
        dropins.sort();
        for p in dropins {
            if let Some(rules) = read_file(&p)? {
                limits.files.push(p.display().to_string());
                limits.rules.extend(rules);
            }
        }
        limits.source = Some(source);
        Ok(limits)
    }

    /// Limits from rules (tests).
    pub fn from_rules(rules: Vec<Rule>) -> Self {
        Self { rules, source: None, files: Vec::new() }
    }

    /// Read the same files again.
    pub fn reload(&self) -> Result<Self, LimitsError> {
        match &self.source {
            Some(s) => Self::load(s.clone()),
            None => Ok(self.clone()),
        }
    }

    pub fn source(&self) -> Option<&LimitsSource> {
        self.source.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The files read.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Clamp `values` of `tunable` in namespace `cookie` into every rule
    /// that applies (a ceiling wins over a floor above it). `None` when no
    /// rule changes a field.
    pub fn clamp(&self, tunable: &str, cookie: u64, values: &[i64]) -> Option<Clamped> {
        if self.rules.is_empty() {
            return None;
        }
        let mut out = values.to_vec();
        let mut files: Vec<String> = Vec::new();
        let applies = |r: &&Rule| r.tunable == tunable && r.netns.is_none_or(|c| c == cookie);
        // Floors first, then ceilings, so a ceiling has the last word.
        for bound in [Bound::Min, Bound::Max] {
            for r in self.rules.iter().filter(applies).filter(|r| r.bound == bound) {
                let mut changed = false;
                for (v, limit) in out.iter_mut().zip(&r.values) {
                    let Some(limit) = *limit else { continue };
                    let new = match bound {
                        Bound::Min => (*v).max(limit),
                        Bound::Max => (*v).min(limit),
                    };
                    changed |= new != *v;
                    *v = new;
                }
                if changed && !files.contains(&r.file) {
                    files.push(r.file.clone());
                }
            }
        }
        if out == values { None } else { Some(Clamped { values: out, files }) }
    }
}

/// Clamps remembered so each distinct one is logged once.
const LOGGED_MAX: usize = 1024;

/// The limits in force in the daemon, and the clamps already logged (a
/// tuner that keeps asking for more than the ceiling is logged once, not
/// at every event).
#[derive(Debug, Default)]
pub struct Envelope {
    limits: Limits,
    logged: HashMap<(String, String, u64), Vec<i64>>,
}

impl Envelope {
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn set(&mut self, limits: Limits) {
        self.limits = limits;
        self.logged.clear();
    }

    /// The values `tuner` may write to `tunable` in namespace `cookie`,
    /// and the line to log when they were clamped (once per distinct
    /// result).
    pub fn apply(
        &mut self,
        tuner: &str,
        tunable: &str,
        cookie: u64,
        global: bool,
        values: &[i64],
    ) -> (Vec<i64>, Option<String>) {
        let Some(c) = self.limits.clamp(tunable, cookie, values) else { return (values.to_vec(), None) };
        let key = (tuner.to_string(), tunable.to_string(), cookie);
        if self.logged.get(&key) == Some(&c.values) {
            return (c.values, None);
        }
        if self.logged.len() >= LOGGED_MAX {
            self.logged.clear();
        }
        self.logged.insert(key, c.values.clone());
        let ns = if global { "global ns".to_string() } else { format!("netns (cookie {cookie})") };
        let line = clamp_line(tuner, tunable, &ns, values, &c);
        (c.values, Some(line))
    }
}

/// `tuner 'T' wanted TUNABLE (V) in NS; using (W), limited by FILE`.
pub fn clamp_line(tuner: &str, tunable: &str, ns: &str, wanted: &[i64], c: &Clamped) -> String {
    format!(
        "tuner '{tuner}' wanted {tunable} ({}) in {ns}; using ({}), limited by {}",
        sysctl::format_values(wanted),
        sysctl::format_values(&c.values),
        c.files.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> Limits {
        Limits::from_rules(parse(text, "/etc/bpftune/limits.conf").expect("parse"))
    }

    #[test]
    fn clamps_per_field_and_leaves_unlimited_alone() {
        let l = limits(
            "# comment\n\nnet.ipv4.tcp_rmem max 4096 131072 16777216\nnet.ipv4.tcp_rmem min - 65536 -  # trailing\n",
        );
        assert_eq!(l.rule_count(), 2);
        assert_eq!(l.clamp("net.ipv4.tcp_rmem", 1, &[4096, 131072, 6291456]), None);
        let c = l.clamp("net.ipv4.tcp_rmem", 1, &[8192, 32768, 33554432]).expect("clamped");
        assert_eq!(c.values, vec![4096, 65536, 16777216]);
        assert_eq!(c.files, vec!["/etc/bpftune/limits.conf".to_string()]);
        assert_eq!(l.clamp("net.ipv4.tcp_wmem", 1, &[8192, 1, 1 << 30]), None);
    }

    #[test]
    fn netns_scope_and_ceiling_over_floor() {
        let l = limits("net.core.somaxconn max 1024 netns 7\nnet/core/somaxconn min 2048\n");
        // Only the floor applies outside namespace 7.
        assert_eq!(l.clamp("net.core.somaxconn", 1, &[4096]), None);
        assert_eq!(l.clamp("net.core.somaxconn", 1, &[100]).map(|c| c.values), Some(vec![2048]));
        // In 7 the ceiling wins over the floor above it.
        assert_eq!(l.clamp("net.core.somaxconn", 7, &[4096]).map(|c| c.values), Some(vec![1024]));
        assert_eq!(l.clamp("net.core.somaxconn", 7, &[100]).map(|c| c.values), Some(vec![1024]));
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, what) in [
            ("net.ipv4.tcp_rmem max\n", "expected"),
            ("ok.one max 1\nnet.ipv4.tcp_rmem most 1 2 3\n", "neither"),
            ("net.ipv4.tcp_rmem max 1 x 3\n", "not an integer"),
            ("net.ipv4.tcp_rmem max 1 2 3 netns abc\n", "not a number"),
            ("net.ipv4.tcp rmem max 1\n", "neither"),
            ("net;rm max 1\n", "not a sysctl name"),
        ] {
            let e = parse(text, "/x/limits.conf").expect_err(text).to_string();
            assert!(e.starts_with("/x/limits.conf:"), "{e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
        let e = parse("a.b max 1\n\nbad\n", "f").expect_err("bad").to_string();
        assert!(e.starts_with("f:3: "), "{e}");
    }

    #[test]
    fn missing_files_are_no_limits_and_dropins_are_read_in_order() {
        let dir = std::env::temp_dir().join(format!("bpftune-limits-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = dir.join("limits.conf");
        let l = Limits::load(LimitsSource::new(&file)).expect("missing is fine");
        assert!(l.is_empty() && l.files().is_empty());
        fs::create_dir_all(dir.join(DROPIN_DIR)).expect("mkdir");
        fs::write(&file, "a.b max 10\n").expect("write");
        fs::write(dir.join(DROPIN_DIR).join("20-x.conf"), "a.b max 5\n").expect("write");
        fs::write(dir.join(DROPIN_DIR).join("10-x.conf"), "a.b min 3\n").expect("write");
        fs::write(dir.join(DROPIN_DIR).join("ignored.txt"), "garbage\n").expect("write");
        let l = Limits::load(LimitsSource::new(&file)).expect("load");
        assert_eq!(l.files().len(), 3);
        assert!(l.files()[1].ends_with("10-x.conf"));
        let c = l.clamp("a.b", 1, &[8]).expect("clamped");
        assert_eq!(c.values, vec![5]);
        assert!(c.files[0].ends_with("20-x.conf"));
        let mut env = Envelope::default();
        env.set(l.clone());
        let (v, line) = env.apply("t", "a.b", 9, false, &[8]);
        assert_eq!(v, vec![5]);
        let line = line.expect("logged");
        assert!(line.contains("wanted a.b (8) in netns (cookie 9); using (5), limited by "), "{line}");
        assert_eq!(env.apply("t", "a.b", 9, false, &[9]), (vec![5], None), "the same clamp is logged once");
        assert_eq!(env.apply("t", "a.b", 9, false, &[4]), (vec![4], None));
        fs::write(&file, "a.b max\n").expect("write");
        let e = l.reload().expect_err("bad file").to_string();
        assert!(e.contains("limits.conf:1:"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
