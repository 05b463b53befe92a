//! The query interface's transport: the server side, served from the
//! daemon's mio loop (a root-only Unix socket, plus 127.0.0.1:PORT with
//! `-p`), and the `-q VERB` client.
//!
//! Every connection is non-blocking with a bounded request buffer and an
//! idle deadline: many clients, partial reads and writes, silent clients,
//! oversized or garbage requests cost at most a connection slot for a few
//! seconds and never block tuning. A request ends at NUL, newline or EOF.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::conn::{Flush, Stream, write_out};
use crate::logging;
use crate::replies::{self, ReplyCtx};

/// File name of the query socket in the run directory.
pub const SOCKET_NAME: &str = "query.sock";
/// File the original's clients read the TCP port from (written with `-p`).
pub const PORT_FILE: &str = "server-port";
/// Longest request accepted (the original read at most 80 bytes).
pub const MAX_REQUEST: usize = 1024;
/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that makes no progress for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The client gives up after this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Tokens for the listeners; connections use `CONN_BASE + id`.
pub const UNIX_TOKEN: Token = Token(10);
pub const TCP_TOKEN: Token = Token(11);
pub const CONN_BASE: usize = 1 << 20;

struct Conn {
    stream: Stream,
    request: Vec<u8>,
    reply: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

/// What to do with a connection after an event.
enum Next {
    Keep,
    Close,
}

/// The listeners and the connections in flight.
pub struct QueryServer {
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<TcpListener>,
    port_file: Option<PathBuf>,
    conns: HashMap<usize, Conn>,
    next_id: usize,
}

/// Bind the Unix socket at `path`, mode 0600 (root only).
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    // We hold the single-instance lock: a socket file left here is stale.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // SAFETY: umask only changes the process file-creation mask; restored
    // right after. No other thread creates files at start-up.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

impl QueryServer {
    /// Listen on `<run_dir>/query.sock`, and on 127.0.0.1:`port` if given.
    /// Errors are the log line to print (the daemon then exits 1).
    pub fn bind(run_dir: &Path, port: Option<u16>) -> Result<Self, String> {
        let sock = run_dir.join(SOCKET_NAME);
        let unix = bind_unix(&sock).map_err(|e| format!("could not create query socket '{}': {e}", sock.display()))?;
        logging::debug(&format!("query server listening on '{}'", sock.display()));
        let port_file = run_dir.join(PORT_FILE);
        let _ = std::fs::remove_file(&port_file);
        let mut server =
            Self { unix: Some((unix, sock)), tcp: None, port_file: None, conns: HashMap::new(), next_id: 0 };
        if let Some(port) = port {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let std_listener = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("could not bind server port {port} on 127.0.0.1: {e}"))?;
            std_listener.set_nonblocking(true).map_err(|e| format!("could not bind server port {port}: {e}"))?;
            let bound = std_listener.local_addr().map(|a| a.port()).unwrap_or(port);
            server.tcp = Some(TcpListener::from_std(std_listener));
            if let Err(e) = std::fs::write(&port_file, format!("{bound}\n")) {
                logging::warn(&format!("could not write server port {bound} to '{}': {e}", port_file.display()));
            } else {
                server.port_file = Some(port_file);
            }
            logging::debug(&format!("server listening on port {bound} (127.0.0.1 only)"));
        }
        Ok(server)
    }

    /// Register the listeners with the event loop.
    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        if let Some((l, _)) = self.unix.as_mut() {
            registry.register(l, UNIX_TOKEN, Interest::READABLE)?;
        }
        if let Some(l) = self.tcp.as_mut() {
            registry.register(l, TCP_TOKEN, Interest::READABLE)?;
        }
        Ok(())
    }

    /// Does this token belong to the query server?
    pub fn owns(token: Token) -> bool {
        token == UNIX_TOKEN || token == TCP_TOKEN || token.0 >= CONN_BASE
    }

    /// Earliest connection deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// Close connections that made no progress in time.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            logging::debug("query connection timed out; closing it");
            self.close(registry, id);
        }
    }

    fn close(&mut self, registry: &Registry, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = registry.deregister(c.stream.source());
        }
    }

    /// Handle a readiness event for `token`.
    pub fn handle(&mut self, registry: &Registry, token: Token, ctx: &ReplyCtx<'_>) {
        match token {
            UNIX_TOKEN | TCP_TOKEN => self.accept(registry, token),
            Token(t) if t >= CONN_BASE => {
                let id = t - CONN_BASE;
                let next = match self.conns.get_mut(&id) {
                    Some(c) => Self::progress(c, ctx),
                    None => return,
                };
                match next {
                    Next::Close => self.close(registry, id),
                    Next::Keep => {
                        if let Some(c) = self.conns.get_mut(&id) {
                            if c.reply.is_some() {
                                let _ = registry.reregister(c.stream.source(), token, Interest::WRITABLE);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn accept(&mut self, registry: &Registry, token: Token) {
        loop {
            let stream = match token {
                UNIX_TOKEN => match self.unix.as_ref().map(|(l, _)| l.accept()) {
                    Some(Ok((s, _))) => {
                        if !peer_is_root(&s) {
                            logging::debug("query from a non-root peer refused");
                            continue;
                        }
                        Stream::Unix(s)
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) => {
                        logging::debug(&format!("query accept: {e}"));
                        return;
                    }
                    None => return,
                },
                _ => match self.tcp.as_ref().map(TcpListener::accept) {
                    Some(Ok((s, _))) => Stream::Tcp(s),
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Some(Err(e)) => {
                        logging::debug(&format!("query accept: {e}"));
                        return;
                    }
                    None => return,
                },
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                logging::debug("too many query connections; closing a new one");
                continue; // dropped: closed
            }
            let id = self.next_id;
            self.next_id = (self.next_id + 1) % (usize::MAX - CONN_BASE);
            let mut conn =
                Conn { stream, request: Vec::new(), reply: None, written: 0, deadline: Instant::now() + IDLE_TIMEOUT };
            if registry.register(conn.stream.source(), Token(CONN_BASE + id), Interest::READABLE).is_ok() {
                self.conns.insert(id, conn);
            }
        }
    }

    /// Read what is there; once the request is complete, build the reply
    /// and write what the socket takes.
    fn progress(c: &mut Conn, ctx: &ReplyCtx<'_>) -> Next {
        if c.reply.is_none() {
            let mut buf = [0u8; 512];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.reply = Some(Self::answer(&c.request, ctx));
                        break;
                    }
                    Ok(n) => {
                        c.deadline = Instant::now() + IDLE_TIMEOUT;
                        let chunk = &buf[..n];
                        if let Some(end) = chunk.iter().position(|&b| b == 0 || b == b'\n') {
                            c.request.extend_from_slice(&chunk[..end]);
                            if c.request.len() > MAX_REQUEST {
                                c.reply = Some(replies::error_reply("request too long").into_bytes());
                            } else {
                                c.reply = Some(Self::answer(&c.request, ctx));
                            }
                            break;
                        }
                        c.request.extend_from_slice(chunk);
                        if c.request.len() > MAX_REQUEST {
                            c.reply = Some(
                                replies::error_reply(&format!("request too long (at most {MAX_REQUEST} bytes)"))
                                    .into_bytes(),
                            );
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Next::Close,
                }
            }
        }
        let Some(reply) = c.reply.as_ref() else { return Next::Keep };
        match write_out(&mut c.stream, reply, &mut c.written, &mut c.deadline, IDLE_TIMEOUT) {
            Flush::Done => {}
            Flush::WouldBlock => return Next::Keep,
            Flush::Failed => return Next::Close,
        }
        Next::Close
    }

    fn answer(request: &[u8], ctx: &ReplyCtx<'_>) -> Vec<u8> {
        let text = String::from_utf8_lossy(request);
        replies::reply(&text, ctx).into_bytes()
    }
}

impl Drop for QueryServer {
    fn drop(&mut self) {
        if let Some((_, path)) = self.unix.take() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(p) = self.port_file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// SO_PEERCRED: only root (or the daemon's own user) may query over the
/// Unix socket (the socket is 0600 too; this also holds if someone loosens
/// its mode).
fn peer_is_root(s: &UnixStream) -> bool {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    rc == 0 && (cred.uid == 0 || cred.uid == unsafe { libc::geteuid() })
}

/// `(-errno) & 0xff`, the original's client exit status.
fn errno_status(e: &io::Error) -> u8 {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    (errno.wrapping_neg() & 0xff) as u8
}

/// The `-q VERB` client: send the verb, print the whole reply.
pub fn client(run_dir: &Path, port: Option<u16>, verb: &str) -> u8 {
    let mut request = verb.as_bytes().to_vec();
    request.push(0);
    let result = match port {
        Some(port) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match std::net::TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT) {
                Ok(s) => exchange(s, &request, verb, &format!("port {port}")),
                Err(e) => {
                    logging::err(&format!("could not connect to server (port {port}): {e}"));
                    return errno_status(&e);
                }
            }
        }
        None => {
            let path = run_dir.join(SOCKET_NAME);
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(s) => exchange(s, &request, verb, &format!("socket '{}'", path.display())),
                Err(e) => {
                    logging::err(&format!("could not connect to server (socket '{}'): {e}", path.display()));
                    logging::err(&format!("could not get bpftune reply for request '{verb}'; is bpftune running?"));
                    return errno_status(&e);
                }
            }
        }
    };
    match result {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            let text = reply.strip_suffix('\0').unwrap_or(&reply);
            let _ = out.write_all(text.as_bytes());
            if !text.is_empty() && !text.ends_with('\n') {
                let _ = out.write_all(b"\n");
            }
            let _ = out.flush();
            // release, hold, loglevel and reload-limits say so when they failed.
            if text.starts_with(crate::operator::ERROR_PREFIX) { 1 } else { 0 }
        }
        Err(status) => status,
    }
}

trait ClientStream: Read + Write {
    fn set_timeouts(&self, t: Duration) -> io::Result<()>;
    fn shutdown_write(&self) -> io::Result<()>;
}

impl ClientStream for std::net::TcpStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl ClientStream for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

fn exchange(mut s: impl ClientStream, request: &[u8], verb: &str, to: &str) -> Result<String, u8> {
    let _ = s.set_timeouts(CLIENT_TIMEOUT);
    if let Err(e) = s.write_all(request) {
        logging::err(&format!("could not send req '{verb}' to server ({to}): {e}"));
        return Err(errno_status(&e));
    }
    let _ = s.shutdown_write();
    let mut reply = Vec::new();
    if let Err(e) = s.read_to_end(&mut reply) {
        logging::err(&format!("could not recv reply to req '{verb}' to server ({to}): {e}"));
        return Err(errno_status(&e));
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpftune_core::host::{HostConfig, HostState, SharedFds};
    use bpftune_core::netns::NetnsRegistry;
    use bpftune_core::sysctl::ProcSysctl;
    use bpftune_core::{LearningRate, SupportLevel};
    use mio::{Events, Poll};
    use std::cell::RefCell;
    use std::rc::Rc;

    fn tuner_set() -> crate::tuners::TunerSet {
        let config = HostConfig {
            debug: false,
            advise: false,
            learning_rate: LearningRate::new(4),
            support: SupportLevel::Normal,
            daemon_pid: std::process::id(),
            netns_cookie_supported: true,
        };
        let host = HostState::new(
            config,
            NetnsRegistry::new(1, "/proc"),
            Box::new(ProcSysctl::default()),
            Rc::new(|_, _: &str| {}),
        );
        let fds = SharedFds { ringbuf_fd: -1, stats_map_fd: -1, cgroup_fd: -1 };
        crate::tuners::TunerSet::new(Rc::new(RefCell::new(host)), fds, Vec::new(), false)
    }

    fn client(dir: &Path, parts: Vec<Vec<u8>>) -> std::thread::JoinHandle<String> {
        let path = dir.join(SOCKET_NAME);
        std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect");
            for p in parts {
                let _ = s.write_all(&p);
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
    }

    #[test]
    fn partial_garbage_oversized_and_silent_clients() {
        let dir = std::env::temp_dir().join(format!("bpftune-query-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut server = QueryServer::bind(&dir, None).expect("bind");
        let mode = std::fs::metadata(dir.join(SOCKET_NAME)).expect("socket").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut poll = Poll::new().expect("poll");
        server.register(poll.registry()).expect("register");
        let set = tuner_set();
        let recent = crate::replies::Recent::default();
        let ctx = ReplyCtx { set: &set, journal: None, recent: &recent, stats: None, identities: None };

        let _silent = std::os::unix::net::UnixStream::connect(dir.join(SOCKET_NAME)).expect("connect");
        let clients = vec![
            client(&dir, vec![b"he".to_vec(), b"lp\0".to_vec()]),
            client(&dir, vec![vec![b'x'; 4 * MAX_REQUEST]]),
            client(&dir, vec![b"\x01\x02garbage\n".to_vec()]),
            client(&dir, vec![b"jtunables".to_vec()]),
        ];
        let mut events = Events::with_capacity(64);
        let deadline = Instant::now() + Duration::from_secs(20);
        while clients.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50))).expect("poll");
            for ev in events.iter() {
                server.handle(poll.registry(), ev.token(), &ctx);
            }
            server.expire(poll.registry(), Instant::now());
        }
        let replies: Vec<String> = clients.into_iter().map(|c| c.join().expect("client")).collect();
        assert!(replies[0].contains("list supported queries"), "{}", replies[0]);
        assert!(replies[1].starts_with("request too long"), "{}", replies[1]);
        assert!(replies[2].starts_with("unknown request '??garbage'"), "{}", replies[2]);
        let v: serde_json::Value = serde_json::from_str(&replies[3]).expect("json");
        assert_eq!(v, serde_json::json!({}));
        // The silent client is still connected (until its deadline) and
        // held nobody up.
        assert_eq!(server.conns.len(), 1);
        server.expire(poll.registry(), Instant::now() + IDLE_TIMEOUT);
        assert!(server.conns.is_empty());
        drop(server);
        assert!(!dir.join(SOCKET_NAME).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
