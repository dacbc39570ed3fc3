//! Response heads written straight into the connection's output: no allocation per
//! response.

use super::date;
use crate::service::Conn;

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    PartialContent,
    MovedPermanently,
    NotModified,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PreconditionFailed,
    ContentTooLarge,
    UriTooLong,
    RangeNotSatisfiable,
    ExpectationFailed,
    HeadersTooLarge,
    InternalError,
    NotImplemented,
    Unavailable,
    VersionNotSupported,
}

impl Status {
    pub(crate) fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::PartialContent => 206,
            Status::MovedPermanently => 301,
            Status::NotModified => 304,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::PreconditionFailed => 412,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::RangeNotSatisfiable => 416,
            Status::ExpectationFailed => 417,
            Status::HeadersTooLarge => 431,
            Status::InternalError => 500,
            Status::NotImplemented => 501,
            Status::Unavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    /// The status line, with its CRLF.
    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::PartialContent => b"HTTP/1.1 206 Partial Content\r\n",
            Status::MovedPermanently => b"HTTP/1.1 301 Moved Permanently\r\n",
            Status::NotModified => b"HTTP/1.1 304 Not Modified\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::Forbidden => b"HTTP/1.1 403 Forbidden\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::PreconditionFailed => b"HTTP/1.1 412 Precondition Failed\r\n",
            Status::ContentTooLarge => b"HTTP/1.1 413 Content Too Large\r\n",
            Status::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\n",
            Status::RangeNotSatisfiable => b"HTTP/1.1 416 Range Not Satisfiable\r\n",
            Status::ExpectationFailed => b"HTTP/1.1 417 Expectation Failed\r\n",
            Status::HeadersTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::InternalError => b"HTTP/1.1 500 Internal Server Error\r\n",
            Status::NotImplemented => b"HTTP/1.1 501 Not Implemented\r\n",
            Status::Unavailable => b"HTTP/1.1 503 Service Unavailable\r\n",
            Status::VersionNotSupported => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        }
    }

    /// The status line's text, `404 Not Found`: the body of an error response (with a
    /// newline).
    pub(crate) fn text(self) -> &'static [u8] {
        let line = self.line();
        // Without "HTTP/1.1 " and the CRLF.
        &line[9..line.len() - 2]
    }
}

/// How the response tells the client about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// HTTP/1.1 keep-alive: nothing to say.
    Default,
    /// HTTP/1.0 keep-alive, asked for: `Connection: keep-alive`.
    KeepAlive,
    /// `Connection: close`; the connection closes after this response.
    Close,
}

/// Decimal digits of `n`, in a stack buffer.
pub(crate) struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    pub(crate) fn new(mut n: u64) -> Decimal {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { buf, start }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Writes one response head into a connection's output.
pub(crate) struct HeadWriter<'w, 'c> {
    conn: &'w mut Conn<'c>,
}

impl<'w, 'c> HeadWriter<'w, 'c> {
    /// Status line, `Server` and `Date`.
    pub(crate) fn start(conn: &'w mut Conn<'c>, status: Status) -> HeadWriter<'w, 'c> {
        conn.write(status.line());
        conn.write(b"Server: ringport\r\nDate: ");
        let now = conn.now();
        date::write_now_http(now, |d| conn.write(d));
        conn.write(b"\r\n");
        HeadWriter { conn }
    }

    /// One header field.
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        self.conn.write(name);
        self.conn.write(b": ");
        self.conn.write(value);
        self.conn.write(b"\r\n");
        self
    }

    /// `Content-Length` and the connection field, then the blank line that ends the head.
    pub(crate) fn finish(self, content_length: u64, persist: Persist) {
        self.conn.write(b"Content-Length: ");
        self.conn.write(Decimal::new(content_length).as_bytes());
        self.conn.write(match persist {
            Persist::Default => &b"\r\n\r\n"[..],
            Persist::KeepAlive => b"\r\nConnection: keep-alive\r\n\r\n",
            Persist::Close => b"\r\nConnection: close\r\n\r\n",
        });
    }
}

/// An error (or other short text) response: head and, unless `head_only`, the body.
/// Returns the body bytes written.
pub(crate) fn short(
    conn: &mut Conn<'_>,
    status: Status,
    persist: Persist,
    head_only: bool,
    extra: &[(&[u8], &[u8])],
) -> u64 {
    let text = status.text();
    let len = text.len() as u64 + 1;
    let mut w = HeadWriter::start(conn, status);
    w.field(b"Content-Type", b"text/plain; charset=utf-8");
    for (name, value) in extra {
        w.field(name, value);
    }
    w.finish(len, persist);
    if head_only {
        return 0;
    }
    conn.write(text);
    conn.write(b"\n");
    len
}

/// The page `/` answers with when no root is served.
pub(crate) const BUILT_IN_PAGE: &[u8] = b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ringport</title></head>\n<body><h1>ringport</h1><p>HTTP/1.1 is served here. Give <code>--root DIR</code> to serve files; <a href=\"/plaintext\">/plaintext</a> answers a short text.</p></body></html>\n";

/// The body of `/plaintext` when no root is served.
pub(crate) const PLAINTEXT: &[u8] = b"Hello, World!";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 612, 1 << 20, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn error_bodies_are_the_reason() {
        assert_eq!(Status::NotFound.text(), b"404 Not Found");
        assert_eq!(
            Status::HeadersTooLarge.text(),
            b"431 Request Header Fields Too Large"
        );
    }
}
