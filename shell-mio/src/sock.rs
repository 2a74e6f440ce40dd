//! A socket with the interest it is registered with, and the token scheme that tells a
//! connection's two sockets apart.

use std::io;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use tidegate_core::Peer;

/// Set in the token of a connection's back-end socket; the client socket's token is
/// the bare connection key. Keys stay below this bit (and below the reserved tokens of
/// listeners and the waker, see `accept::FIRST_RESERVED_TOKEN`).
pub(crate) const BACKEND_BIT: usize = 1 << (usize::BITS - 2);

/// The token of connection `key`'s socket for `peer`.
pub(crate) fn token(key: usize, peer: Peer) -> Token {
    match peer {
        Peer::Client => Token(key),
        Peer::Backend => Token(key | BACKEND_BIT),
    }
}

/// The connection key and socket a (non-reserved) token names.
pub(crate) fn decode(token: Token) -> (usize, Peer) {
    if token.0 & BACKEND_BIT != 0 {
        (token.0 & !BACKEND_BIT, Peer::Backend)
    } else {
        (token.0, Peer::Client)
    }
}

/// A non-blocking TCP socket and its registration with the loop's poll.
///
/// The registration lives with the socket: when the socket is dropped (closing it
/// removes it from epoll) the record goes too, so a later socket in the same place is
/// registered afresh.
pub(crate) struct Sock {
    /// The socket.
    pub(crate) stream: TcpStream,
    registered: Option<Interest>,
}

impl Sock {
    /// A socket not yet registered.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Sock {
            stream,
            registered: None,
        }
    }

    /// A socket the caller already registered with `interest`.
    pub(crate) fn registered(stream: TcpStream, interest: Interest) -> Self {
        Sock {
            stream,
            registered: Some(interest),
        }
    }

    /// Registers the socket under `token` with `want`, or changes its interest to
    /// `want`; does nothing when it already has that interest.
    pub(crate) fn sync(
        &mut self,
        registry: &Registry,
        token: Token,
        want: Interest,
    ) -> io::Result<()> {
        match self.registered {
            Some(have) if have == want => return Ok(()),
            Some(_) => registry.reregister(&mut self.stream, token, want)?,
            None => registry.register(&mut self.stream, token, want)?,
        }
        self.registered = Some(want);
        Ok(())
    }

    /// Moves the registration to a new token, keeping (or setting) `want`.
    pub(crate) fn retoken(
        &mut self,
        registry: &Registry,
        token: Token,
        want: Interest,
    ) -> io::Result<()> {
        match self.registered {
            Some(_) => registry.reregister(&mut self.stream, token, want)?,
            None => registry.register(&mut self.stream, token, want)?,
        }
        self.registered = Some(want);
        Ok(())
    }
}
