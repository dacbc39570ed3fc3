//! HTTP/1.1: static files under a root directory (or a built-in page and `/plaintext`).
//!
//! - HTTP/1.1 and 1.0, keep-alive (1.1 by default, 1.0 when asked), pipelined requests
//!   answered in order, `Connection: close` honoured.
//! - `GET` and `HEAD` are served; any other method is answered 405 with `Allow`. Request
//!   bodies (`Content-Length` or chunked) are read and discarded up to
//!   [`HttpBuilder::max_body_size`] (then 413); `Expect: 100-continue` is answered.
//! - Every response carries `Server`, `Date` and `Content-Length`; errors a short text body.
//! - A malformed head is answered 400 and the connection closes; a request line over the
//!   head limit 414, a head over it 431.
//! - Files: `Content-Type` from the extension, `index.html` for a directory, `ETag` and
//!   `Last-Modified` with `If-None-Match` / `If-Modified-Since` (304), `Range` (206, with a
//!   `multipart/byteranges` body for several ranges; 416 when unsatisfiable). Small bodies are copied into the output; larger ones go to the
//!   driver as file ranges (zero copy, bounded memory). No request reads outside the root:
//!   `..` segments, encoded separators, backslashes and NUL bytes are refused, and on Linux
//!   files open with `openat2(RESOLVE_BENEATH)`, so no symbolic link leads out.
//! - Timeouts through the connection deadline: a head must arrive within the header
//!   timeout (slow clients are closed), an idle keep-alive connection closes after the
//!   keep-alive timeout.
//!
//! ```no_run
//! use ringport::service::http::Http;
//! use ringport::Server;
//!
//! let mut http = Http::builder();
//! http.root("/srv/www");
//! let mut builder = Server::builder();
//! builder.listen("127.0.0.1:8080".parse().unwrap());
//! let server = builder.build(http.build()?)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod date;
mod files;
mod log;

pub use log::request_reopen as reopen_access_logs;
mod metrics;
mod parse;
mod response;

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use files::{Lookup, OpenFile, RangeAsk, Root};
use log::AccessLog;
use parse::{BodyLen, BodyReader, BodyStep, Expect, Head, PathError, Reject, Request};
use response::{short, HeadWriter, Persist, Status};

use super::{Conn, ConnInfo, Service};

/// Default time a request head may take to arrive.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an idle keep-alive connection stays open.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default limit on a request head (request line and header fields).
pub const DEFAULT_MAX_HEADER_SIZE: usize = 8 * 1024;
/// Default limit on a request body (read and discarded).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1024 * 1024;

/// Bodies up to this size are read into the output; larger ones are sent as file ranges.
const COPY_MAX: u64 = 16 * 1024;
/// File bodies a connection may have queued before it stops reading requests until its
/// output drains (each holds an open file).
const FILES_IN_FLIGHT: u32 = 8;
/// File body bytes a connection may have queued before it stops reading requests.
const FILE_BYTES_IN_FLIGHT: u64 = 8 << 20;
/// Unconsumed input a connection may hold: pipelined requests waiting behind file bodies
/// (reading pauses then, but what one turn read is held).
const PIPELINE_INPUT: usize = 1 << 20;
/// A keep-alive deadline within this much of the wanted one (and within an eighth of the
/// timeout) is left as it is, so a busy connection does not move its deadline on every
/// request; an idle one is closed after at least 7/8 of the timeout.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// Settings of the HTTP service; [`HttpBuilder::build`] checks them.
#[derive(Debug, Clone)]
pub struct HttpBuilder {
    root: Option<PathBuf>,
    autoindex: bool,
    access_log: Option<PathBuf>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    max_header_size: usize,
    max_body_size: u64,
}

impl Default for HttpBuilder {
    fn default() -> HttpBuilder {
        HttpBuilder {
            root: None,
            autoindex: false,
            access_log: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
        }
    }
}

impl HttpBuilder {
    /// Serve the files under `dir` (default: none; `/` answers a built-in page and
    /// `/plaintext` a short text).
    pub fn root(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.root = Some(dir.into());
        self
    }

    /// List a directory that has no `index.html` (default: 404).
    pub fn autoindex(&mut self, on: bool) -> &mut Self {
        self.autoindex = on;
        self
    }

    /// Append one line per request, combined log format, to `path` (`-`: standard
    /// output). Default: no access log.
    pub fn access_log(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.access_log = Some(path.into());
        self
    }

    /// Time from the first byte of a request head to its end (zero: no limit).
    pub fn header_timeout(&mut self, t: Duration) -> &mut Self {
        self.header_timeout = t;
        self
    }

    /// Time an idle keep-alive connection stays open (zero: no limit).
    pub fn keepalive_timeout(&mut self, t: Duration) -> &mut Self {
        self.keepalive_timeout = t;
        self
    }

    /// Most bytes of a request head: request line and header fields.
    pub fn max_header_size(&mut self, bytes: usize) -> &mut Self {
        self.max_header_size = bytes;
        self
    }

    /// Most bytes of a request body.
    pub fn max_body_size(&mut self, bytes: u64) -> &mut Self {
        self.max_body_size = bytes;
        self
    }

    /// The service.
    ///
    /// # Errors
    /// When the root is not a directory, the access log cannot be opened, or the head
    /// limit is below 64 bytes.
    pub fn build(&self) -> io::Result<Http> {
        if self.max_header_size < 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the header size limit must be at least 64 bytes",
            ));
        }
        let root =
            match &self.root {
                Some(dir) => Some(Root::open(dir, self.autoindex).map_err(|e| {
                    io::Error::new(e.kind(), format!("root {}: {e}", dir.display()))
                })?),
                None => None,
            };
        let log = match &self.access_log {
            Some(path) => Some(Arc::new(AccessLog::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
            })?)),
            None => None,
        };
        let nonzero = |t: Duration| (!t.is_zero()).then_some(t);
        Ok(Http {
            root: root.map(Arc::new),
            log,
            metrics: metrics::HttpMetrics::default(),
            header_timeout: nonzero(self.header_timeout),
            keepalive_timeout: nonzero(self.keepalive_timeout),
            max_header: self.max_header_size,
            max_body: self.max_body_size,
        })
    }
}

/// The HTTP/1.1 service (see the [module docs](self)).
pub struct Http {
    root: Option<Arc<Root>>,
    log: Option<Arc<AccessLog>>,
    metrics: metrics::HttpMetrics,
    header_timeout: Option<Duration>,
    keepalive_timeout: Option<Duration>,
    max_header: usize,
    max_body: u64,
}

impl Http {
    /// Settings, starting from the defaults.
    pub fn builder() -> HttpBuilder {
        HttpBuilder::default()
    }

    /// The path of the served root, if any.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref().map(Root::path)
    }
}

/// One connection's state.
pub struct HttpSession {
    /// The client's address, for the access log (the port is not logged; the address alone
    /// keeps the session of every idle connection smaller).
    peer: IpAddr,
    /// When the first byte of the request being read arrived (for the latency histogram).
    started: Option<Instant>,
    /// A request body is being discarded; the request is answered when it ends.
    body: Option<Box<Pending>>,
    /// Part of a head arrived: the header deadline runs for it.
    head_timer: bool,
    /// File bodies and their bytes queued since output last drained.
    files: u32,
    file_bytes: u64,
    /// A drain notification is asked for.
    drain_asked: bool,
    /// Requests wait until output drains.
    paused: bool,
    /// The peer stopped sending, and requests that came before its EOF wait behind file
    /// bodies for output to drain: the input held at the EOF and how far it was answered
    /// (boxed: rare, and the session of every idle connection stays small).
    tail: Option<Box<(Box<[u8]>, usize)>>,
    /// The minor version the request being answered named when it was read as 1.1
    /// (HTTP/1.2 to 1.9; 0 otherwise): what its access log line says. One byte, so the
    /// session stays as small as it was.
    asked_minor: u8,
}

/// A request whose body is being discarded: its head, kept to answer it afterwards.
struct Pending {
    reader: BodyReader,
    head: Box<[u8]>,
}

impl Pending {
    /// The request, parsed again from its head (it parsed once: it parses the same way).
    fn request(&self) -> Option<Request<'_>> {
        match parse::parse_head(&self.head, usize::MAX) {
            Head::Complete(req, _) => Some(req),
            Head::Partial | Head::Reject(_) => None,
        }
    }
}

thread_local! {
    /// Scratch for decoded paths and copied file bodies.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn persist_of(req: &Request<'_>) -> Persist {
    match (req.keep_alive, req.minor) {
        (false, _) => Persist::Close,
        (true, 0) => Persist::KeepAlive,
        (true, _) => Persist::Default,
    }
}

impl Http {
    /// After the peer's EOF: answer the requests in `rest`, in order, then close. If file
    /// bodies pause them first, returns how much of `rest` was answered: the others wait
    /// until output drains (see `drained`).
    fn answer_tail(&self, s: &mut HttpSession, rest: &[u8], conn: &mut Conn<'_>) -> Option<usize> {
        let mut used = 0;
        while used < rest.len() && !conn.is_closing() {
            let n = self.data(s, &rest[used..], conn);
            if n == 0 {
                if s.paused {
                    return Some(used);
                }
                break;
            }
            used += n;
        }
        conn.close();
        None
    }

    fn log_request(
        &self,
        s: &mut HttpSession,
        req: &Request<'_>,
        status: Status,
        bytes: u64,
        now: Instant,
    ) {
        let line = line_of(req, std::mem::take(&mut s.asked_minor));
        self.log_line(s, Some(&line), status, bytes, now);
    }

    /// Count an answered request and log it: with its request line, or (`None`) as one
    /// whose request line could not be read.
    fn log_line(
        &self,
        s: &mut HttpSession,
        line: Option<&log::Line<'_>>,
        status: Status,
        bytes: u64,
        now: Instant,
    ) {
        let class = line.map_or(3, |l| method_class(l.method));
        self.metrics
            .record(class, status.code(), s.started.take(), now);
        if let Some(log) = &self.log {
            log.record(s.peer, line, status.code(), bytes);
        }
    }

    /// Answer a refused request with an error that closes the connection, logged with its
    /// request line where one was read.
    fn refuse(
        &self,
        s: &mut HttpSession,
        status: Status,
        line: Option<&log::Line<'_>>,
        conn: &mut Conn<'_>,
    ) {
        let head_only = line.is_some_and(|l| l.method == "HEAD");
        let bytes = short(conn, status, Persist::Close, head_only, &[]);
        self.log_line(s, line, status, bytes, conn.now());
        s.body = None;
        conn.close();
    }

    /// Answer a readable request with an error that closes the connection.
    fn refuse_request(
        &self,
        s: &mut HttpSession,
        req: &Request<'_>,
        status: Status,
        conn: &mut Conn<'_>,
    ) {
        let line = line_of(req, std::mem::take(&mut s.asked_minor));
        self.refuse(s, status, Some(&line), conn);
    }

    /// Refuse the request whose body is being read, logged with its request line.
    fn refuse_pending(&self, s: &mut HttpSession, status: Status, conn: &mut Conn<'_>) {
        match s.body.take().as_deref().and_then(Pending::request) {
            Some(req) => self.refuse_request(s, &req, status, conn),
            None => self.refuse(s, status, None, conn),
        }
    }

    /// Arm the keep-alive deadline (unless one close enough is armed).
    fn keepalive(&self, conn: &mut Conn<'_>) {
        let Some(t) = self.keepalive_timeout else {
            conn.clear_deadline();
            return;
        };
        let at = conn.now() + t;
        // A slack as long as the timeout would let the deadline fall due while the
        // connection is busy.
        let slack = DEADLINE_SLACK.min(t / 8);
        match conn.deadline() {
            Some(d) if d <= at && at - d < slack => {}
            _ => conn.set_deadline(at),
        }
    }

    /// Arm the header deadline for a head or body being read, unless file bodies are
    /// draining: the engine may then hold reading back for the output, so the rest of the
    /// head may wait in the socket through no fault of the client's; `drained` arms it.
    fn read_deadline(&self, s: &HttpSession, conn: &mut Conn<'_>) {
        if s.drain_asked {
            conn.clear_deadline();
        } else {
            self.header_deadline(conn);
        }
    }

    fn header_deadline(&self, conn: &mut Conn<'_>) {
        match self.header_timeout {
            Some(t) => conn.set_deadline(conn.now() + t),
            None => conn.clear_deadline(),
        }
    }

    /// Act on the head parsed from the start of `input`; returns the bytes consumed.
    fn head(
        &self,
        s: &mut HttpSession,
        head: Head<'_>,
        input: &[u8],
        conn: &mut Conn<'_>,
    ) -> usize {
        match head {
            Head::Partial => {
                if !s.head_timer {
                    s.head_timer = true;
                    self.read_deadline(s, conn);
                }
                0
            }
            Head::Reject(r) => {
                let status = match r {
                    Reject::BadRequest => Status::BadRequest,
                    Reject::UriTooLong => Status::UriTooLong,
                    Reject::HeadersTooLarge => Status::HeadersTooLarge,
                    Reject::NotImplemented => Status::NotImplemented,
                    Reject::VersionNotSupported => Status::VersionNotSupported,
                };
                // Refused for its framing, say, after its request line parsed: logged with it.
                let line = parse::request_line(input);
                self.refuse(s, status, line.as_ref(), conn);
                input.len()
            }
            Head::Complete(req, n) => {
                s.head_timer = false;
                self.request(s, &req, &input[..n], conn);
                n
            }
        }
    }

    /// A head arrived: answer it, or start discarding its body.
    fn request(&self, s: &mut HttpSession, req: &Request<'_>, head: &[u8], conn: &mut Conn<'_>) {
        if req.expect == Expect::Other {
            return self.refuse_request(s, req, Status::ExpectationFailed, conn);
        }
        match req.body {
            BodyLen::None => return self.answer(s, req, conn),
            BodyLen::Length(n) if n > self.max_body => {
                return self.refuse_request(s, req, Status::ContentTooLarge, conn);
            }
            BodyLen::Length(_) | BodyLen::Chunked => {}
        }
        if req.expect == Expect::Continue && req.method != "GET" && req.method != "HEAD" {
            // The answer (405) does not depend on the body: give it now instead of asking
            // for the body, and close, as the client may send the body all the same.
            let status = Status::MethodNotAllowed;
            let allow: [(&[u8], &[u8]); 1] = [(b"Allow", b"GET, HEAD")];
            let bytes = short(conn, status, Persist::Close, false, &allow);
            self.log_request(s, req, status, bytes, conn.now());
            conn.close();
            return;
        }
        if req.expect == Expect::Continue && req.minor == 1 {
            conn.write(response::CONTINUE);
        }
        s.body = Some(Box::new(Pending {
            reader: BodyReader::new(req.body),
            head: head.into(),
        }));
        self.read_deadline(s, conn);
    }

    /// Discard body bytes; answer the request when the body ends.
    fn body(&self, s: &mut HttpSession, input: &[u8], conn: &mut Conn<'_>) -> usize {
        let Some(pending) = s.body.as_mut() else {
            return 0;
        };
        let (used, step) = pending
            .reader
            .advance(input, self.max_body, self.max_header);
        match step {
            BodyStep::More => {
                if used > 0 {
                    self.read_deadline(s, conn);
                }
                used
            }
            BodyStep::Done => {
                let pending = s.body.take().expect("a body is pending");
                match pending.request() {
                    Some(req) => self.answer(s, &req, conn),
                    None => self.refuse(s, Status::InternalError, None, conn),
                }
                used
            }
            BodyStep::TooLarge | BodyStep::Malformed => {
                let status = if step == BodyStep::TooLarge {
                    Status::ContentTooLarge
                } else {
                    Status::BadRequest
                };
                self.refuse_pending(s, status, conn);
                input.len()
            }
        }
    }

    /// Answer a request whose body (if any) was discarded.
    fn answer(&self, s: &mut HttpSession, req: &Request<'_>, conn: &mut Conn<'_>) {
        let persist = persist_of(req);
        let head_only = req.method == "HEAD";
        let (status, bytes) = if req.method != "GET" && !head_only {
            let bytes = short(
                conn,
                Status::MethodNotAllowed,
                persist,
                false,
                &[(b"Allow", b"GET, HEAD")],
            );
            (Status::MethodNotAllowed, bytes)
        } else {
            match parse::split_target(req.target) {
                Err(_) => return self.refuse_request(s, req, Status::BadRequest, conn),
                Ok((path, query)) => match &self.root {
                    None => built_in(path, head_only, persist, conn),
                    Some(root) => match self.static_file(s, req, root, path, query, conn) {
                        Ok(done) => done,
                        Err(PathError::Malformed) => {
                            return self.refuse_request(s, req, Status::BadRequest, conn)
                        }
                        Err(PathError::Forbidden) => {
                            let b = short(conn, Status::Forbidden, persist, head_only, &[]);
                            (Status::Forbidden, b)
                        }
                    },
                },
            }
        };
        self.log_request(s, req, status, bytes, conn.now());
        if persist == Persist::Close || status == Status::Unavailable {
            conn.close();
        } else if !s.drain_asked {
            self.keepalive(conn);
        }
        // While output drains no deadline is armed (`read_deadline`): `drained` sets the
        // next (a client slow to read its answers is not idle; the engine's send timeout
        // covers one that stopped).
    }

    /// Serve a file (or a redirect, listing or error) for `path`.
    fn static_file(
        &self,
        s: &mut HttpSession,
        req: &Request<'_>,
        root: &Root,
        path: &str,
        query: &str,
        conn: &mut Conn<'_>,
    ) -> Result<(Status, u64), PathError> {
        let persist = persist_of(req);
        let head_only = req.method == "HEAD";
        let found = SCRATCH.with(|scratch| {
            let rel = &mut scratch.borrow_mut().0;
            let slash = parse::decode_path(path, rel)?;
            Ok(root.lookup(rel, slash))
        })?;
        Ok(match found {
            Lookup::File(file) => self.send(s, req, file, persist, conn),
            Lookup::AddSlash => {
                // One leading slash: `//name/` would be read as another host's address.
                let path = format!("/{}", path.trim_start_matches('/'));
                let mut location = Vec::with_capacity(path.len() + query.len() + 1);
                location.extend_from_slice(path.as_bytes());
                location.push(b'/');
                location.extend_from_slice(query.as_bytes());
                let extra: [(&[u8], &[u8]); 1] = [(b"Location", &location)];
                let status = Status::MovedPermanently;
                (status, short(conn, status, persist, head_only, &extra))
            }
            Lookup::Listing(page) => {
                let mut w = HeadWriter::start(conn, Status::Ok);
                w.field(b"Content-Type", b"text/html; charset=utf-8");
                w.finish(page.len() as u64, persist);
                if !head_only {
                    conn.write(&page);
                }
                (Status::Ok, if head_only { 0 } else { page.len() as u64 })
            }
            Lookup::NotFound => (
                Status::NotFound,
                short(conn, Status::NotFound, persist, head_only, &[]),
            ),
            Lookup::Forbidden => (
                Status::Forbidden,
                short(conn, Status::Forbidden, persist, head_only, &[]),
            ),
            Lookup::Unavailable => {
                // The connection closes after it: it is a descriptor the server is short of.
                let extra: [(&[u8], &[u8]); 1] = [(b"Retry-After", b"1")];
                let status = Status::Unavailable;
                (
                    status,
                    short(conn, status, Persist::Close, head_only, &extra),
                )
            }
        })
    }

    /// Answer with an open file: 304, 416, 206 or 200.
    fn send(
        &self,
        s: &mut HttpSession,
        req: &Request<'_>,
        f: OpenFile,
        persist: Persist,
        conn: &mut Conn<'_>,
    ) -> (Status, u64) {
        let head_only = req.method == "HEAD";
        let etag = files::ETag::new(f.mtime, f.len);
        let etag = etag.as_bytes();
        let now = date::now_secs(conn.now());
        // A modification time ahead of the clock is sent as now (RFC 9110 section
        // 8.8.2.1: Last-Modified is never later than Date), and every date validator is
        // compared with what was sent.
        let mtime = f.mtime.min(now);
        let modified = date::http_date(mtime);
        // Preconditions in RFC 9110's order (section 13.2.2): If-Match, else
        // If-Unmodified-Since, can fail the request (412) before the cache validators below.
        let failed = match req.if_match {
            Some(h) => !files::match_hits(h, etag),
            None => req
                .if_unmodified_since
                .is_some_and(|h| files::modified_since(h, mtime)),
        };
        if failed {
            let status = Status::PreconditionFailed;
            return (status, short(conn, status, persist, head_only, &[]));
        }
        let not_modified = match req.if_none_match {
            Some(h) => files::none_match_hits(h, etag),
            None => req
                .if_modified_since
                .is_some_and(|h| files::not_modified_since(h, mtime, now)),
        };
        if not_modified {
            let mut w = HeadWriter::start(conn, Status::NotModified);
            w.field(b"ETag", etag).field(b"Last-Modified", &modified);
            w.finish(f.len, persist);
            return (Status::NotModified, 0);
        }
        let ask = match req.range {
            // An empty file has no range to send: the whole (empty) body, as nginx does.
            Some(h)
                if !head_only
                    && f.len > 0
                    && req
                        .if_range
                        .is_none_or(|ir| files::if_range_holds(ir, etag, mtime, now)) =>
            {
                files::range(h, f.len)
            }
            _ => RangeAsk::Whole,
        };
        let parts = match ask {
            RangeAsk::Whole => None,
            RangeAsk::Parts(r) => Some(r),
            RangeAsk::Unsatisfiable => {
                let range = ContentRange::new(None, f.len);
                let extra: [(&[u8], &[u8]); 1] = [(b"Content-Range", range.as_bytes())];
                let status = Status::RangeNotSatisfiable;
                return (status, short(conn, status, persist, false, &extra));
            }
        };
        let status = match parts {
            None => Status::Ok,
            Some(_) => Status::PartialContent,
        };
        let mut w = HeadWriter::start(conn, status);
        w.field(b"Last-Modified", &modified)
            .field(b"ETag", etag)
            .field(b"Accept-Ranges", b"bytes");
        let mut body = FileBody {
            file: Some(f.file),
            shared: None,
            copied: 0,
            sent: 0,
        };
        match parts.as_deref().map(files::Ranges::as_slice) {
            None => {
                w.field(b"Content-Type", f.content_type.as_bytes());
                w.finish(f.len, persist);
                if !head_only {
                    body.part(s, conn, 0, f.len);
                }
            }
            Some(&[(first, last)]) => {
                let range = ContentRange::new(Some((first, last)), f.len);
                w.field(b"Content-Type", f.content_type.as_bytes())
                    .field(b"Content-Range", range.as_bytes());
                w.finish(last - first + 1, persist);
                if !head_only {
                    body.part(s, conn, first, last - first + 1);
                }
            }
            Some(ranges) => {
                // RFC 9110 section 14.6: each range as a part with its own Content-Type
                // and Content-Range, between boundary lines.
                let boundary = Boundary::next();
                let boundary = boundary.as_bytes();
                let mut heads = Vec::with_capacity(ranges.len() * 96);
                let mut ends = [0usize; files::MAX_RANGES];
                let mut len = 0;
                for (i, &(first, last)) in ranges.iter().enumerate() {
                    heads.extend_from_slice(b"\r\n--");
                    heads.extend_from_slice(boundary);
                    heads.extend_from_slice(b"\r\nContent-Type: ");
                    heads.extend_from_slice(f.content_type.as_bytes());
                    heads.extend_from_slice(b"\r\nContent-Range: ");
                    heads.extend_from_slice(
                        ContentRange::new(Some((first, last)), f.len).as_bytes(),
                    );
                    heads.extend_from_slice(b"\r\n\r\n");
                    ends[i] = heads.len();
                    len += last - first + 1;
                }
                let closing_len = 8 + boundary.len() as u64;
                let mut ty = Vec::with_capacity(32 + boundary.len());
                ty.extend_from_slice(b"multipart/byteranges; boundary=");
                ty.extend_from_slice(boundary);
                w.field(b"Content-Type", &ty);
                w.finish(len + heads.len() as u64 + closing_len, persist);
                if !head_only {
                    let mut from = 0;
                    for (&(first, last), &end) in ranges.iter().zip(&ends) {
                        conn.write(&heads[from..end]);
                        body.sent += (end - from) as u64;
                        from = end;
                        if !body.part(s, conn, first, last - first + 1) {
                            break;
                        }
                    }
                    if !conn.is_closing() {
                        conn.write(b"\r\n--");
                        conn.write(boundary);
                        conn.write(b"--\r\n");
                        body.sent += closing_len;
                    }
                }
            }
        }
        if body.shared.is_some() {
            if !s.drain_asked {
                s.drain_asked = true;
                conn.clear_deadline();
                conn.notify_drained();
            }
            if s.files >= FILES_IN_FLIGHT || s.file_bytes >= FILE_BYTES_IN_FLIGHT {
                // No more requests until these bodies are out, and no more reading either:
                // pipelined requests wait in the socket, not here.
                s.paused = true;
                conn.pause_reading_until_drained();
            }
        }
        (status, body.sent)
    }
}

/// A `Content-Range` value: `bytes FIRST-LAST/LEN`, or `bytes */LEN` for no range.
struct ContentRange {
    text: [u8; 64],
    len: usize,
}

impl ContentRange {
    fn new(range: Option<(u64, u64)>, total: u64) -> ContentRange {
        let mut text = [0u8; 64];
        let mut cur = &mut text[..];
        // At most 6 + 3 * 20 + 2 bytes: it fits.
        let _ = match range {
            Some((first, last)) => write!(cur, "bytes {first}-{last}/{total}"),
            None => write!(cur, "bytes */{total}"),
        };
        let len = 64 - cur.len();
        ContentRange { text, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// A file's bytes on their way into a response body.
struct FileBody {
    /// The file, until a range of it is queued.
    file: Option<File>,
    /// The file, shared by the ranges queued for the driver.
    shared: Option<Arc<File>>,
    /// Bytes copied into the output so far, at most [`COPY_MAX`] per response.
    copied: u64,
    /// Body bytes written or queued.
    sent: u64,
}

impl FileBody {
    /// Copy `len` bytes from `start` into the output while the response's copies stay
    /// within [`COPY_MAX`] (one copy of a small body is cheaper than a second send of a
    /// file range), else queue them as a file range. False when the file shrank under
    /// us: the promised length cannot be kept, so the connection closes.
    fn part(&mut self, s: &mut HttpSession, conn: &mut Conn<'_>, start: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        if self.copied + len <= COPY_MAX {
            self.copied += len;
            let file = match (&self.shared, &self.file) {
                (Some(f), _) => &**f,
                (None, Some(f)) => f,
                (None, None) => unreachable!("a file body always has its file"),
            };
            let got = SCRATCH.with(|scratch| {
                let buf = &mut scratch.borrow_mut().1;
                buf.resize(len as usize, 0);
                let got = files::read_at(file, buf, start).unwrap_or(0);
                conn.write(&buf[..got]);
                got as u64
            });
            self.sent += got;
            if got < len {
                conn.close();
                return false;
            }
            return true;
        }
        let file = match (self.shared.as_ref(), self.file.take()) {
            (Some(f), _) => Arc::clone(f),
            (None, Some(f)) => Arc::clone(self.shared.insert(Arc::new(f))),
            (None, None) => unreachable!("a file body always has its file"),
        };
        conn.send_file(file, start, len);
        s.files += 1;
        s.file_bytes += len;
        self.sent += len;
        true
    }
}

/// The boundary between the parts of a `multipart/byteranges` body: 16 hex digits, a
/// different number for every response of the process.
struct Boundary([u8; 16]);

impl Boundary {
    fn next() -> Boundary {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // A counter run through a mixing function (splitmix64) with the process id, so
        // boundaries do not repeat in a process and differ between processes.
        let mut x = NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(u64::from(std::process::id()) << 32)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[(x >> (60 - 4 * i)) as usize & 0xf];
        }
        Boundary(out)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The access log's view of a request; `asked_minor`: the version it named where it was
/// read as 1.1, else 0.
fn line_of<'a>(req: &Request<'a>, asked_minor: u8) -> log::Line<'a> {
    log::Line {
        method: req.method,
        target: req.target,
        major: 1,
        minor: asked_minor.max(req.minor),
        referer: req.referer,
        user_agent: req.user_agent,
    }
}

/// A method's class in the request metrics: GET, HEAD, other.
fn method_class(method: &str) -> usize {
    match method {
        "GET" => 0,
        "HEAD" => 1,
        _ => 2,
    }
}

/// The built-in page, `/plaintext`, or 404.
fn built_in(path: &str, head_only: bool, persist: Persist, conn: &mut Conn<'_>) -> (Status, u64) {
    let (ty, body): (&[u8], &[u8]) = match path {
        "/plaintext" => (b"text/plain", response::PLAINTEXT),
        "/" | "/index.html" => (b"text/html; charset=utf-8", response::BUILT_IN_PAGE),
        _ => {
            let bytes = short(conn, Status::NotFound, persist, head_only, &[]);
            return (Status::NotFound, bytes);
        }
    };
    let mut w = HeadWriter::start(conn, Status::Ok);
    w.field(b"Content-Type", ty);
    w.finish(body.len() as u64, persist);
    if head_only {
        return (Status::Ok, 0);
    }
    conn.write(body);
    (Status::Ok, body.len() as u64)
}

impl Service for Http {
    type Session = HttpSession;

    fn input_limit(&self) -> usize {
        // Room for pipelined requests read in one turn before a pause for file bodies takes
        // effect (one head is still bounded by `max_header`, checked by the parser).
        (2 * self.max_header + 4096).max(PIPELINE_INPUT)
    }

    fn open(&self, info: &ConnInfo, conn: &mut Conn<'_>) -> HttpSession {
        self.header_deadline(conn);
        HttpSession {
            peer: info.peer.ip(),
            started: None,
            body: None,
            head_timer: false,
            files: 0,
            file_bytes: 0,
            drain_asked: false,
            paused: false,
            tail: None,
            asked_minor: 0,
        }
    }

    fn data(&self, s: &mut HttpSession, input: &[u8], conn: &mut Conn<'_>) -> usize {
        if s.paused {
            return 0;
        }
        if s.body.is_some() {
            return self.body(s, input, conn);
        }
        if s.started.is_none() {
            s.started = Some(conn.now());
        }
        let head = parse::parse_head(input, self.max_header);
        if let Head::Reject(Reject::VersionNotSupported) = head {
            // HTTP/1.2 to 1.9 are answered as 1.1, and logged with the version they named.
            if let Some((copy, minor)) = parse::as_http11(input, self.max_header) {
                s.asked_minor = minor;
                return self.head(s, parse::parse_head(&copy, self.max_header), &copy, conn);
            }
        }
        self.head(s, head, input, conn)
    }

    fn eof(&self, s: &mut HttpSession, rest: &[u8], conn: &mut Conn<'_>) {
        // Requests that arrived before the peer's EOF are still answered.
        if let Some(used) = self.answer_tail(s, rest, conn) {
            s.tail = Some(Box::new((rest[used..].into(), 0)));
        }
    }

    fn input_full(&self, s: &mut HttpSession, _input: &[u8], conn: &mut Conn<'_>) {
        if !s.paused && s.body.is_none() {
            self.refuse(s, Status::HeadersTooLarge, None, conn);
        }
    }

    fn drained(&self, s: &mut HttpSession, conn: &mut Conn<'_>) {
        s.drain_asked = false;
        s.paused = false;
        s.files = 0;
        s.file_bytes = 0;
        if let Some(mut tail) = s.tail.take() {
            if let Some(used) = self.answer_tail(s, &tail.0[tail.1..], conn) {
                tail.1 += used;
                s.tail = Some(tail);
            }
            return;
        }
        if s.body.is_some() || s.head_timer {
            // A head or body being read had no deadline while output drained.
            self.header_deadline(conn);
        } else {
            self.keepalive(conn);
        }
    }

    fn deadline(&self, s: &mut HttpSession, conn: &mut Conn<'_>) {
        if s.body.is_some() {
            // A body too slow: logged with its request's line.
            self.refuse_pending(s, Status::RequestTimeout, conn);
        } else if s.head_timer {
            self.refuse(s, Status::RequestTimeout, None, conn);
        }
        conn.close();
    }

    fn metrics(&self, out: &mut crate::metrics::Exposition) {
        self.metrics.render(out);
    }
}
