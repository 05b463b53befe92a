//! `bpftune`: the daemon. Parses the original's options, probes what the
//! kernel supports, sets up the cgroup and the shared ring buffer, loads the
//! tuner plugins and runs the event loop until SIGINT/SIGTERM, then prints
//! the summary (and rolls back with `-R`).

mod cgroup;
mod cli;
mod event_loop;
mod logging;
mod runlock;
mod tuners;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::{Context, Result};
use bpftune_core::abi::SupportLevel;
use bpftune_core::host::{HostConfig, HostState, LogSink, SharedFds};
use bpftune_core::netns::{self, NetnsRegistry};
use bpftune_core::ringbuf::SharedRing;
use bpftune_core::sysctl::ProcSysctl;
use bpftune_core::{LearningRate, support};
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
    logging::init(target, cli.debug);
    if let Some(verb) = &cli.query {
        return query_unavailable(verb);
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

fn query_unavailable(verb: &str) -> ExitCode {
    logging::err(&format!("could not get bpftune port for request '{verb}': query server not available"));
    ExitCode::from(1)
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

fn run(cli: &Cli) -> Result<u8> {
    unlock_memory();
    logging::install_libbpf_logger(cli.debug);
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
    for line in report.lines(level) {
        logging::notice(line);
    }
    if level == SupportLevel::None {
        logging::err("bpftune is not supported on this system; exiting");
        return Ok(1);
    }
    if cli.support {
        return Ok(0);
    }
    cgroup.detach_leftovers();

    let global_cookie = if report.netns_cookie { netns::current_netns_cookie().unwrap_or(0) } else { 0 };
    logging::debug(&format!("global netns cookie is {global_cookie}"));
    let ring = SharedRing::create().context("could not create the shared ring buffer")?;

    let config = HostConfig {
        debug: cli.debug,
        advise: cli.advise,
        learning_rate: LearningRate::new(cli.learning_rate),
        support: level,
        daemon_pid: std::process::id(),
        netns_cookie_supported: report.netns_cookie,
    };
    let sink: LogSink = Rc::new(|level, msg: &str| logging::log(level, msg));
    let host =
        HostState::new(config, NetnsRegistry::new(global_cookie, "/proc"), Box::new(ProcSysctl::default()), sink);
    let host = Rc::new(RefCell::new(host));
    if cli.advise {
        logging::notice("advise mode: decisions are logged as advice; no sysctl will be changed");
    }

    let fds = SharedFds { ringbuf_fd: ring.ringbuf_fd(), stats_map_fd: ring.stats_fd(), cgroup_fd: cgroup.raw_fd() };
    let mut set = tuners::TunerSet::new(host.clone(), fds, cli.allow.clone(), cli.rollback);
    // Absolute without resolving symlinks: the trust checks must see them.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let system_dir = absolute(cli.system_libdir.clone().unwrap_or_else(|| PathBuf::from(cli::system_plugin_dir())));
    let local_dir = absolute(cli.libdir.clone().unwrap_or_else(|| PathBuf::from(cli::local_plugin_dir())));
    set.load_dir(&system_dir);
    if !same_dir(&system_dir, &local_dir) {
        set.load_dir(&local_dir);
    }
    if set.active_count() == 0 {
        logging::err(&format!(
            "could not initialize tuners in '{}' or '{}': no tuner loaded",
            system_dir.display(),
            local_dir.display()
        ));
        return Ok(1);
    }
    let found = host.borrow_mut().netns.discover();
    logging::debug(&format!("found {} network namespaces besides the global one", found.len()));

    event_loop::run(&mut set, &ring, &sigfd).context("ring_buffer__poll")?;

    set.finalize_all();
    drop(set);
    drop(cgroup);
    Ok(0)
}
