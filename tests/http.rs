//! The HTTP service with real clients (curl, wrk) and raw sockets, on every backend this
//! machine has, inline and with workers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{connect, wait_until, ChildGuard, Rng, Setup, Start, TempDir, DEADLINE};
use ringport::service::http::{Http, HttpBuilder};
use ringport::Server;

every_backend!(
    curl_downloads_small_files_byte_exact,
    curl_downloads_100_mib_byte_exact,
    curl_head_conditional_range_and_errors,
    several_ranges_answer_multipart_byteranges,
    wrk_hundred_connections_no_errors,
    pipelined_requests_are_answered_in_order,
    pipelined_large_files_keep_order_and_bounds,
    deep_pipeline_behind_file_bodies_is_answered_whole,
    slow_reader_behind_file_bodies_outlasts_the_header_timeout,
    malformed_requests_get_400_and_close,
    size_limits_get_414_431_413,
    request_bodies_are_discarded,
    expect_100_continue,
    keep_alive_rules,
    slowloris_is_closed_by_header_timeout,
    idle_keep_alive_is_closed,
    busy_keep_alive_is_not_closed,
    traversal_attempts_are_refused,
    directories_index_redirect_and_autoindex,
    access_log_has_one_line_per_request,
    built_in_page_and_plaintext,
    random_and_mutated_streams_never_break_the_server,
);

// ---------------------------------------------------------------------------------------
// Fixtures

fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("http-{tag}"))
}

/// 612 bytes, like nginx's welcome page.
fn small_body() -> Vec<u8> {
    let mut v = b"<!DOCTYPE html>\n<title>small</title>\n".to_vec();
    v.resize(611, b'x');
    v.push(b'\n');
    v
}

/// A served tree: `root/` with files, a subdirectory, a directory without index, a
/// symbolic link inside and links leading outside; `outside.txt` next to the root.
struct Site {
    dir: TempDir,
    root: PathBuf,
    medium: Vec<u8>,
}

const SECRET: &[u8] = b"secret outside the root\n";

fn site() -> Site {
    let dir = temp_dir("site");
    let root = dir.0.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("index.html"), b"<h1>index</h1>\n").unwrap();
    std::fs::write(root.join("small.html"), small_body()).unwrap();
    std::fs::write(root.join("sub/index.html"), b"<h1>sub</h1>\n").unwrap();
    std::fs::write(root.join("sub/a b.txt"), b"spaced\n").unwrap();
    std::fs::write(root.join("style.css"), b"body{}\n").unwrap();
    std::fs::write(root.join("data"), b"\x00\x01").unwrap();
    std::fs::write(root.join("zero.txt"), b"").unwrap();
    let medium = Rng::new(99).bytes(300 * 1024 + 7);
    std::fs::write(root.join("medium.bin"), &medium).unwrap();
    std::fs::write(dir.0.join("outside.txt"), SECRET).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink("small.html", root.join("inside-link.html")).unwrap();
        symlink("../outside.txt", root.join("escape.txt")).unwrap();
        symlink(dir.0.join("outside.txt"), root.join("absolute.txt")).unwrap();
        symlink("..", root.join("up")).unwrap();
    }
    Site { dir, root, medium }
}

/// A 100 MiB file, made once per run and kept between runs.
fn big_root() -> &'static Path {
    static BIG: OnceLock<PathBuf> = OnceLock::new();
    BIG.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-big");
        let file = dir.join("big.bin");
        if std::fs::metadata(&file).map(|m| m.len()).ok() != Some(100 << 20) {
            std::fs::create_dir_all(&dir).unwrap();
            let tmp = dir.join(format!("big.{}", std::process::id()));
            let mut f = std::fs::File::create(&tmp).unwrap();
            let mut rng = Rng::new(100);
            for _ in 0..100 {
                f.write_all(&rng.bytes(1 << 20)).unwrap();
            }
            drop(f);
            std::fs::rename(&tmp, &file).unwrap();
        }
        dir
    })
}

fn server(setup: Setup, configure: impl FnOnce(&mut HttpBuilder)) -> Server {
    let mut http = Http::builder();
    configure(&mut http);
    setup
        .builder()
        .build(http.build().expect("http service"))
        .expect("server starts")
}

fn site_server(setup: Setup, site: &Site) -> Server {
    server(setup, |h| {
        h.root(&site.root);
    })
}

// ---------------------------------------------------------------------------------------
// Clients

/// Run a client program to completion (killed if the test fails first); its stdout.
fn run_tool(program: &str, args: &[&str]) -> Vec<u8> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): .ci/run installs it"));
    let mut guard = ChildGuard { child };
    let mut out = Vec::new();
    guard
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    let err = common::read_stderr(&mut guard.child);
    let status = guard.child.wait().unwrap();
    assert!(
        status.success(),
        "{program} {args:?} failed: {status}: {err}"
    );
    out
}

/// A response as curl saw it.
struct CurlResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl CurlResponse {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.head, name)
    }
}

fn header_in<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `curl -i` for `path` with extra arguments; the last response of the exchange.
fn curl(addr: SocketAddr, path: &str, extra: &[&str]) -> CurlResponse {
    let url = format!("http://{addr}{path}");
    let mut args = vec!["-sS", "-i", "--path-as-is", "--max-time", "120"];
    args.extend_from_slice(extra);
    args.push(&url);
    let mut out = run_tool("curl", &args);
    // Interim responses (100 Continue) come first; the final one follows.
    while out.starts_with(b"HTTP/1.1 1") {
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        out.drain(..end + 4);
    }
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(out[..split].to_vec()).unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    CurlResponse {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

/// A parsed response read from a raw socket.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.head, name)
    }
}

/// A raw connection that reads responses one at a time.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// The next response; `head_only` for an answer to HEAD (no body).
    fn response(&mut self, head_only: bool) -> Response {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill(), "EOF before a response head: {:?}", self.text());
        };
        let head = String::from_utf8(self.buf[..end - 4].to_vec()).expect("ASCII head");
        self.buf.drain(..end);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        assert!(head.starts_with("HTTP/1.1 "), "status line: {head}");
        let len: usize = if head_only || status == 304 || status < 200 {
            0
        } else {
            header_in(&head, "content-length")
                .expect("Content-Length")
                .parse()
                .unwrap()
        };
        while self.buf.len() < len {
            assert!(self.fill(), "EOF inside a body");
        }
        let body = self.buf.drain(..len).collect();
        Response { status, head, body }
    }

    /// True when the server closes with nothing more to say.
    fn closed(&mut self) -> bool {
        while self.fill() {}
        self.buf.is_empty()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

/// Every response carries these; errors a short body.
fn assert_common_fields(r: &Response) {
    assert_eq!(r.header("server"), Some("ringport"), "{}", r.head);
    let date = r.header("date").expect("Date");
    assert!(date.ends_with(" GMT") && date.len() == 29, "Date: {date}");
    assert!(r.header("content-length").is_some(), "{}", r.head);
}

// ---------------------------------------------------------------------------------------
// Cases

fn curl_downloads_small_files_byte_exact(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    let r = curl(addr, "/small.html", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, small_body());
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("612"));
    assert_eq!(r.header("server"), Some("ringport"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(r
        .header("last-modified")
        .is_some_and(|d| d.ends_with("GMT")));
    let r = curl(addr, "/medium.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert!(r.body == site.medium, "medium body differs");
    let r = curl(addr, "/style.css", &[]);
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.body, b"body{}\n");
    let r = curl(addr, "/sub/a%20b.txt", &[]);
    assert_eq!((r.status, &r.body[..]), (200, &b"spaced\n"[..]));
    let r = curl(addr, "/inside-link.html", &[]);
    assert_eq!(r.body, small_body());
    // Several files over one connection: curl reuses it for URLs given together.
    let url = |p: &str| format!("http://{addr}{p}");
    let out = run_tool(
        "curl",
        &[
            "-sS",
            &url("/small.html"),
            &url("/index.html"),
            &url("/small.html"),
        ],
    );
    let mut want = small_body();
    want.extend_from_slice(b"<h1>index</h1>\n");
    want.extend_from_slice(&small_body());
    assert_eq!(out, want);
    wait_until("connections closed", || server.stats().open == 0);
    assert_eq!(server.stats().accepted, 6);
}

fn curl_downloads_100_mib_byte_exact(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let root = big_root();
    let server = server(setup, |h| {
        h.root(root);
    });
    let dir = temp_dir("download");
    let out = dir.0.join("got.bin");
    let url = format!("http://{}/big.bin", server.local_addr());
    let code = run_tool(
        "curl",
        &[
            "-sS",
            "--max-time",
            "300",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{http_code} %{size_download}",
            &url,
        ],
    );
    assert_eq!(String::from_utf8(code).unwrap(), "200 104857600");
    // Compared a piece at a time: four of these may run at once.
    let mut got = std::fs::File::open(&out).unwrap();
    let mut want = std::fs::File::open(root.join("big.bin")).unwrap();
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for piece in 0..100 {
        got.read_exact(&mut a).unwrap();
        want.read_exact(&mut b).unwrap();
        assert!(a == b, "100 MiB download differs in MiB {piece}");
    }
    assert_eq!(got.read(&mut a).unwrap(), 0, "longer than 100 MiB");
}

fn curl_head_conditional_range_and_errors(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    // HEAD: the GET head without a body.
    let r = curl(addr, "/small.html", &["-I"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("612"));
    assert!(r.body.is_empty());
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();
    // Conditionals.
    let r = curl(
        addr,
        "/small.html",
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = curl(addr, "/small.html", &["-H", "If-None-Match: \"other\""]);
    assert_eq!((r.status, r.body.len()), (200, 612));
    let r = curl(
        addr,
        "/small.html",
        &["-H", &format!("If-Modified-Since: {modified}")],
    );
    assert_eq!(r.status, 304);
    let r = curl(
        addr,
        "/small.html",
        &["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"],
    );
    assert_eq!(r.status, 200);
    // A date later than the server's clock is invalid, so ignored.
    let r = curl(
        addr,
        "/small.html",
        &["-H", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"],
    );
    assert_eq!((r.status, r.body.len()), (200, 612));
    // Preconditions: If-Match (strong comparison), else If-Unmodified-Since.
    for (field, status) in [
        (format!("If-Match: {etag}"), 200),
        ("If-Match: \"other\", *".to_string(), 200),
        ("If-Match: \"other\"".to_string(), 412),
        (format!("If-Match: W/{etag}"), 412),
        (format!("If-Unmodified-Since: {modified}"), 200),
        (
            "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT".to_string(),
            412,
        ),
        // The two obsolete date forms are read too (RFC 9110 section 5.6.7).
        (
            "If-Unmodified-Since: Monday, 01-Jan-01 00:00:00 GMT".to_string(),
            412,
        ),
        (
            "If-Unmodified-Since: Mon Jan  1 00:00:00 2001".to_string(),
            412,
        ),
        (
            "If-Unmodified-Since: Fri Jan  1 00:00:00 2100".to_string(),
            200,
        ),
    ] {
        let r = curl(addr, "/small.html", &["-H", &field]);
        assert_eq!(r.status, status, "{field}");
        if status == 412 {
            assert_eq!(r.body, b"412 Precondition Failed\n");
        }
    }
    // With If-Match, If-Unmodified-Since is not looked at.
    let old = "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT";
    let r = curl(
        addr,
        "/small.html",
        &["-H", &format!("If-Match: {etag}"), "-H", old],
    );
    assert_eq!((r.status, r.body.len()), (200, 612));
    // Ranges.
    let r = curl(addr, "/medium.bin", &["-r", "1000-1999"]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-1999/{}", site.medium.len()).as_str())
    );
    assert!(r.body == site.medium[1000..2000]);
    let r = curl(addr, "/medium.bin", &["-r", "-100"]);
    assert_eq!(r.status, 206);
    assert!(r.body == site.medium[site.medium.len() - 100..]);
    let r = curl(addr, "/medium.bin", &["-r", "100000-"]);
    assert_eq!(r.status, 206);
    assert!(r.body == site.medium[100_000..]);
    let r = curl(addr, "/small.html", &["-r", "5000-6000"]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */612"));
    // An empty file has no range to send: the whole, empty body (as nginx answers).
    for range in ["-5", "0-"] {
        let r = curl(addr, "/zero.txt", &["-r", range]);
        assert_eq!((r.status, r.body.len()), (200, 0), "range {range}");
        assert_eq!(r.header("content-length"), Some("0"));
    }
    let r = curl(
        addr,
        "/small.html",
        &["-r", "0-9", "-H", "If-Range: \"stale\""],
    );
    assert_eq!((r.status, r.body.len()), (200, 612));
    let r = curl(
        addr,
        "/small.html",
        &["-r", "0-9", "-H", &format!("If-Range: {etag}")],
    );
    assert_eq!((r.status, &r.body[..]), (206, &small_body()[..10]));
    // If-Range with a date: it holds when it is the file's Last-Modified, a second or more
    // in the past (a date of this very second is a weak validator).
    let old = site.root.join("old.txt");
    std::fs::write(&old, b"0123456789").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let r = curl(addr, "/old.txt", &[]);
    let old_modified = r.header("last-modified").unwrap().to_string();
    for (date, status) in [
        (old_modified.as_str(), 206),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 200),
    ] {
        let r = curl(
            addr,
            "/old.txt",
            &["-r", "2-3", "-H", &format!("If-Range: {date}")],
        );
        assert_eq!(r.status, status, "{date}");
    }
    // A modification time ahead of the clock is sent as the response's Date.
    let ahead = site.root.join("ahead.txt");
    std::fs::write(&ahead, b"ahead").unwrap();
    let tomorrow = std::time::SystemTime::now() + Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&ahead)
        .unwrap()
        .set_modified(tomorrow)
        .unwrap();
    let r = curl(addr, "/ahead.txt", &[]);
    assert_eq!(r.header("last-modified"), r.header("date"));
    // Errors.
    let r = curl(addr, "/missing.html", &[]);
    assert_eq!((r.status, &r.body[..]), (404, &b"404 Not Found\n"[..]));
    assert_eq!(r.header("content-length"), Some("14"));
    let r = curl(addr, "/small.html", &["-X", "DELETE"]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.body, b"405 Method Not Allowed\n");
    let r = curl(addr, "/small.html", &["-d", "posted body"]);
    assert_eq!(r.status, 405);
}

/// The `multipart/byteranges` body that answers `ranges` (inclusive) of `file`, with the
/// boundary and part type a response named (RFC 9110 section 14.6).
fn multipart(file: &[u8], ranges: &[(usize, usize)], boundary: &str, ty: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for &(first, last) in ranges {
        let len = file.len();
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {ty}\r\nContent-Range: bytes {first}-{last}/{len}\r\n\r\n"
        );
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(&file[first..=last]);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// The boundary of a `multipart/byteranges` content type.
fn boundary_of(content_type: &str) -> &str {
    content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart/byteranges: {content_type}"))
}

fn several_ranges_answer_multipart_byteranges(setup: Setup) {
    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    let medium = &site.medium;
    let n = medium.len();
    let octets = "application/octet-stream";
    // Parts copied into the output and a part sent as a file range, in the order asked
    // (not sorted); a suffix range; then the same again on the same connection, behind a
    // pipelined request.
    let asked = format!("0-9,100000-199999,{}-{},-100", n - 500, n + 50);
    let ranges = [
        (0, 9),
        (100_000, 199_999),
        (n - 500, n - 1),
        (n - 100, n - 1),
    ];
    let mut c = Client::new(addr);
    let req = format!("GET /medium.bin HTTP/1.1\r\nHost: t\r\nRange: bytes={asked}\r\n\r\n");
    let mut batch = req.clone().into_bytes();
    batch.extend_from_slice(&get("/small.html"));
    batch.extend_from_slice(req.as_bytes());
    c.send(&batch);
    let mut boundaries = Vec::new();
    for i in 0..3 {
        let r = c.response(false);
        assert_common_fields(&r);
        if i == 1 {
            assert_eq!((r.status, r.body), (200, small_body()));
            continue;
        }
        assert_eq!(r.status, 206, "{}", r.head);
        assert_eq!(r.header("content-range"), None);
        let boundary = boundary_of(r.header("content-type").unwrap()).to_string();
        assert!(
            r.body == multipart(medium, &ranges, &boundary, octets),
            "{}",
            r.head
        );
        boundaries.push(boundary);
    }
    assert_ne!(
        boundaries[0], boundaries[1],
        "each response has its own boundary"
    );
    // Answers read from a raw connection, one request at a time.
    let mut ask = |head: &str, fields: &str| {
        c.send(format!("{head} /small.html HTTP/1.1\r\nHost: t\r\n{fields}\r\n").as_bytes());
        c.response(head == "HEAD")
    };
    // Of several ranges, one satisfiable: a plain 206 with Content-Range.
    let r = ask("GET", "Range: bytes=700-800,5-9\r\n");
    assert_eq!(
        (r.status, r.header("content-range")),
        (206, Some("bytes 5-9/612"))
    );
    assert_eq!(r.body, small_body()[5..10]);
    // None satisfiable: 416.
    let r = ask("GET", "Range: bytes=700-800,612-\r\n");
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */612"))
    );
    // Overlaps adding up to more than the file, more ranges than served, a malformed one
    // among them: the whole file.
    let many: Vec<String> = (0..17).map(|i| format!("{i}-{i}")).collect();
    for asked in ["0-400,200-611", &many.join(","), "0-1,x-2"] {
        let r = ask("GET", &format!("Range: bytes={asked}\r\n"));
        assert_eq!((r.status, r.body.len()), (200, 612), "{asked}");
        assert_eq!(r.header("content-range"), None);
    }
    // A HEAD is answered with the whole file's head; a stale If-Range, the whole file.
    let r = ask("HEAD", "Range: bytes=0-1,5-6\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("612")));
    let r = ask("GET", "Range: bytes=0-1,5-6\r\nIf-Range: \"stale\"\r\n");
    assert_eq!((r.status, r.body.len()), (200, 612));
    // curl reads the same body (Content-Length and all).
    if !cfg!(windows) {
        let r = curl(addr, "/small.html", &["-r", "0-0,-1"]);
        assert_eq!(r.status, 206);
        let boundary = boundary_of(r.header("content-type").unwrap());
        let ty = "text/html; charset=utf-8";
        assert!(r.body == multipart(&small_body(), &[(0, 0), (611, 611)], boundary, ty));
    }
}

/// wrk's report of 100 connections for 2 s.
fn wrk(url: &str) -> String {
    let out = run_tool("wrk", &["-t1", "-c100", "-d2s", "--timeout", "30s", url]);
    String::from_utf8(out).unwrap()
}

fn wrk_hundred_connections_no_errors(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let site = site();
    let cases = [
        (site_server(setup, &site), "/small.html"),
        (server(setup, |_| {}), "/plaintext"),
    ];
    for (server, path) in cases {
        let url = format!("http://{}{path}", server.local_addr());
        let out = wrk(&url);
        assert!(!out.contains("Socket errors"), "{out}");
        assert!(!out.contains("Non-2xx"), "{out}");
        let requests: u64 = out
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in {out}"));
        assert!(requests > 100, "{out}");
        wait_until("wrk's connections closed", || server.stats().open == 0);
        // wrk's 100 connections, and one it opens first to check the address.
        assert!(server.stats().accepted >= 100, "{out}");
        assert_eq!(curl(server.local_addr(), path, &[]).status, 200);
    }
}

fn pipelined_requests_are_answered_in_order(setup: Setup) {
    let site = site();
    let server = site_server(setup, &site);
    let mut c = Client::new(server.local_addr());
    let mut batch = Vec::new();
    for p in [
        "/small.html",
        "/index.html",
        "/nope",
        "/sub/",
        "/small.html",
    ] {
        batch.extend_from_slice(&get(p));
    }
    batch.extend_from_slice(b"HEAD /small.html HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.extend_from_slice(b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.extend_from_slice(&get("/index.html"));
    c.send(&batch);
    let want: [(u16, &[u8]); 5] = [
        (200, &small_body()),
        (200, b"<h1>index</h1>\n"),
        (404, b"404 Not Found\n"),
        (200, b"<h1>sub</h1>\n"),
        (200, &small_body()),
    ];
    for (i, (status, body)) in want.iter().enumerate() {
        let r = c.response(false);
        assert_common_fields(&r);
        assert_eq!((r.status, &r.body[..]), (*status, *body), "response {i}");
    }
    let r = c.response(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("612")));
    assert_eq!(c.response(false).status, 405);
    assert_eq!(c.response(false).body, b"<h1>index</h1>\n");
    // The same requests again, one byte per write.
    for b in &batch {
        c.send(std::slice::from_ref(b));
    }
    for (status, body) in want {
        let r = c.response(false);
        assert_eq!((r.status, &r.body[..]), (status, body));
    }
    assert_eq!(c.response(true).status, 200);
    assert_eq!(c.response(false).status, 405);
    assert_eq!(c.response(false).status, 200);
    c.send(b"GET /small.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

/// Requests queued behind large file bodies: answered in order, byte-exact, while the
/// connection holds only a few files at once (it stops reading requests until output
/// drains, then goes on with the ones it holds).
fn pipelined_large_files_keep_order_and_bounds(setup: Setup) {
    let site = site();
    let server = site_server(setup, &site);
    let mut c = Client::new(server.local_addr());
    let mut batch = Vec::new();
    let n = 40;
    for i in 0..n {
        batch.extend_from_slice(&get(if i % 3 == 2 {
            "/small.html"
        } else {
            "/medium.bin"
        }));
    }
    // Send everything before reading anything.
    c.send(&batch);
    for i in 0..n {
        let r = c.response(false);
        assert_eq!(r.status, 200, "response {i}");
        if i % 3 == 2 {
            assert_eq!(r.body, small_body(), "response {i}");
        } else {
            assert!(r.body == site.medium, "response {i} differs");
        }
    }
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert!(c.closed());
    wait_until("closed", || server.stats().open == 0);
    assert_eq!(server.stats().service_panics, 0);
}

/// 3,000 pipelined requests for a 17 KB file (over 100 KB of requests, written while the
/// replies are read): every one answered, in order. The requests wait in the socket and in
/// the held input while 8 bodies at a time go out; with a 64 KiB input limit the connection
/// used to close after the first 8. Then 200 such requests followed by the peer's EOF.
fn deep_pipeline_behind_file_bodies_is_answered_whole(setup: Setup) {
    let site = site();
    // Over the size sent by copy: each body goes as a file range.
    let body = Rng::new(5).bytes(17_000);
    std::fs::write(site.root.join("pipe.bin"), &body).unwrap();
    let server = site_server(setup, &site);
    let mut c = Client::new(server.local_addr());
    let n = 3000;
    let batch: Vec<u8> = (0..n).flat_map(|_| get("/pipe.bin")).collect();
    assert!(batch.len() > 100_000);
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&batch));
    for i in 0..n {
        let r = c.response(false);
        assert_eq!(r.status, 200, "response {i}");
        assert!(r.body == body, "response {i} differs");
    }
    writer.join().unwrap().unwrap();
    // The same, with the peer's EOF right behind the requests (`printf ... | nc`): those
    // that wait behind file bodies when it comes are still answered, eight at a time as
    // output drains, and then the connection closes.
    let mut c = Client::new(server.local_addr());
    let n = 200;
    let batch: Vec<u8> = (0..n).flat_map(|_| get("/pipe.bin")).collect();
    c.send(&batch);
    c.stream.shutdown(Shutdown::Write).unwrap();
    for i in 0..n {
        let r = c.response(false);
        assert_eq!(r.status, 200, "response {i} after EOF");
        assert!(r.body == body, "response {i} after EOF differs");
    }
    assert!(c.closed());
    assert_eq!(server.stats().service_panics, 0);
}

/// A request with a body among pipelined file requests arms the header timeout while it is
/// read; once answered, with file bodies still queued (more than the sockets' buffers
/// hold), that deadline must not close a client that is only slow to read (it did: the
/// connection closed after the timeout and the requests behind the queued bodies were
/// never answered).
fn slow_reader_behind_file_bodies_outlasts_the_header_timeout(setup: Setup) {
    let site = site();
    let big = Rng::new(8).bytes(3 << 20);
    std::fs::write(site.root.join("big.bin"), &big).unwrap();
    let timeout = Duration::from_millis(300);
    let server = server(setup, |h| {
        h.root(&site.root).header_timeout(timeout);
    });
    let mut c = Client::new(server.local_addr());
    let mut batch = get("/big.bin");
    batch.extend_from_slice(
        b"POST /small.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    for _ in 0..9 {
        batch.extend_from_slice(&get("/big.bin"));
    }
    batch.extend_from_slice(&get("/small.html"));
    c.send(&batch);
    // Not read for several times the header timeout: an absence of a close is what is
    // checked, so this waits out a time rather than a condition.
    std::thread::sleep(timeout * 4);
    assert!(c.response(false).body == big);
    assert_eq!(c.response(false).status, 405);
    for i in 0..9 {
        let r = c.response(false);
        assert_eq!(r.status, 200, "file {i}");
        assert!(r.body == big, "file {i} differs");
    }
    assert_eq!(c.response(false).body, small_body());
    // A head, or a body, whose rest comes while a file body waits for a client that read
    // some of it and stopped: the rest waits in the socket until output drains, and the
    // header timeout starts again then (it was a 408, the request lost, on io_uring).
    // The file is under the bytes that pause reading and over what the socket buffers hold.
    let large = Rng::new(9).bytes(6 << 20);
    std::fs::write(site.root.join("large.bin"), &large).unwrap();
    let rests: [(&[u8], &[u8], u16); 2] = [
        (b"GET /small.html HTTP/1.1\r\n", b"Host: t\r\n\r\n", 200),
        (
            b"POST /small.html HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n",
            b"abc",
            405,
        ),
    ];
    for (first, rest, status) in rests {
        let mut c = Client::new(server.local_addr());
        // A small receive window, so the socket buffers hold little of the file.
        socket2::SockRef::from(&c.stream)
            .set_recv_buffer_size(64 * 1024)
            .unwrap();
        let mut batch = get("/large.bin");
        batch.extend_from_slice(first);
        c.send(&batch);
        // The rest in a later write (a pause long enough for the server to have read the
        // first; the test passes either way, it only exercises less if the server is slower).
        std::thread::sleep(Duration::from_millis(50));
        c.send(rest);
        while c.buf.len() < 1 << 20 {
            assert!(c.fill());
        }
        std::thread::sleep(timeout * 4);
        assert!(c.response(false).body == large);
        let r = c.response(false);
        assert_eq!(r.status, status, "{}", r.head);
    }
}

fn malformed_requests_get_400_and_close(setup: Setup) {
    let site = site();
    let server = site_server(setup, &site);
    let cases: &[&[u8]] = &[
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: t\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET nothing HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / XTTP/1.1\r\nHost: t\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        // An empty chunk-size line is not the last chunk: what follows must not pass for
        // trailer fields (the request after it would vanish).
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\r\nGET /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
        // A bare LF inside a chunk extension, a bare CR in a trailer field: each could
        // make another parser see a different request after them.
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\rY: b\r\n\r\n",
        // A Host, or the authority of an absolute target, that is no host and port.
        b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ../x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@t\r\n\r\n",
        b"GET http://user@t/index.html HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET http:///index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for (i, raw) in cases.iter().enumerate() {
        let mut c = Client::new(server.local_addr());
        c.send(raw);
        let r = c.response(false);
        assert_eq!(r.status, 400, "case {i}: {}", String::from_utf8_lossy(raw));
        assert_eq!(r.header("connection"), Some("close"), "case {i}");
        assert_eq!(r.body, b"400 Bad Request\n");
        assert_common_fields(&r);
        assert!(c.closed(), "case {i}: connection stays open");
    }
    let mut c = Client::new(server.local_addr());
    c.send(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 505);
    assert!(c.closed());
    // A later HTTP/1 minor version is answered as 1.1 (RFC 9112 section 2.3), keep-alive
    // and pipelining included.
    let mut c = Client::new(server.local_addr());
    c.send(b"\r\nGET /index.html HTTP/1.2\r\nHost: t\r\n\r\nGET /sub/ HTTP/1.9\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"<h1>index</h1>\n"[..]));
    assert!(r.head.starts_with("HTTP/1.1 200 OK"), "{}", r.head);
    assert_eq!(c.response(false).body, b"<h1>sub</h1>\n");
    c.send(b"POST /x HTTP/1.3\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 405);
    assert_eq!(c.response(false).body, b"<h1>sub</h1>\n");
    drop(c);
    let mut c = Client::new(server.local_addr());
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(c.response(false).status, 501);
    assert!(c.closed());
    wait_until("closed", || server.stats().open == 0);
    assert_eq!(server.stats().service_panics, 0);
}

fn size_limits_get_414_431_413(setup: Setup) {
    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    let refused = |raw: &[u8], status: u16| {
        let mut c = Client::new(addr);
        // The server may answer and close before it read everything: ignore send errors.
        let _ = c.stream.write_all(raw);
        let r = c.response(false);
        assert_eq!(r.status, status);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed());
    };
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    refused(long_target.as_bytes(), 414);
    // A request line that never ends.
    refused(&[b'A'; 20_000], 414);
    let fields: String = (0..200)
        .map(|i| format!("X-Field-{i}: {}\r\n", "v".repeat(40)))
        .collect();
    let big_head = format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
    refused(big_head.as_bytes(), 431);
    let many: String = (0..100).map(|i| format!("X{i}: v\r\n")).collect();
    refused(
        format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
        431,
    );
    // Just under the limit is served.
    let pad = 8 * 1024 - 60;
    let fits = format!(
        "GET /index.html HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "p".repeat(pad)
    );
    let mut c = Client::new(addr);
    c.send(fits.as_bytes());
    assert_eq!(c.response(false).status, 200);
    // Bodies over 1 MiB.
    refused(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\r\n",
        413,
    );
    let mut chunked = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend_from_slice(&[b'b'; 0x10000]);
        chunked.extend_from_slice(b"\r\n");
    }
    refused(&chunked, 413);
    // Exactly 1 MiB is read and discarded.
    let mut c = Client::new(addr);
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n");
    c.send(&vec![b'b'; 1 << 20]);
    c.send(&get("/index.html"));
    assert_eq!(c.response(false).status, 405);
    assert_eq!(c.response(false).status, 200);
}

fn request_bodies_are_discarded(setup: Setup) {
    let site = site();
    let server = site_server(setup, &site);
    let mut c = Client::new(server.local_addr());
    // A GET with a body is served; its body is not taken for the next request.
    c.send(b"GET /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 18\r\n\r\nGET /nope HTTP/1.1");
    c.send(&get("/sub/"));
    assert_eq!(c.response(false).body, b"<h1>index</h1>\n");
    assert_eq!(c.response(false).body, b"<h1>sub</h1>\n");
    // Chunked, with extensions and trailers, split at every byte.
    let body = b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n";
    let mut req = body.to_vec();
    req.extend_from_slice(&get("/index.html"));
    for b in &req {
        c.send(std::slice::from_ref(b));
    }
    assert_eq!(c.response(false).status, 405);
    assert_eq!(c.response(false).body, b"<h1>index</h1>\n");
    let mut c2 = Client::new(server.local_addr());
    c2.send(&req);
    assert_eq!(c2.response(false).status, 405);
    assert_eq!(c2.response(false).status, 200);
}

fn expect_100_continue(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let site = site();
    let server = site_server(setup, &site);
    let mut c = Client::new(server.local_addr());
    c.send(
        b"GET /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c.response(false);
    assert_eq!(interim.status, 100);
    assert_eq!(interim.head, "HTTP/1.1 100 Continue");
    c.send(b"hello");
    let r = c.response(false);
    assert_eq!((r.status, &r.body[..]), (200, &b"<h1>index</h1>\n"[..]));
    // Too large: the final answer at once, no 100.
    c.send(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!(r.status, 413);
    assert!(c.closed());
    // A method that is refused whatever the body: 405 at once, no 100, and the connection
    // closes (the client may send the body all the same).
    let mut c = Client::new(server.local_addr());
    c.send(b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    // An expectation the server cannot meet.
    let mut c = Client::new(server.local_addr());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\n\r\n");
    assert_eq!(c.response(false).status, 417);
    // curl waits for the 100 before it sends its body.
    let dir = temp_dir("upload");
    let upload = dir.0.join("up.bin");
    std::fs::write(&upload, vec![b'u'; 200_000]).unwrap();
    let r = curl(
        server.local_addr(),
        "/index.html",
        &[
            "-X",
            "GET",
            "--data-binary",
            &format!("@{}", upload.display()),
            "-H",
            "Expect: 100-continue",
        ],
    );
    assert_eq!((r.status, &r.body[..]), (200, &b"<h1>index</h1>\n"[..]));
}

fn keep_alive_rules(setup: Setup) {
    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    // HTTP/1.0: closed after the response unless keep-alive is asked for.
    let mut c = Client::new(addr);
    c.send(b"GET /index.html HTTP/1.0\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
    let mut c = Client::new(addr);
    c.send(b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response(false).header("connection"), Some("keep-alive"));
    c.send(b"GET /sub/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response(false).body, b"<h1>sub</h1>\n");
    drop(c);
    // HTTP/1.1: kept by default, closed on request; nothing after the close is answered.
    let mut c = Client::new(addr);
    c.send(&get("/index.html"));
    assert_eq!(c.response(false).header("connection"), None);
    c.send(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).header("connection"), Some("close"));
    assert!(c.closed(), "answered after Connection: close: {}", c.text());
    // Requests sent before the client's EOF are still answered.
    let mut c = Client::new(addr);
    c.send(&get("/index.html"));
    c.send(&get("/sub/"));
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.response(false).status, 200);
    assert_eq!(c.response(false).body, b"<h1>sub</h1>\n");
    assert!(c.closed());
    wait_until("closed", || server.stats().open == 0);
}

fn slowloris_is_closed_by_header_timeout(setup: Setup) {
    let server = server(setup, |h| {
        h.header_timeout(Duration::from_millis(800));
    });
    let addr = server.local_addr();
    // A well-behaved keep-alive client stays open meanwhile.
    let mut good = Client::new(addr);
    good.send(&get("/plaintext"));
    assert_eq!(good.response(false).body, b"Hello, World!");
    let baseline = server.stats().open;
    let mut slow = Client::new(addr);
    let mut writer = slow.stream.try_clone().unwrap();
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        let head = b"GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        let mut sent = 0usize;
        // One byte every 50 ms: each arrives well within any idle timeout, but the head
        // never ends. The client's pace, not a wait on the server.
        while started.elapsed() < DEADLINE {
            let b = head.get(sent).copied().unwrap_or(b'a');
            if writer.write_all(&[b]).is_err() {
                return sent;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        sent
    });
    let r = slow.response(false);
    assert_eq!(r.status, 408);
    assert!(slow.closed());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(700),
        "closed after {elapsed:?}"
    );
    let sent = trickle.join().unwrap();
    assert!(sent > 5, "the client trickled {sent} bytes");
    wait_until("back to the baseline", || server.stats().open == baseline);
    // Connected, sent nothing: closed quietly at the header timeout too.
    let mut silent = Client::new(addr);
    assert!(silent.closed());
    wait_until("back to the baseline", || server.stats().open == baseline);
    good.send(&get("/plaintext"));
    assert_eq!(good.response(false).status, 200);
}

fn idle_keep_alive_is_closed(setup: Setup) {
    let server = server(setup, |h| {
        h.keepalive_timeout(Duration::from_millis(500));
    });
    let mut c = Client::new(server.local_addr());
    c.send(&get("/plaintext"));
    assert_eq!(c.response(false).status, 200);
    let idle_from = Instant::now();
    assert!(c.closed());
    assert!(idle_from.elapsed() >= Duration::from_millis(400));
    wait_until("closed", || server.stats().open == 0);
}

/// A connection that keeps sending requests is never idle, however short the keep-alive
/// timeout: 25 requests 100 ms apart on one connection, with a 1 s timeout.
fn busy_keep_alive_is_not_closed(setup: Setup) {
    let server = server(setup, |h| {
        h.keepalive_timeout(Duration::from_secs(1));
    });
    let mut c = Client::new(server.local_addr());
    for i in 0..25 {
        c.send(&get("/plaintext"));
        assert_eq!(c.response(false).status, 200, "request {i}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.stats().accepted, 1);
    assert_eq!(server.stats().open, 1);
}

fn traversal_attempts_are_refused(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    let attempts: &[&str] = &[
        "/../outside.txt",
        "/sub/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E%2Foutside.txt",
        "/sub/..%2f..%2foutside.txt",
        "/..%5coutside.txt",
        "/sub%5c..%5c..%5coutside.txt",
        "/escape.txt",
        "/absolute.txt",
        "/up/outside.txt",
        "/%00/outside.txt",
        "/small.html%00.txt",
        "//outside.txt",
        "/etc/passwd",
        "///etc/passwd",
    ];
    for path in attempts {
        let mut c = Client::new(addr);
        c.send(&get(path));
        let r = c.response(false);
        assert!(
            r.status == 403 || r.status == 404,
            "{path}: status {} body {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET), "{path}");
    }
    // Raw backslashes and absolute-form targets that climb.
    for raw in [
        "GET /..\\outside.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET http://t/../outside.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET http://t/%2e%2e/outside.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let mut c = Client::new(addr);
        c.send(raw.as_bytes());
        let r = c.response(false);
        assert!(
            r.status == 403 || r.status == 404 || r.status == 400,
            "{raw}: {}",
            r.status
        );
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET), "{raw}");
    }
    // What stays inside is served.
    let r = curl(addr, "/sub/../small.html", &[]);
    assert!(r.status == 403 || r.body == small_body());
    assert_eq!(curl(addr, "/./small.html", &[]).body, small_body());
    assert_eq!(server.stats().service_panics, 0);
}

fn directories_index_redirect_and_autoindex(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    assert_eq!(curl(addr, "/", &[]).body, b"<h1>index</h1>\n");
    let r = curl(addr, "/sub?x=1", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/?x=1"));
    assert_eq!(curl(addr, "/sub/", &[]).body, b"<h1>sub</h1>\n");
    assert_eq!(curl(addr, "/empty/", &[]).status, 404);
    // A target with several leading slashes is redirected to a path, never to `//sub/`,
    // which a browser would read as the host `sub`.
    for target in ["//sub", "///sub?x", "http://t//sub"] {
        let mut c = Client::new(addr);
        c.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 301, "{target}");
        let want = if target.ends_with("?x") {
            "/sub/?x"
        } else {
            "/sub/"
        };
        assert_eq!(r.header("location"), Some(want), "{target}");
    }
    // A file is not a directory: a trailing `/` (or a last `.` segment) finds nothing;
    // on a directory the last `.` names it, as its trailing `/` does.
    for (path, status) in [
        ("/small.html/", 404),
        ("/small.html/.", 404),
        ("/small.html/%2e", 404),
        ("/sub/index.html/", 404),
        ("/sub/.", 200),
    ] {
        let mut c = Client::new(addr);
        c.send(&get(path));
        assert_eq!(c.response(false).status, status, "{path}");
    }
    // A name longer than the file system allows names nothing: 404, not 403.
    let mut c = Client::new(addr);
    c.send(&get(&format!("/{}", "a".repeat(300))));
    assert_eq!(c.response(false).status, 404);
    let listing = server_with_autoindex(setup, &site);
    let r = curl(listing.local_addr(), "/empty/", &[]);
    assert_eq!(r.status, 200);
    let r = curl(listing.local_addr(), "/sub/", &[]);
    assert_eq!(r.body, b"<h1>sub</h1>\n");
    let r = curl(listing.local_addr(), "/empty/", &[]);
    assert!(String::from_utf8_lossy(&r.body).contains("Index of /empty"));
    std::fs::write(site.root.join("empty/x<y>.txt"), b"x").unwrap();
    let r = curl(listing.local_addr(), "/empty/", &[]);
    let page = String::from_utf8_lossy(&r.body);
    assert!(
        page.contains("href=\"x%3Cy%3E.txt\">x&lt;y&gt;.txt</a>"),
        "{page}"
    );
    // A name that is not UTF-8 (Linux file systems take any bytes): its link carries its
    // bytes, and leads to it.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"\xff\xfe.txt");
        std::fs::write(site.root.join("empty").join(name), b"odd\n").unwrap();
        let r = curl(listing.local_addr(), "/empty/", &[]);
        let page = String::from_utf8_lossy(&r.body);
        assert!(
            page.contains("href=\"%FF%FE.txt\">\u{fffd}\u{fffd}.txt</a>"),
            "{page}"
        );
        let r = curl(listing.local_addr(), "/empty/%FF%FE.txt", &[]);
        assert_eq!((r.status, &r.body[..]), (200, &b"odd\n"[..]));
    }
}

fn server_with_autoindex(setup: Setup, site: &Site) -> Server {
    server(setup, |h| {
        h.root(&site.root).autoindex(true);
    })
}

fn access_log_has_one_line_per_request(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let site = site();
    let log = site.dir.0.join("access.log");
    let server = server(setup, |h| {
        h.root(&site.root)
            .access_log(&log)
            .header_timeout(Duration::from_millis(500));
    });
    let addr = server.local_addr();
    curl(
        addr,
        "/small.html",
        &["-A", "tester/1", "-e", "http://ref/"],
    );
    curl(addr, "/missing", &[]);
    let mut c = Client::new(addr);
    c.send(b"BAD\r\n\r\n");
    assert_eq!(c.response(false).status, 400);
    // Refused for its framing after the request line parsed: logged with that line.
    let mut c = Client::new(addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nUser-Agent: up/2\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert_eq!(c.response(false).status, 501);
    // A version not served: logged as sent.
    let mut c = Client::new(addr);
    c.send(b"GET /v2 HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 505);
    // A later 1.x answered as 1.1, with a body read first: logged with the version it named.
    let mut c = Client::new(addr);
    c.send(b"GET /index.html HTTP/1.2\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    c.send(b"POST /x HTTP/1.3\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.response(false).status, 405);
    c.send(&get("/sub/"));
    assert_eq!(c.response(false).status, 200);
    // A body that stops coming: 408, logged with its request line.
    let mut c = Client::new(addr);
    c.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nUser-Agent: slow/1\r\nContent-Length: 9\r\n\r\nab");
    assert_eq!(c.response(false).status, 408);
    wait_until("nine log lines", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 9)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
    assert!(
        lines[0].ends_with("] \"GET /small.html HTTP/1.1\" 200 612 \"http://ref/\" \"tester/1\""),
        "{}",
        lines[0]
    );
    let want = [
        "\"GET /missing HTTP/1.1\" 404 14 ",
        "\"-\" 400 16 \"-\" \"-\"",
        "\"POST /up HTTP/1.1\" 501 20 \"-\" \"up/2\"",
        "\"GET /v2 HTTP/2.0\" 505 ",
        "\"GET /index.html HTTP/1.2\" 200 15 ",
        "\"POST /x HTTP/1.3\" 405 ",
        "\"GET /sub/ HTTP/1.1\" 200 ",
        "\"POST /slow HTTP/1.1\" 408 20 \"-\" \"slow/1\"",
    ];
    for (line, want) in lines[1..].iter().zip(want) {
        assert!(line.contains(want), "{line}");
    }
}

fn built_in_page_and_plaintext(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    let server = server(setup, |_| {});
    let addr = server.local_addr();
    let r = curl(addr, "/plaintext", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("13"));
    let r = curl(addr, "/", &[]);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("ringport"));
    assert_eq!(curl(addr, "/other", &[]).status, 404);
}

// ---------------------------------------------------------------------------------------
// The binary

/// `ringport serve --service http` with no other flag serves the built-in page; the flags
/// reach the service.
#[cfg(unix)]
#[test]
fn binary_serves_http_with_flags() {
    let site = site();
    let p = common::serve_process(&[
        "--service",
        "http",
        "--root",
        site.root.to_str().unwrap(),
        "--max-header-size",
        "1KiB",
    ])
    .expect("serve starts");
    assert!(p.banner.contains("service http"), "{}", p.banner);
    assert_eq!(curl(p.addr, "/small.html", &[]).body, small_body());
    let mut c = Client::new(p.addr);
    c.send(
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
            "a".repeat(2000)
        )
        .as_bytes(),
    );
    assert_eq!(c.response(false).status, 431);
    let p = common::serve_process(&["--service", "http"]).expect("serve starts");
    assert_eq!(curl(p.addr, "/plaintext", &[]).body, b"Hello, World!");
    let help = run_tool(env!("CARGO_BIN_EXE_ringport"), &["serve", "--help"]);
    let help = String::from_utf8(help).unwrap();
    for flag in [
        "--root",
        "--autoindex",
        "--access-log",
        "--header-timeout",
        "--keepalive-timeout",
        "--max-header-size",
        "--max-body-size",
        "127.0.0.1:8080",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args([
            "serve",
            "--service",
            "http",
            "--listen",
            "127.0.0.1:0",
            "--root",
        ])
        .arg(site.root.join("small.html"))
        .run()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a directory"));
}

/// Valid request streams that the property test below mutates.
const STREAMS: &[&[u8]] = &[
    b"GET /small.html HTTP/1.1\r\nHost: t\r\n\r\nGET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /medium.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=10-20\r\n\r\n",
    b"GET /medium.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9,30000-99999,-5\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"HEAD /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbodyGET /%2e%2e/x HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /small.html HTTP/1.1\r\nHost: t\r\nIf-None-Match: *\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n",
    // More file bodies than are queued at once: the EOF behind them finds requests waiting.
    concat!(
        "GET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /medium.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /small.html HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .as_bytes(),
];

/// Random bytes and mutated request streams, cut into random writes: the server answers
/// with well-formed responses or closes, never panics, never hangs, and keeps serving.
fn random_and_mutated_streams_never_break_the_server(setup: Setup) {
    skip_unless!(!cfg!(windows), "drives the server with curl/wrk, which run on the test host's Linux side: a Windows test process cannot start them");
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let site = site();
    let server = site_server(setup, &site);
    let addr = server.local_addr();
    let mutated = (
        proptest::sample::select(STREAMS),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..12),
    )
        .prop_map(|(base, edits)| {
            let mut v = base.to_vec();
            for (at, byte, kind) in edits {
                let at = at % (v.len() + 1);
                match kind {
                    0 if at < v.len() => v[at] = byte,
                    1 => v.insert(at, byte),
                    _ if at < v.len() => {
                        v.remove(at);
                    }
                    _ => v.push(byte),
                }
            }
            v
        });
    let input = prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), mutated];
    let cuts = proptest::collection::vec(1usize..64, 1..8);
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(input, cuts), |(bytes, cuts)| {
            let mut c = Client::new(addr);
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + cut).min(bytes.len());
                // The server may close first (after a 400): later writes may fail.
                if c.stream.write_all(&bytes[at..end]).is_err() {
                    break;
                }
                at = end;
            }
            let _ = c.stream.shutdown(Shutdown::Write);
            while c.fill() {}
            if !c.buf.is_empty() {
                prop_assert!(c.buf.starts_with(b"HTTP/1.1 "), "{}", c.text());
                let end = c.buf.windows(4).position(|w| w == b"\r\n\r\n");
                prop_assert!(end.is_some(), "no complete head: {}", c.text());
                let head = String::from_utf8_lossy(&c.buf[..end.unwrap()]).into_owned();
                if !head.starts_with("HTTP/1.1 100") {
                    prop_assert!(header_in(&head, "content-length").is_some(), "{head}");
                    prop_assert_eq!(header_in(&head, "server"), Some("ringport"));
                }
            }
            prop_assert_eq!(server.stats().service_panics, 0);
            Ok(())
        })
        .unwrap();
    wait_until("every connection closed", || server.stats().open == 0);
    let r = curl(addr, "/small.html", &[]);
    assert_eq!((r.status, r.body), (200, small_body()));
}

/// Log rotation: after the access log is renamed, SIGUSR1 makes the server open a new file
/// at the configured path (lines before it stay in the renamed file), on every backend.
#[cfg(unix)]
#[test]
fn sigusr1_reopens_the_access_log() {
    for backend in [ringport::Backend::Uring, ringport::Backend::Poll] {
        if !common::available(backend) {
            continue;
        }
        let site = site();
        let log = site.dir.0.join("access.log");
        let rotated = site.dir.0.join("access.log.1");
        let p = common::serve_process(&[
            "--service",
            "http",
            "--backend",
            backend.name(),
            "--access-log",
            log.to_str().unwrap(),
        ])
        .expect("serve starts");
        let lines =
            |path: &std::path::Path| std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
        assert_eq!(curl(p.addr, "/plaintext", &[]).status, 200);
        wait_until("the first line", || lines(&log) == 1);
        std::fs::rename(&log, &rotated).unwrap();
        // SAFETY: kill takes no pointers; the pid is our own child's.
        let rc = unsafe { libc::kill(p.guard.child.id() as libc::pid_t, libc::SIGUSR1) };
        assert_eq!(rc, 0);
        // The signal is acted on at the next line: ask until one lands in the new file.
        wait_until("a line in the reopened log", || {
            assert_eq!(curl(p.addr, "/other", &[]).status, 404);
            lines(&log) >= 1
        });
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.lines()
                .all(|l| l.contains("\"GET /other HTTP/1.1\" 404 ")),
            "{text}"
        );
        let old = std::fs::read_to_string(&rotated).unwrap();
        assert!(
            old.lines()
                .next()
                .unwrap()
                .contains("\"GET /plaintext HTTP/1.1\" 200 "),
            "{old}"
        );
        // Still running, and still serving.
        assert_eq!(curl(p.addr, "/plaintext", &[]).status, 200);
    }
}

/// Out of descriptors (`prlimit --nofile=64`): clients hold keep-alive connections, each
/// served a file, until a request finds no descriptor to open the file with. That one gets
/// 503 with `Retry-After` and its connection closes (it is a descriptor the server is short
/// of); once some close, the file is served again, to new connections and to those held
/// all along. Every backend, inline and with workers.
#[cfg(target_os = "linux")]
#[test]
fn file_open_out_of_descriptors_answers_503() {
    common::require_prlimit();
    let site = site();
    let root = site.root.to_str().unwrap();
    let want = small_body();
    for backend in [ringport::Backend::Uring, ringport::Backend::Poll] {
        if !common::available(backend) {
            continue;
        }
        for workers in ["0", "2"] {
            let what = format!("{backend}, {workers} workers");
            let p = common::serve_process_under(
                &["prlimit", "--nofile=64:64"],
                &[
                    "--service",
                    "http",
                    "--root",
                    root,
                    "--backend",
                    backend.name(),
                    "--io-threads",
                    "1",
                    "--workers",
                    workers,
                ],
            )
            .expect("serve starts");
            let mut held: Vec<Client> = Vec::new();
            let (mut refused, r) = loop {
                assert!(held.len() < 200, "{what}: no 503 with 200 connections held");
                let mut c = Client::new(p.addr);
                c.send(&get("/small.html"));
                let r = c.response(false);
                match r.status {
                    200 => {
                        assert_eq!(r.body, want, "{what}");
                        held.push(c);
                    }
                    503 => break (c, r),
                    other => panic!("{what}: {other} after {} held: {}", held.len(), r.head),
                }
            };
            assert_eq!(header_in(&r.head, "retry-after"), Some("1"), "{what}");
            assert_eq!(header_in(&r.head, "connection"), Some("close"), "{what}");
            assert_eq!(r.body, b"503 Service Unavailable\n", "{what}");
            assert!(refused.closed(), "{what}: closed after the 503");
            held.truncate(held.len() - 4);
            wait_until("the file is served again", || {
                let mut c = Client::new(p.addr);
                c.send(&get("/small.html"));
                c.response(false).status == 200
            });
            // The connections held were kept open, and are served.
            held[0].send(&get("/small.html"));
            let r = held[0].response(false);
            assert_eq!((r.status, r.body), (200, want.clone()), "{what}");
            common::stop_signal(&p.guard.child);
            let mut p = p;
            let st = common::wait_exit(&mut p.guard.child);
            assert!(st.success(), "{what}: exit {st}");
        }
    }
}

/// The limit is lowered with prlimit (util-linux): Linux's.
#[cfg(not(target_os = "linux"))]
#[test]
fn file_open_out_of_descriptors_answers_503() {
    common::skip("lowers RLIMIT_NOFILE with prlimit: Linux's");
}
