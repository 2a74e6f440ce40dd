//! Opening a back-end connection without blocking the loop, optionally from a chosen
//! source address (the sans-IO contract's `Action::Connect`).

use std::io;
use std::net::{IpAddr, SocketAddr};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::net::TcpStream;

/// Starts a TCP connection to `addr`, first binding to `source` (port chosen by the
/// kernel) when one is given. Returns a non-blocking socket whose connect is in
/// progress: the caller waits for it to become writable and then asks [`outcome`].
pub(crate) fn start(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let fd = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
    if let Some(ip) = source {
        rustix::net::bind(&fd, &SocketAddr::new(ip, 0))?;
    }
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = TcpStream::from(fd);
    // Proxied commands and replies are small; Nagle would delay each by an RTT.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Whether a connect started by [`start`] has finished: `Ok(true)` connected,
/// `Ok(false)` still in progress (a spurious wake-up), `Err` failed.
pub(crate) fn outcome(socket: &TcpStream) -> io::Result<bool> {
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}
