//! The `[metrics] listen` endpoint: `GET /metrics` answers the process's metrics
//! registry ([`tidegate_store::metrics`]) in the Prometheus text format 0.0.4.
//!
//! A deliberately small HTTP/1.0 and 1.1 server (RFC 9112) on one thread of its own
//! with blocking std sockets, so a scrape never touches an event loop: one request per
//! connection (`Connection: close`), at most [`MAX_REQUEST`] bytes of request head,
//! [`IO_TIMEOUT`] to send it. It has no authentication: bind it to a private address
//! (loopback, a management network). [`observe`] wraps sessions to count them and
//! writes the login log line ([`login`]).

pub mod login;
pub mod observe;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tidegate_store::metrics;

/// The largest request head read (request line and headers); a longer one is
/// answered 400. A scraper sends a few hundred bytes.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request, and to read the answer. One slow
/// client delays the next scrape by at most this much, since requests are served one
/// at a time.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` now (so a taken port fails the start) and serves it on a thread of
/// its own. Returns the bound address.
pub fn serve(addr: SocketAddr) -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = answer(stream) {
                            log::debug!("metrics: {e}");
                        }
                    }
                    Err(e) => {
                        log::warn!("metrics: accept: {e}");
                        // Out of descriptors: do not spin.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| format!("metrics: cannot start its thread: {e}"))?;
    log::info!("listening: metrics http://{bound}/metrics");
    Ok(bound)
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (`head`: `HEAD`, headers only).
    Metrics { head: bool },
    /// 404: another path.
    NotFound,
    /// 405: another method on `/metrics`.
    MethodNotAllowed,
    /// 400: not an HTTP/1.x request line, or a head over [`MAX_REQUEST`].
    BadRequest,
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let route = match read_head(&mut stream)? {
        Some(head) => route(&head),
        None => Route::BadRequest,
    };
    let (status, body, head_only) = match route {
        Route::Metrics { head } => ("200 OK", metrics::global().render(Instant::now()), head),
        Route::NotFound => ("404 Not Found", "not found: try /metrics\n".into(), false),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "only GET and HEAD\n".into(),
            false,
        ),
        Route::BadRequest => ("400 Bad Request", "bad request\n".into(), false),
    };
    let allow = if route == Route::MethodNotAllowed {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let content_type = if status == "200 OK" {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// The request head up to its blank line; `None` when it exceeds [`MAX_REQUEST`] or
/// the client closed before finishing it.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&head).filter(|end| *end <= MAX_REQUEST) {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// Where the head ends: after the first empty line (CRLF CRLF, or bare LF LF, which
/// RFC 9112 §2.2 lets a server accept).
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Routes a request head by its request line (RFC 9112 §3: method SP target SP
/// version).
fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_routed() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?name[]=x HTTP/1.0\n\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics HTTP/2.0\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"get /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
