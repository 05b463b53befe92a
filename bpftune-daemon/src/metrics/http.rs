//! `--metrics-listen ADDR`: `GET /metrics` over HTTP/1.x on a loopback
//! TCP address or a Unix socket, served from the daemon's mio loop like the
//! query socket. Every connection is non-blocking with a bounded request
//! (head only, [`MAX_REQUEST`] bytes), an idle deadline and a connection
//! cap; one request per connection (`Connection: close`, then a bounded
//! lingering close so a client still sending gets its reply, not a
//! reset). A slow or
//! silent client costs a slot for [`IDLE_TIMEOUT`] and never blocks the
//! loop. Non-loopback addresses are refused unless the administrator says
//! otherwise (`--metrics-allow-remote`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};

use super::Format;
use crate::conn::{Flush, Stream, write_out};
use crate::logging;

/// Longest request head (request line and headers) accepted.
pub const MAX_REQUEST: usize = 8192;
/// Bytes read and discarded after the reply before closing anyway.
const MAX_DRAIN: usize = 64 * 1024;
/// Connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection that makes no progress for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Token of the listener; connections use `CONN_BASE + id`, below the
/// query server's range (`query::CONN_BASE`).
pub const LISTEN_TOKEN: Token = Token(12);
pub const CONN_BASE: usize = 1 << 19;
const CONN_IDS: usize = 1 << 18;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parse `--metrics-listen`: `127.0.0.1:PORT`, `[::1]:PORT` or an absolute
/// Unix socket path. A non-loopback address needs `allow_remote`.
pub fn parse_listen(s: &str, allow_remote: bool) -> Result<ListenAddr, String> {
    if s.starts_with('/') {
        return Ok(ListenAddr::Unix(PathBuf::from(s)));
    }
    let Ok(addr) = s.parse::<SocketAddr>() else {
        return Err(format!(
            "bad --metrics-listen '{s}': give 127.0.0.1:PORT, [::1]:PORT or an absolute Unix socket path"
        ));
    };
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(format!(
            "refusing to serve metrics on {addr}: it is not a loopback address, and the metrics tell anyone who \
             can reach it which sysctls bpftune changed in which namespace; use 127.0.0.1:PORT, [::1]:PORT or a \
             Unix socket path (and a proxy or node_exporter for remote scrapes), or pass --metrics-allow-remote \
             to listen there anyway"
        ));
    }
    Ok(ListenAddr::Tcp(addr))
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

struct Conn {
    stream: Stream,
    request: Vec<u8>,
    reply: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
    /// The reply is out and our side shut: reading what the client still
    /// sends until it closes (or the deadline, or [`MAX_DRAIN`]).
    drained: Option<usize>,
    /// Draining began with the socket registered WRITABLE: switch it.
    draining_since_write: bool,
}

/// The listener and the connections in flight.
pub struct MetricsServer {
    listener: Listener,
    local: ListenAddr,
    conns: HashMap<usize, Conn>,
    next_id: usize,
}

/// What a complete request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (or HEAD), with the format the client accepts.
    Metrics { head: bool, format: Format },
    /// Anything else: the status line and a message.
    Error { status: &'static str, message: &'static str },
}

/// Index just past the end of the request head (`\r\n\r\n` or `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parse a complete request head.
pub fn parse_request(head: &[u8]) -> Request {
    let bad = Request::Error { status: "400 Bad Request", message: "bad request\n" };
    let Ok(text) = std::str::from_utf8(head) else { return bad };
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let Some(first) = lines.next() else { return bad };
    let parts: Vec<&str> = first.split(' ').collect();
    let [method, target, version] = parts.as_slice() else { return bad };
    if !version.starts_with("HTTP/1.") {
        return Request::Error { status: "505 HTTP Version Not Supported", message: "HTTP/1.x only\n" };
    }
    let head = match *method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::Error { status: "405 Method Not Allowed", message: "only GET and HEAD\n" },
    };
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Request::Error { status: "404 Not Found", message: "bpftune serves /metrics only\n" };
    }
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim())
        .unwrap_or_default();
    Request::Metrics { head, format: Format::from_accept(accept) }
}

/// The whole HTTP response.
fn response(status: &str, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" }
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Bind a Unix socket at `path` (mode 0660: root and its group may
/// scrape), replacing a stale socket but never another kind of file.
fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket '{}': {e}", path.display()))?
        }
        Ok(_) => return Err(format!("'{}' exists and is not a socket; not replacing it", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot use '{}': {e}", path.display())),
    }
    // SAFETY: umask only changes the process file-creation mask; restored
    // right after. No other thread creates files at start-up.
    let old = unsafe { libc::umask(0o117) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.map_err(|e| format!("cannot listen on '{}': {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of '{}': {e}", path.display()))?;
    Ok(l)
}

enum Next {
    Keep,
    /// The reply is out: wait for the client to close.
    Drain,
    Close,
}

impl MetricsServer {
    /// Listen on `addr`. Errors are the log line (the daemon exits 1).
    pub fn bind(addr: &ListenAddr) -> Result<Self, String> {
        let (listener, local) = match addr {
            ListenAddr::Tcp(a) => {
                let l = TcpListener::bind(*a).map_err(|e| format!("cannot serve metrics on {a}: {e}"))?;
                let local = l.local_addr().map(ListenAddr::Tcp).unwrap_or_else(|_| addr.clone());
                (Listener::Tcp(l), local)
            }
            ListenAddr::Unix(p) => (Listener::Unix(bind_unix(p)?, p.clone()), addr.clone()),
        };
        Ok(Self { listener, local, conns: HashMap::new(), next_id: 0 })
    }

    /// The address bound (the real port if 0 was asked for).
    pub fn local(&self) -> &ListenAddr {
        &self.local
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        match &mut self.listener {
            Listener::Tcp(l) => registry.register(l, LISTEN_TOKEN, Interest::READABLE),
            Listener::Unix(l, _) => registry.register(l, LISTEN_TOKEN, Interest::READABLE),
        }
    }

    /// Does this token belong to the metrics server?
    pub fn owns(token: Token) -> bool {
        token == LISTEN_TOKEN || (CONN_BASE..CONN_BASE + CONN_IDS).contains(&token.0)
    }

    /// Earliest connection deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// Close connections that made no progress in time.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            logging::debug("metrics connection timed out; closing it");
            self.close(registry, id);
        }
    }

    fn close(&mut self, registry: &Registry, id: usize) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = registry.deregister(c.stream.source());
        }
    }

    /// Handle a readiness event; `render` builds the metrics text in the
    /// format asked for once a request is complete.
    pub fn handle(&mut self, registry: &Registry, token: Token, render: &dyn Fn(Format) -> String) {
        if token == LISTEN_TOKEN {
            self.accept(registry);
            return;
        }
        let id = token.0 - CONN_BASE;
        let next = match self.conns.get_mut(&id) {
            Some(c) => Self::progress(c, render),
            None => return,
        };
        match next {
            Next::Close => self.close(registry, id),
            Next::Drain => {
                if let Some(c) = self.conns.get_mut(&id) {
                    if c.draining_since_write {
                        c.draining_since_write = false;
                        let _ = registry.reregister(c.stream.source(), token, Interest::READABLE);
                    }
                }
            }
            Next::Keep => {
                if let Some(c) = self.conns.get_mut(&id) {
                    if c.reply.is_some() {
                        let _ = registry.reregister(c.stream.source(), token, Interest::WRITABLE);
                    }
                }
            }
        }
    }

    fn accept_one(&self) -> Option<io::Result<Stream>> {
        let r = match &self.listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }

    fn free_id(&mut self) -> usize {
        loop {
            let id = self.next_id;
            self.next_id = (self.next_id + 1) % CONN_IDS;
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    fn accept(&mut self, registry: &Registry) {
        while let Some(r) = self.accept_one() {
            let stream = match r {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    logging::debug(&format!("metrics accept: {e}"));
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                logging::debug("too many metrics connections; closing a new one");
                continue; // dropped: closed
            }
            let id = self.free_id();
            let mut conn = Conn {
                stream,
                request: Vec::new(),
                reply: None,
                written: 0,
                deadline: Instant::now() + IDLE_TIMEOUT,
                drained: None,
                draining_since_write: false,
            };
            if registry.register(conn.stream.source(), Token(CONN_BASE + id), Interest::READABLE).is_ok() {
                self.conns.insert(id, conn);
            }
        }
    }

    fn answer(request: &[u8], render: &dyn Fn(Format) -> String) -> Vec<u8> {
        match parse_request(request) {
            Request::Metrics { head, format } => response("200 OK", format.content_type(), &render(format), head),
            Request::Error { status, message } => response(status, "text/plain; charset=utf-8", message, false),
        }
    }

    fn progress(c: &mut Conn, render: &dyn Fn(Format) -> String) -> Next {
        if let Some(drained) = c.drained.as_mut() {
            let mut buf = [0u8; 4096];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => return Next::Close,
                    Ok(n) => {
                        *drained += n;
                        if *drained > MAX_DRAIN {
                            return Next::Close;
                        }
                    }
                    // Still READABLE only (a WRITABLE interest would fire
                    // at once, again and again).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Drain,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Next::Close,
                }
            }
        }
        if c.reply.is_none() {
            let mut buf = [0u8; 1024];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        // The client closed its side before a whole head.
                        if c.request.is_empty() {
                            return Next::Close;
                        }
                        let mut req = std::mem::take(&mut c.request);
                        req.extend_from_slice(b"\r\n\r\n");
                        c.reply = Some(Self::answer(&req, render));
                        break;
                    }
                    Ok(n) => {
                        c.deadline = Instant::now() + IDLE_TIMEOUT;
                        c.request.extend_from_slice(&buf[..n]);
                        if let Some(end) = head_end(&c.request) {
                            c.reply = Some(Self::answer(&c.request[..end], render));
                            break;
                        }
                        if c.request.len() > MAX_REQUEST {
                            c.reply = Some(response(
                                "431 Request Header Fields Too Large",
                                "text/plain; charset=utf-8",
                                "request too long\n",
                                false,
                            ));
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
        // Our side is done; closing now with unread input would reset the
        // connection and could cost the client its reply.
        if c.stream.shutdown_write().is_err() {
            return Next::Close;
        }
        c.drained = Some(0);
        c.draining_since_write = true;
        Next::Drain
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use mio::{Events, Poll};

    #[test]
    fn only_loopback_without_the_flag() {
        assert_eq!(parse_listen("127.0.0.1:9555", false), Ok(ListenAddr::Tcp("127.0.0.1:9555".parse().expect("addr"))));
        assert!(matches!(parse_listen("[::1]:9555", false), Ok(ListenAddr::Tcp(_))));
        assert_eq!(
            parse_listen("/run/bpftune/metrics.sock", false),
            Ok(ListenAddr::Unix("/run/bpftune/metrics.sock".into()))
        );
        for remote in ["0.0.0.0:9555", "[::]:9555", "192.0.2.1:9555", "[::ffff:127.0.0.1]:9555"] {
            let e = parse_listen(remote, false).expect_err(remote);
            assert!(e.contains("not a loopback address") && e.contains("--metrics-allow-remote"), "{e}");
            assert!(parse_listen(remote, true).is_ok(), "{remote}");
        }
        for bad in ["localhost:9555", "9555", "metrics.sock", ""] {
            assert!(parse_listen(bad, false).expect_err(bad).starts_with("bad --metrics-listen"));
        }
    }

    #[test]
    fn requests() {
        let om = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n";
        assert_eq!(parse_request(om.as_bytes()), Request::Metrics { head: false, format: Format::OpenMetrics });
        assert_eq!(
            parse_request(b"HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Request::Metrics { head: true, format: Format::Prometheus }
        );
        assert!(matches!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::Error { status: "404 Not Found", .. }));
        assert!(matches!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::Error { status: "405 Method Not Allowed", .. }
        ));
        assert!(matches!(parse_request(b"\x01\x02\r\n\r\n"), Request::Error { status: "400 Bad Request", .. }));
        assert!(matches!(
            parse_request(b"GET /metrics SPDY/3\r\n\r\n"),
            Request::Error { status: "505 HTTP Version Not Supported", .. }
        ));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        let r = String::from_utf8(response("200 OK", "text/plain", "abc", true)).expect("utf8");
        assert!(r.contains("Content-Length: 3\r\n") && r.ends_with("\r\n\r\n"), "{r}");
    }

    fn get(addr: SocketAddr, parts: Vec<Vec<u8>>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            for p in parts {
                let _ = s.write_all(&p);
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
    }

    #[test]
    fn slow_oversized_and_silent_clients_never_block() {
        let mut server = MetricsServer::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr"))).expect("bind");
        let ListenAddr::Tcp(addr) = server.local().clone() else { panic!("tcp") };
        assert_ne!(addr.port(), 0);
        let mut poll = Poll::new().expect("poll");
        server.register(poll.registry()).expect("register");
        let render =
            |f: Format| if f == Format::OpenMetrics { "om 1\n# EOF\n".to_string() } else { "p 1\n".to_string() };

        let _silent = std::net::TcpStream::connect(addr).expect("connect");
        let clients = vec![
            get(
                addr,
                vec![b"GET /met".to_vec(), b"rics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n".to_vec()],
            ),
            get(addr, vec![b"GET /metrics HTTP/1.1\r\n".to_vec(), vec![b'x'; 4 * MAX_REQUEST]]),
            get(addr, vec![b"GET /metrics HTTP/1.0\r\n\r\n".to_vec()]),
            get(addr, vec![b"GET /other HTTP/1.0\r\n\r\n".to_vec()]),
        ];
        let mut events = Events::with_capacity(64);
        let deadline = Instant::now() + Duration::from_secs(20);
        while clients.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50))).expect("poll");
            for ev in events.iter() {
                assert!(MetricsServer::owns(ev.token()));
                server.handle(poll.registry(), ev.token(), &render);
            }
            server.expire(poll.registry(), Instant::now());
        }
        let r: Vec<String> = clients.into_iter().map(|c| c.join().expect("client")).collect();
        assert!(r[0].starts_with("HTTP/1.1 200 OK\r\n") && r[0].ends_with("\r\n\r\nom 1\n# EOF\n"), "{}", r[0]);
        assert!(r[0].contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{}", r[0]);
        assert!(r[1].starts_with("HTTP/1.1 431 "), "{}", r[1]);
        assert!(r[2].ends_with("\r\n\r\np 1\n") && r[2].contains("text/plain; version=0.0.4"), "{}", r[2]);
        assert!(r[3].starts_with("HTTP/1.1 404 "), "{}", r[3]);
        // The clients closed: their lingering connections end too.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.conns.len() > 1 && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50))).expect("poll");
            for ev in events.iter() {
                server.handle(poll.registry(), ev.token(), &render);
            }
        }
        assert_eq!(server.conns.len(), 1, "only the silent client is left");
        // A client that has its reply but keeps its side open costs no
        // wake-ups while it lingers (no spinning on a writable socket).
        let mut lingering = std::net::TcpStream::connect(addr).expect("connect");
        lingering.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
        let mut wakeups = 0;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        lingering.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        for _ in 0..40 {
            poll.poll(&mut events, Some(Duration::from_millis(25))).expect("poll");
            for ev in events.iter() {
                wakeups += 1;
                server.handle(poll.registry(), ev.token(), &render);
            }
            if let Ok(n) = lingering.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert!(String::from_utf8_lossy(&got).ends_with("p 1\n"), "{}", String::from_utf8_lossy(&got));
        assert!(wakeups <= 4, "{wakeups} wake-ups for one lingering client");
        assert_eq!(server.conns.len(), 2, "the lingering client waits for its deadline");
        server.expire(poll.registry(), Instant::now() + IDLE_TIMEOUT);
        assert!(server.conns.is_empty());
        assert!(!MetricsServer::owns(Token(crate::query::CONN_BASE)));
    }

    #[test]
    fn unix_socket_is_replaced_only_if_stale() {
        let dir = std::env::temp_dir().join(format!("bpftune-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("m.sock");
        let s = MetricsServer::bind(&ListenAddr::Unix(path.clone())).expect("bind");
        assert_eq!(std::fs::metadata(&path).expect("sock").permissions().mode() & 0o777, 0o660);
        std::mem::forget(s); // leaves a stale socket, as a crash would
        let s = MetricsServer::bind(&ListenAddr::Unix(path.clone())).expect("rebind over a stale socket");
        drop(s);
        assert!(!path.exists());
        std::fs::write(&path, "not a socket").expect("write");
        assert!(MetricsServer::bind(&ListenAddr::Unix(path.clone())).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
