//! What the query server and the metrics listener share about a client
//! connection in the mio loop: the stream (a Unix or TCP socket) and writing
//! a reply out without blocking.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};

/// An accepted client connection.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

/// How far [`write_out`] got.
pub enum Flush {
    /// The whole reply is written.
    Done,
    /// The socket is full: wait until it is writable again.
    WouldBlock,
    /// The client went away or the write failed: close.
    Failed,
}

/// Write `reply` from `*written` on until it is all out or the socket is
/// full; every write that makes progress pushes `*deadline` to `idle` from
/// now.
pub fn write_out(
    stream: &mut Stream,
    reply: &[u8],
    written: &mut usize,
    deadline: &mut Instant,
    idle: Duration,
) -> Flush {
    while *written < reply.len() {
        match stream.write(&reply[*written..]) {
            Ok(0) => return Flush::Failed,
            Ok(n) => {
                *written += n;
                *deadline = Instant::now() + idle;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Flush::Failed,
        }
    }
    Flush::Done
}
