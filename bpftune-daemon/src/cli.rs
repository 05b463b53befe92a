//! Command-line options: the original's flags (same letters, same long
//! names), plus `--system-libdir`, `--advise`, `--log-level`, `--limits`
//! and the metrics outputs. One definition from which `--help` and the man
//! page's option list are derived.

use std::path::PathBuf;

use bpftune_core::LogLevel;
use clap::{ArgAction, Parser};

use crate::logging;

/// Default cgroup v2 directory BPF cgroup programs attach to.
pub const DEFAULT_CGROUP: &str = "/var/run/bpftune/cgroupv2";
/// Where the lock file, query socket and server-port file live.
pub const RUN_DIR: &str = "/var/run/bpftune";

const PREFIX: &str = match option_env!("BPFTUNE_PREFIX") {
    Some(p) => p,
    None => "/usr",
};
const LIBDIR: &str = match option_env!("BPFTUNE_LIBDIR") {
    Some(l) => l,
    None => "lib64",
};

/// `<prefix>/<libdir>/bpftune/`, e.g. `/usr/lib64/bpftune/`.
pub fn system_plugin_dir() -> String {
    format!("{PREFIX}/{LIBDIR}/bpftune/")
}

/// `<prefix>/local/<libdir>/bpftune/`, e.g. `/usr/local/lib64/bpftune/`.
pub fn local_plugin_dir() -> String {
    format!("{PREFIX}/local/{LIBDIR}/bpftune/")
}

fn learning_rate(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v <= 4 => Ok(v),
        _ => Err("values 0-4 are supported".to_string()),
    }
}

/// BPF-based auto-tuning of networking sysctls.
#[derive(Debug, Parser)]
#[command(name = "bpftune", disable_version_flag = true, about, long_about = None)]
pub struct Cli {
    /// Only load tuners with this file name (e.g. tcp_buffer_tuner.so); repeatable.
    #[arg(short = 'a', long = "allow", value_name = "TUNER.so", action = ArgAction::Append)]
    pub allow: Vec<String>,

    /// cgroup v2 directory for cgroup BPF programs (mounted there if needed).
    #[arg(short = 'c', long = "cgroup", value_name = "PATH", default_value = DEFAULT_CGROUP)]
    pub cgroup: PathBuf,

    /// Log debug messages too (including libbpf's).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,

    /// Run in the background.
    #[arg(short = 'D', long = "daemon")]
    pub daemon: bool,

    /// Extra plugin directory (default <prefix>/local/<libdir>/bpftune/).
    #[arg(short = 'l', long = "libdir", value_name = "DIR")]
    pub libdir: Option<PathBuf>,

    /// Use legacy BPF attach types (raw tracepoints) even if more is supported.
    #[arg(short = 'L', long = "legacy")]
    pub legacy: bool,

    /// Query server TCP port, bound to 127.0.0.1 only (default: a Unix socket).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,

    /// Print the system plugin directory and exit.
    #[arg(short = 'P', long = "print-libdir")]
    pub print_libdir: bool,

    /// Ask the running daemon: help, tuners, tunables, jtunables, status, jstatus, summary, rollback, jevents,
    /// metrics, report, release TUNABLE [NETNS], hold TUNABLE [NETNS], loglevel [LEVEL], reload-limits.
    #[arg(short = 'q', long = "query", value_name = "VERB")]
    pub query: Option<String>,

    /// Arguments of the query verb (e.g. `-q release net.ipv4.tcp_rmem global`).
    #[arg(value_name = "ARG", requires = "query")]
    pub query_args: Vec<String>,

    /// Learning rate 0..4: steps of 1/64 .. 1/4 (default 4).
    #[arg(short = 'r', long = "learning_rate", value_name = "RATE", default_value = "4", value_parser = learning_rate)]
    pub learning_rate: u32,

    /// On exit, restore every sysctl changed (in every namespace) to its original value.
    #[arg(short = 'R', long = "rollback")]
    pub rollback: bool,

    /// Log to standard error instead of syslog.
    #[arg(short = 's', long = "stderr")]
    pub stderr: bool,

    /// Report what this kernel supports and exit.
    #[arg(short = 'S', long = "support")]
    pub support: bool,

    /// Print the version and exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,

    /// System plugin directory (default <prefix>/<libdir>/bpftune/, see -P).
    #[arg(long = "system-libdir", value_name = "DIR")]
    pub system_libdir: Option<PathBuf>,

    /// Decide as usual but change nothing: log each change as advice with a stable id.
    #[arg(long = "advise")]
    pub advise: bool,

    /// Judge each change by its effect and log the verdict, but never revert one judged 'hurt'.
    #[arg(long = "no-revert")]
    pub no_revert: bool,

    /// Serve GET /metrics (OpenMetrics) on 127.0.0.1:PORT, [::1]:PORT or a Unix socket path.
    #[arg(long = "metrics-listen", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Let --metrics-listen bind a non-loopback address (anyone who reaches it sees what was tuned).
    #[arg(long = "metrics-allow-remote", requires = "metrics_listen")]
    pub metrics_allow_remote: bool,

    /// Rewrite PATH with the metrics every 5 s (atomically), for node_exporter's textfile collector.
    #[arg(long = "metrics-textfile", value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    /// Log this level and more severe: err, warning, notice, info, debug (default notice; -d means debug).
    #[arg(long = "log-level", value_name = "LEVEL", value_parser = logging::parse_level)]
    pub log_level: Option<LogLevel>,

    /// Operator limits on tunables (also reads limits.d/*.conf next to it); a missing file means no limits.
    #[arg(long = "limits", value_name = "FILE", default_value = bpftune_core::limits::DEFAULT_LIMITS_FILE)]
    pub limits: PathBuf,
}

impl Cli {
    /// `--log-level`, else debug with `-d`, else notice.
    pub fn log_level(&self) -> LogLevel {
        match self.log_level {
            Some(l) => l,
            None if self.debug => LogLevel::Debug,
            None => LogLevel::Notice,
        }
    }

    /// Is debug logging asked for (`-d` or `--log-level debug`)?
    pub fn debug_logging(&self) -> bool {
        self.log_level() == LogLevel::Debug
    }

    /// The request `-q` sends: the verb and its arguments.
    pub fn query_request(&self) -> Option<String> {
        let verb = self.query.as_ref()?;
        Some(
            std::iter::once(verb.as_str())
                .chain(self.query_args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bpftune").chain(args.iter().copied()))
    }

    #[test]
    fn original_flags_parse() {
        let c = parse(&["-a", "x_tuner.so", "-a", "y_tuner.so", "-dsR", "-r", "2", "-l", "/opt/t", "-p", "1234"])
            .expect("parse");
        assert_eq!(c.allow, vec!["x_tuner.so", "y_tuner.so"]);
        assert!(c.debug && c.stderr && c.rollback);
        assert_eq!(c.learning_rate, 2);
        assert_eq!(c.port, Some(1234));
        assert_eq!(c.cgroup, PathBuf::from(DEFAULT_CGROUP));
        let c = parse(&["--learning_rate", "0", "--support", "--legacy", "--print-libdir"]).expect("parse");
        assert!(c.support && c.legacy && c.print_libdir);
    }

    #[test]
    fn bad_values_are_rejected() {
        let e = parse(&["-r", "5"]).expect_err("rate 5");
        assert!(e.to_string().contains("values 0-4 are supported"));
        assert!(parse(&["-r", "abc"]).is_err());
        assert!(parse(&["-r", "-1"]).is_err());
        assert!(parse(&["-p", "70000"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
    }

    #[test]
    fn metrics_options() {
        let c = parse(&["--metrics-listen", "127.0.0.1:9555", "--metrics-textfile", "/var/lib/node/bpftune.prom"])
            .expect("parse");
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9555"));
        assert_eq!(c.metrics_textfile, Some(PathBuf::from("/var/lib/node/bpftune.prom")));
        assert!(!c.metrics_allow_remote);
        assert!(parse(&["--metrics-allow-remote"]).is_err(), "only with --metrics-listen");
        assert!(parse(&["--metrics-listen", "0.0.0.0:9555", "--metrics-allow-remote"]).is_ok());
    }

    #[test]
    fn log_level_limits_and_query_arguments() {
        assert_eq!(parse(&[]).expect("parse").log_level(), LogLevel::Notice);
        assert_eq!(parse(&["-d"]).expect("parse").log_level(), LogLevel::Debug);
        assert_eq!(parse(&["--log-level", "info"]).expect("parse").log_level(), LogLevel::Info);
        assert_eq!(parse(&["-d", "--log-level", "warning"]).expect("parse").log_level(), LogLevel::Warning);
        assert!(parse(&["--log-level", "loud"]).is_err());
        let c = parse(&[]).expect("parse");
        assert_eq!(c.limits, PathBuf::from("/etc/bpftune/limits.conf"));
        assert_eq!(c.query_request(), None);
        let c = parse(&["--limits", "/tmp/l.conf", "-q", "release", "net.ipv4.tcp_rmem", "4096"]).expect("parse");
        assert_eq!(c.limits, PathBuf::from("/tmp/l.conf"));
        assert_eq!(c.query_request().as_deref(), Some("release net.ipv4.tcp_rmem 4096"));
        assert!(parse(&["stray"]).is_err(), "arguments only with -q");
    }

    #[test]
    fn plugin_dirs_have_trailing_slash() {
        assert!(system_plugin_dir().ends_with("/bpftune/"));
        assert!(local_plugin_dir().contains("/local/"));
    }
}
