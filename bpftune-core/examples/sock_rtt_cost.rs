//! Benchmark helper for `bench/verdicts/run.sh`: what one RTT-guard sample
//! (`sock_rtt::sample`, a `sock_diag` dump of the namespace's established
//! TCP sockets) costs with N sockets open, of which a tenth move data.
//!
//! Usage: `sock_rtt_cost SOCKETS REPEATS` (run as root in a fresh network
//! namespace, or anywhere for loopback-only connections). Prints one
//! Markdown table row: sockets, active, mean wall µs per dump, CPU µs per
//! dump (this process, kernel time included), sockets looked at.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use bpftune_core::sock_rtt;

fn cpu_us() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() -> std::io::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (sockets, repeats) = (args.first().copied().unwrap_or(0), args.get(1).copied().unwrap_or(50));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut pairs = Vec::new();
    for _ in 0..sockets / 2 {
        let c = TcpStream::connect(addr)?;
        let (s, _) = listener.accept()?;
        pairs.push((c, s));
    }
    // A tenth of the pairs move data now and again (both ends active).
    let active: Vec<usize> = (0..pairs.len()).step_by(10).collect();
    let mut buf = [0u8; 1024];
    let mut poke = |pairs: &mut Vec<(TcpStream, TcpStream)>| -> std::io::Result<()> {
        for &i in &active {
            let (c, s) = &mut pairs[i];
            c.write_all(&buf)?;
            s.read_exact(&mut buf)?;
        }
        Ok(())
    };
    poke(&mut pairs)?;
    let _ = sock_rtt::sample()?;
    let (t0, c0) = (Instant::now(), cpu_us());
    let mut last = sock_rtt::RttSample::default();
    for _ in 0..repeats {
        last = sock_rtt::sample()?;
    }
    let wall = t0.elapsed().as_secs_f64() * 1e6 / repeats as f64;
    let cpu = (cpu_us() - c0) / repeats as f64;
    println!("| {sockets} | {} | {wall:.0} | {cpu:.0} | {} |", last.active, last.seen);
    poke(&mut pairs)?;
    Ok(())
}
