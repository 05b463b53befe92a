//! `bpftune`: the daemon. Parses the original's options, probes what the
//! kernel supports, sets up the cgroup and the shared ring buffer, loads the
//! tuner plugins and runs the event loop until SIGINT/SIGTERM, then prints
//! the summary (and rolls back with `-R`).

mod cgroup;
mod cli;
mod conn;
mod event_loop;
mod hotplug;
mod identity;
mod journal;
mod logging;
mod metrics;
mod operator;
mod query;
mod replies;
mod report;
mod rollback;
mod runlock;
mod support_check;
mod tuners;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::{Context, Result};
use bpftune_core::abi::SupportLevel;
use bpftune_core::host::{HostConfig, HostState, LogSink, SharedFds, SharedHost};
use bpftune_core::netns::{self, NetnsRegistry};
use bpftune_core::ringbuf::SharedRing;
use bpftune_core::sysctl::ProcSysctl;
use bpftune_core::{LearningRate, privilege, support};
use clap::Parser;

use crate::cli::Cli;

/// Version printed by `-V`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if cli.version {
        let argv0 = std::env::args().next().unwrap_or_else(|| "bpftune".to_string());
        println!("{argv0} v{VERSION}");
        return ExitCode::SUCCESS;
    }
    if cli.print_libdir {
        println!("{}", cli::system_plugin_dir());
        return ExitCode::SUCCESS;
    }
    let target = if cli.stderr || cli.support || cli.query.is_some() {
        logging::Target::Stderr
    } else {
        logging::Target::Syslog
    };
    logging::init(target, cli.log_level());
    if let Some(request) = cli.query_request() {
        let code = query::client(Path::new(cli::RUN_DIR), cli.port, &request);
        logging::flush();
        return ExitCode::from(code);
    }
    if cli.daemon {
        // SAFETY: daemon(3) forks before any thread exists (we have not
        // started one yet); nochdir and noclose keep paths and logging.
        if unsafe { libc::daemon(1, 1) } < 0 {
            eprintln!("cannot daemonize: {}", std::io::Error::last_os_error());
            return ExitCode::from(1);
        }
    }
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            logging::err(&format!("{e:#}"));
            1
        }
    };
    logging::flush();
    ExitCode::from(code)
}

/// Raise RLIMIT_MEMLOCK; kernels ≥ 5.11 account BPF memory to the memory
/// cgroup and do not need it, so failure is only noted.
fn unlock_memory() {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } < 0 {
        logging::debug(&format!(
            "cannot unlock memory limit: {} (not needed on kernels >= 5.11; continuing)",
            std::io::Error::last_os_error()
        ));
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Before the first write into a namespace, say once which workload it
/// belongs to (its cgroup, unit, pod, container), if a process is in it.
fn note_identity(ids: &RefCell<identity::Identities>, w: &bpftune_core::host::PlannedWrite<'_>) {
    let Some(handle) = w.netns.filter(|_| !w.global) else { return };
    let Ok(mut ids) = ids.try_borrow_mut() else { return };
    if let Some(id) = ids.learn(Path::new("/proc"), handle, std::time::Instant::now()) {
        logging::notice(&format!("netns (cookie {}) is that of pid {}: {}", handle.cookie, id.pid, id.describe()));
    }
}

/// Open the rollback journal, deal with what a previous run left (restore
/// with `-R`, else report), and journal every change from now on (and
/// note each namespace's workload, journal or not). Runs before any tuner
/// is loaded.
fn setup_journal(
    cli: &Cli,
    global_cookie: u64,
    host: &SharedHost,
    ids: &Rc<RefCell<identity::Identities>>,
) -> Option<Rc<RefCell<journal::Journal>>> {
    let mut j = match journal::Journal::open(Path::new(journal::JOURNAL_PATH), global_cookie) {
        Ok(j) => j,
        Err(e) => {
            logging::err(&format!(
                "cannot open rollback journal '{}': {e}; changes will not survive a crash",
                journal::JOURNAL_PATH
            ));
            let ids = ids.clone();
            host.borrow_mut().set_write_hook(Box::new(move |w| note_identity(&ids, w)));
            return None;
        }
    };
    let mut find = |cookie| {
        let mut h = host.borrow_mut();
        let target = h.netns.target(cookie).ok();
        h.sync_netns();
        target
    };
    let restored = j.recover(cli.rollback && !cli.advise, &mut find);
    if restored > 0 {
        logging::notice(&format!("restored {restored} sysctl value(s) a previous bpftune run left changed"));
    }
    let j = Rc::new(RefCell::new(j));
    let mut h = host.borrow_mut();
    let first = j.clone();
    h.set_first_write_hook(Box::new(move |w| match first.try_borrow_mut() {
        Ok(mut j) => j.record_original(w),
        Err(_) => logging::err(&format!("rollback journal busy; original of '{}' not journaled", w.tunable)),
    }));
    let every = j.clone();
    let ids = ids.clone();
    h.set_write_hook(Box::new(move |w| {
        note_identity(&ids, w);
        if let Ok(mut j) = every.try_borrow_mut() {
            j.record_write(w);
        }
    }));
    let verdicts = j.clone();
    h.set_verdict_hook(Box::new(move |v, reverted| {
        if let Ok(mut j) = verdicts.try_borrow_mut() {
            j.record_verdict(v, reverted);
        }
    }));
    drop(h);
    Some(j)
}

/// Everything is loaded, attached and open: keep only what later steps
/// need ([`privilege::RUNTIME`]), with nothing effective until a step
/// raises it. Not fatal: a daemon started without capabilities has none to
/// drop.
fn drop_privileges() {
    match privilege::drop_to_runtime() {
        Ok(kept) => {
            let mut names: Vec<String> = kept.iter().map(|c| c.to_string().to_lowercase()).collect();
            names.sort();
            logging::info(&format!(
                "dropped capabilities: permitted {}, none effective until a step needs one",
                if names.is_empty() { "none".to_string() } else { names.join(",") }
            ));
        }
        Err(e) => logging::warn(&format!("could not drop capabilities: {e}")),
    }
}

/// The system plugin directory, then the local one unless it is the same.
fn plugin_dirs(cli: &Cli) -> Vec<PathBuf> {
    // Absolute without resolving symlinks: the trust checks must see them.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let system_dir = absolute(cli.system_libdir.clone().unwrap_or_else(|| PathBuf::from(cli::system_plugin_dir())));
    let local_dir = absolute(cli.libdir.clone().unwrap_or_else(|| PathBuf::from(cli::local_plugin_dir())));
    let mut dirs = vec![system_dir.clone()];
    if !same_dir(&system_dir, &local_dir) {
        dirs.push(local_dir);
    }
    dirs
}

/// `-S`: the original's lines, with the level lowered to legacy if a tuner
/// cannot load or works partly another way, then one line per tuner.
fn support_report(
    cli: &Cli,
    report: &support::ProbeReport,
    level: SupportLevel,
    global_cookie: u64,
    cgroup_fd: i32,
    dirs: &[PathBuf],
) -> Result<u8> {
    if level == SupportLevel::None {
        for line in report.lines(level) {
            logging::notice(line);
        }
        logging::err("bpftune is not supported on this system; exiting");
        return Ok(1);
    }
    let config = support_check::check_config(cli.debug_logging(), level, report.netns_cookie);
    let tuners = support_check::check_tuners(config, global_cookie, cgroup_fd, cli.allow.clone(), dirs)?;
    let level = support_check::level_with_tuners(level, &tuners);
    for line in report.lines(level) {
        logging::notice(line);
    }
    for line in &tuners.lines {
        logging::notice(line);
    }
    Ok(0)
}

/// `--metrics-listen` and `--metrics-textfile`: bound and checked before
/// any tuner loads, so a wrong address or path is one clear error.
fn metrics_outputs(
    cli: &Cli,
) -> Result<(Option<metrics::http::MetricsServer>, Option<metrics::textfile::Textfile>), String> {
    let server = match &cli.metrics_listen {
        Some(addr) => {
            let addr = metrics::http::parse_listen(addr, cli.metrics_allow_remote)?;
            let server = metrics::http::MetricsServer::bind(&addr)?;
            logging::info(&format!("serving metrics: GET /metrics on {}", server.local()));
            Some(server)
        }
        None => None,
    };
    let textfile = match &cli.metrics_textfile {
        Some(path) => {
            let t = metrics::textfile::Textfile::new(path)?;
            logging::info(&format!("writing metrics to '{}' every 5 s", t.path().display()));
            Some(t)
        }
        None => None,
    };
    Ok((server, textfile))
}

fn run(cli: &Cli) -> Result<u8> {
    unlock_memory();
    logging::install_libbpf_logger(cli.debug_logging());
    let run_dir = Path::new(cli::RUN_DIR);
    runlock::ensure_run_dir(run_dir).map_err(anyhow::Error::msg)?;
    let _lock = if cli.support { None } else { Some(runlock::RunLock::acquire(run_dir).map_err(anyhow::Error::msg)?) };
    // Signals first, before any helper thread exists, so all inherit the mask.
    let sigfd = event_loop::signal_fd().context("signal handling failure")?;
    let cgroup = cgroup::Cgroup::setup(&cli.cgroup).map_err(anyhow::Error::msg)?;

    let report = support::probe(Some(cgroup.fd()));
    for line in report.details() {
        logging::debug(&line);
    }
    let mut level = report.level();
    if cli.legacy && level > SupportLevel::Legacy {
        level = SupportLevel::Legacy;
    }
    let global_cookie = if report.netns_cookie { netns::current_netns_cookie().unwrap_or(0) } else { 0 };
    let dirs = plugin_dirs(cli);
    if cli.support {
        return support_report(cli, &report, level, global_cookie, cgroup.raw_fd(), &dirs);
    }
    // A bad limits file is a clear error before anything runs.
    let limits = match operator::load_limits(&cli.limits) {
        Ok(l) => l,
        Err(msg) => {
            logging::err(&msg);
            return Ok(1);
        }
    };
    for line in report.lines(level) {
        logging::notice(line);
    }
    if level == SupportLevel::None {
        logging::err("bpftune is not supported on this system; exiting");
        return Ok(1);
    }
    cgroup.detach_leftovers();
    // The query server: a port in use is a clear error before anything runs.
    let query = match query::QueryServer::bind(run_dir, cli.port) {
        Ok(q) => q,
        Err(msg) => {
            logging::err(&msg);
            return Ok(1);
        }
    };

    let (metrics_server, textfile) = match metrics_outputs(cli) {
        Ok(m) => m,
        Err(msg) => {
            logging::err(&msg);
            return Ok(1);
        }
    };

    logging::debug(&format!("global netns cookie is {global_cookie}"));
    let ring = SharedRing::create().context("could not create the shared ring buffer")?;

    let config = HostConfig {
        debug: cli.debug_logging(),
        advise: cli.advise,
        learning_rate: LearningRate::new(cli.learning_rate),
        support: level,
        daemon_pid: std::process::id(),
        netns_cookie_supported: report.netns_cookie,
    };
    let recent = replies::Recent::default();
    let sink: LogSink = {
        let recent = recent.clone();
        Rc::new(move |level, msg: &str| {
            logging::log(level, msg);
            recent.push(level, msg);
        })
    };
    let mut host =
        HostState::new(config, NetnsRegistry::new(global_cookie, "/proc"), Box::new(ProcSysctl::default()), sink);
    host.set_limits(limits);
    host.set_revert(!cli.no_revert);
    let host = Rc::new(RefCell::new(host));
    if cli.advise {
        logging::notice("advise mode: decisions are logged as advice; no sysctl will be changed");
    }
    let identities = Rc::new(RefCell::new(identity::Identities::default()));
    let journal = setup_journal(cli, global_cookie, &host, &identities);

    let fds = SharedFds { ringbuf_fd: ring.ringbuf_fd(), stats_map_fd: ring.stats_fd(), cgroup_fd: cgroup.raw_fd() };
    let mut set = tuners::TunerSet::new(host.clone(), fds, cli.allow.clone(), cli.rollback);
    for dir in &dirs {
        set.load_dir(dir);
    }
    if set.active_count() == 0 {
        let names: Vec<String> = dirs.iter().map(|d| format!("'{}'", d.display())).collect();
        logging::err(&format!("could not initialize tuners in {}: no tuner loaded", names.join(" or ")));
        return Ok(1);
    }
    let hotplug = match hotplug::Hotplug::new(&dirs) {
        Ok(h) => Some(h),
        Err(e) => {
            logging::err(&format!("could not create inotify instance: {e}"));
            None
        }
    };
    let found = host.borrow_mut().netns.discover();
    // Tell the tuners about the namespaces found now, not at the first tick.
    host.borrow_mut().sync_netns();
    drop_privileges();
    logging::debug(&format!("found {} network namespaces besides the global one", found.len()));

    let mut services = event_loop::Services {
        query: Some(query),
        hotplug,
        plugin_dirs: dirs,
        journal: journal.clone(),
        recent,
        metrics: metrics_server,
        textfile,
        stats: metrics::LoopStats::default(),
        identities,
    };
    event_loop::run(&mut set, &ring, &sigfd, &mut services).context("ring_buffer__poll")?;
    drop(services.query.take());
    drop(services.metrics.take());

    set.finalize_all();
    // The textfile outlives the daemon: leave it saying the tuners stopped.
    event_loop::write_textfile(&set, &mut services);
    if cli.rollback && !cli.advise {
        // Everything was restored (or deliberately left): nothing to undo.
        if let Some(j) = &journal {
            j.borrow_mut().clear();
        }
    }
    drop(set);
    drop(cgroup);
    Ok(0)
}
