//! Running in production: Prometheus metrics (checked with `promtool`), PROXY protocol,
//! one process per port, socket activation (`systemd-socket-activate`) and log lines, on
//! every backend this machine has.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{connect, wait_until, ChildGuard, Setup, Start, TempDir};
use ringport::proxy::{ProxyConfig, ProxyProtocol, Version};
use ringport::service::http::Http;
use ringport::{Backend, Server};

every_backend!(
    metrics_pass_promtool_and_count_this_traffic,
    metrics_scrape_is_not_held_up_by_silent_connections,
    proxy_header_gives_the_client_address,
    proxy_rejects_are_closed_and_counted,
    proxy_keeps_the_inner_services_deadlines,
    second_process_on_a_port_is_refused_unless_shared,
);

// ---------------------------------------------------------------------------------------
// Helpers

fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("ops-{tag}"))
}

/// One HTTP/1.1 request with `Connection: close`; the whole answer.
fn http_get(addr: SocketAddr, prefix: &[u8], path: &str) -> String {
    let mut c = connect(addr);
    c.write_all(prefix).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

/// Scrape the metrics address: the exposition text (status 200 asserted).
fn scrape(addr: SocketAddr) -> String {
    let answer = http_get(addr, b"", "/metrics");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a full answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

fn metrics_scrape_is_not_held_up_by_silent_connections(setup: Setup) {
    let mut b = setup.builder();
    b.metrics("127.0.0.1:0".parse().unwrap());
    let server = b.build(Http::builder().build().unwrap()).unwrap();
    let maddr = server.metrics_addr().unwrap();
    // Connections that send nothing, or half a request line (a port scanner, a TCP health
    // check, a stuck scraper), more than the 64 connections answered at once. Each would
    // hold its place until the head timeout (3 s): served one at a time, they held up every
    // scrape behind them for as long; 64 at a time, a scrape that came after them was
    // closed unanswered. Now the one that has waited longest makes room.
    let mut silent: Vec<TcpStream> = (0..100).map(|_| connect(maddr)).collect();
    for c in silent.iter_mut().step_by(2) {
        c.write_all(b"GET /met").unwrap();
    }
    // Each answered while they wait.
    assert!(!scrape(maddr).is_empty());
    let answer = |raw: &[u8]| {
        let mut c = connect(maddr);
        c.write_all(raw).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let out = answer(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
    assert!(out.contains("\r\nAllow: GET, HEAD\r\n"), "{out}");
    assert!(answer(b"\x01\x02 junk\r\n\r\n").starts_with("HTTP/1.1 400 "));
    assert!(answer(b"GET /metrics\r\n\r\n").starts_with("HTTP/1.1 400 "));
    assert!(answer(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    let out = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.ends_with("\r\n\r\n"),
        "{out}"
    );
    // A silent connection is closed: made room for, or at the head timeout.
    let mut buf = [0u8; 1];
    assert_eq!(silent[1].read(&mut buf).unwrap(), 0);
    assert_eq!(silent[99].read(&mut buf).unwrap(), 0);
    drop(silent);
}

/// The value of the sample `name{labels}` (labels exactly as rendered), summed when
/// `labels` is a prefix shared by several samples.
fn value(text: &str, sample: &str) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| k.starts_with(sample))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .collect();
    assert!(!found.is_empty(), "no sample {sample} in\n{text}");
    found.iter().sum()
}

/// `promtool check metrics` accepts the text (lint included).
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .expect("promtool runs (.ci/run installs the Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn proxy_server(
    setup: Setup,
    cfg: ProxyConfig,
    http: &mut ringport::service::http::HttpBuilder,
) -> Server {
    let mut b = setup.builder();
    b.metrics("127.0.0.1:0".parse().unwrap());
    b.build(ProxyProtocol::new(http.build().unwrap(), cfg))
        .expect("server starts")
}

fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        _ => unreachable!(),
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// Read until EOF; true if the peer closed without sending anything.
fn closed_silently(mut c: TcpStream) -> bool {
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

fn metrics_pass_promtool_and_count_this_traffic(setup: Setup) {
    let mut b = setup.builder();
    b.io_threads(2).metrics("127.0.0.1:0".parse().unwrap());
    let server = b.build(Http::builder().build().unwrap()).unwrap();
    let maddr = server.metrics_addr().expect("metrics address");
    assert_ne!(maddr, server.local_addr());
    let backend = setup.backend.name();
    let before = scrape(maddr);
    promtool_accepts(&before);
    assert_eq!(value(&before, "ringport_connections_accepted_total"), 0.0);
    assert!(
        before.contains(&format!("thread=\"1\",backend=\"{backend}\"")),
        "{before}"
    );

    // 5 GETs answered 200, 2 answered 404, 1 HEAD, 1 POST (405), 1 unreadable (400).
    for _ in 0..5 {
        assert!(http_get(server.local_addr(), b"", "/plaintext").starts_with("HTTP/1.1 200"));
    }
    for _ in 0..2 {
        assert!(http_get(server.local_addr(), b"", "/missing").starts_with("HTTP/1.1 404"));
    }
    let mut c = connect(server.local_addr());
    c.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.contains("405"), "{out}");
    let mut c = connect(server.local_addr());
    c.write_all(b"\x01\x02 nonsense\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    let connections = 5 + 2 + 1 + 1;
    wait_until("the closes to be counted", || {
        value(&scrape(maddr), "ringport_connections_closed_total") == connections as f64
    });
    let after = scrape(maddr);
    promtool_accepts(&after);
    let stats = server.stats();
    assert_eq!(
        value(&after, "ringport_connections_accepted_total"),
        connections as f64
    );
    assert_eq!(value(&after, "ringport_connections_open"), 0.0);
    assert_eq!(
        value(&after, "ringport_bytes_in_total"),
        stats.bytes_in as f64
    );
    assert_eq!(
        value(&after, "ringport_bytes_out_total"),
        stats.bytes_out as f64
    );
    assert!(stats.bytes_in > 0 && stats.bytes_out > 0);
    let req = |m: &str, s: &str| {
        value(
            &after,
            &format!("ringport_http_requests_total{{method=\"{m}\",status=\"{s}\"}}"),
        )
    };
    assert_eq!(req("GET", "2xx"), 5.0);
    assert_eq!(req("GET", "4xx"), 2.0);
    assert_eq!(req("HEAD", "2xx"), 1.0);
    assert_eq!(req("other", "4xx"), 1.0);
    assert_eq!(req("unparsed", "4xx"), 1.0);
    assert_eq!(
        value(&after, "ringport_http_request_duration_seconds_count"),
        10.0
    );
    assert_eq!(
        value(
            &after,
            "ringport_http_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        10.0
    );
    // Both threads are listed, per backend; the failed calls by disposition.
    assert!(after.contains(&format!(
        "ringport_failed_calls_total{{thread=\"0\",backend=\"{backend}\",disposition=\"peer_gone\"}}"
    )));
    // Not found, not allowed.
    assert!(http_get(maddr, b"", "/other").starts_with("HTTP/1.1 404"));
    server.shutdown();
    server.wait().unwrap();
    // The metrics listener is gone with the server.
    wait_until("the metrics listener to close", || {
        TcpStream::connect(maddr).is_err()
    });
}

// ---------------------------------------------------------------------------------------
// PROXY protocol

fn proxy_header_gives_the_client_address(setup: Setup) {
    let dir = temp_dir("proxy");
    let log = dir.0.join("access.log");
    let server = proxy_server(
        setup,
        ProxyConfig::new(Version::Any),
        Http::builder().access_log(&log),
    );
    let addr = server.local_addr();
    let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 80\r\n";
    let v2 = v2_header(
        "[2001:db8::9]:40001".parse().unwrap(),
        "[2001:db8::1]:80".parse().unwrap(),
    );
    assert!(http_get(addr, v1, "/plaintext").ends_with("Hello, World!"));
    assert!(http_get(addr, &v2, "/plaintext").ends_with("Hello, World!"));
    // The header and the request in separate pieces, the header itself split.
    let mut c = connect(addr);
    c.write_all(&v1[..9]).unwrap();
    c.flush().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.write_all(&v1[9..]).unwrap();
    c.write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.ends_with("Hello, World!"), "{out}");
    // A LOCAL header (what a proxy's health check sends) keeps the real address.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert!(http_get(addr, local, "/plaintext").ends_with("Hello, World!"));
    wait_until("four access log lines", || {
        std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) == 4
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let clients: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        clients,
        ["192.0.2.7", "2001:db8::9", "192.0.2.7", "127.0.0.1"],
        "{text}"
    );
    let m = scrape(server.metrics_addr().unwrap());
    promtool_accepts(&m);
    assert_eq!(
        value(&m, "ringport_proxy_headers_total{result=\"accepted\"}"),
        4.0
    );
    assert_eq!(
        value(
            &m,
            "ringport_http_requests_total{method=\"GET\",status=\"2xx\"}"
        ),
        4.0
    );
}

fn proxy_rejects_are_closed_and_counted(setup: Setup) {
    let mut cfg = ProxyConfig::new(Version::V1);
    cfg.timeout = Duration::from_millis(300);
    let server = proxy_server(setup, cfg, &mut Http::builder());
    let addr = server.local_addr();
    let maddr = server.metrics_addr().unwrap();
    let count = |r: &str| {
        value(
            &scrape(maddr),
            &format!("ringport_proxy_headers_total{{result=\"{r}\"}}"),
        )
    };

    // Missing: a request without a header; a v2 header on a v1 listener; EOF first.
    for prefix in [
        &b""[..],
        &v2_header("1.2.3.4:5".parse().unwrap(), "5.6.7.8:9".parse().unwrap()),
    ] {
        let mut c = connect(addr);
        c.write_all(prefix).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(closed_silently(c));
    }
    let c = connect(addr);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_silently(c));
    // Malformed.
    let mut c = connect(addr);
    c.write_all(b"PROXY TCP4 1.2.3.4 not-an-address 1 2\r\nGET / HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(closed_silently(c));
    // Oversized: a v1 line without an end.
    let mut c = connect(addr);
    c.write_all(b"PROXY UNKNOWN ").unwrap();
    c.write_all(&[b'x'; 200]).unwrap();
    assert!(closed_silently(c));
    // Too slow: half a header, then nothing until the timeout closes it.
    let mut c = connect(addr);
    c.write_all(b"PROXY TCP4 1.2.3.4").unwrap();
    assert!(closed_silently(c));
    wait_until("every reject to be counted", || count("timeout") == 1.0);
    assert_eq!(count("missing"), 3.0);
    assert_eq!(count("malformed"), 1.0);
    assert_eq!(count("oversized"), 1.0);
    assert_eq!(count("accepted"), 0.0);
    assert_eq!(count("untrusted_source"), 0.0);
    // Nothing reached the service.
    assert_eq!(value(&scrape(maddr), "ringport_http_requests_total"), 0.0);
    drop(server);

    // Sources outside --proxy-protocol-from are closed before a byte is read.
    let mut cfg = ProxyConfig::new(Version::Any);
    cfg.trusted = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
    let server = proxy_server(setup, cfg, &mut Http::builder());
    let mut c = connect(server.local_addr());
    let _ = c.write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n");
    assert!(closed_silently(c));
    let m = scrape(server.metrics_addr().unwrap());
    assert_eq!(
        value(
            &m,
            "ringport_proxy_headers_total{result=\"untrusted_source\"}"
        ),
        1.0
    );
    // From a trusted source (::1) the same bytes are served.
    let mut cfg = ProxyConfig::new(Version::Any);
    cfg.trusted = vec!["127.0.0.0/8".parse().unwrap()];
    let server = proxy_server(setup, cfg, &mut Http::builder());
    let answer = http_get(
        server.local_addr(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "/plaintext",
    );
    assert!(answer.ends_with("Hello, World!"), "{answer}");
}

/// After the header, the inner service's deadlines still fire: the HTTP header timeout
/// answers a slow request with 408, and a keep-alive timeout closes an idle connection.
fn proxy_keeps_the_inner_services_deadlines(setup: Setup) {
    let mut cfg = ProxyConfig::new(Version::V1);
    // Longer than the HTTP timeouts: a 408 can only come from the inner deadline.
    cfg.timeout = Duration::from_secs(30);
    let server = proxy_server(
        setup,
        cfg,
        Http::builder()
            .header_timeout(Duration::from_millis(300))
            .keepalive_timeout(Duration::from_millis(300)),
    );
    let mut c = connect(server.local_addr());
    c.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\nGET /plaintext HTTP/1.1\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    let mut c = connect(server.local_addr());
    c.write_all(
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("Hello, World!"),
        "{out}"
    );
    let m = scrape(server.metrics_addr().unwrap());
    assert_eq!(
        value(&m, "ringport_proxy_headers_total{result=\"timeout\"}"),
        0.0
    );
}

// ---------------------------------------------------------------------------------------
// One process per port

fn second_process_on_a_port_is_refused_unless_shared(setup: Setup) {
    let mut b = setup.builder();
    b.io_threads(2).metrics("127.0.0.1:0".parse().unwrap());
    let first = b.build(ringport::service::Echo).unwrap();
    let addr = first.local_addr();
    for threads in [1, 2, 3] {
        let mut b = setup.builder();
        b.listen(addr).io_threads(threads);
        let e = b.build(ringport::service::Echo).err().expect("refused");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::AddrInUse,
            "{threads} threads: {e}"
        );
    }
    // One that asks to share cannot join a process that did not: refused where the first
    // process's threads share one socket; on Linux, where each has its own in a
    // `SO_REUSEPORT` group that the newcomer can join, it gets none of the connections,
    // which the first process's two threads share between them.
    let mut b = setup.builder();
    b.listen(addr).io_threads(1).reuse_port(true);
    let joiner = match b.build(ringport::service::Echo) {
        Ok(joiner) => Some(joiner),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
        Err(e) => panic!("joining: {e}"),
    };
    for i in 0..40u8 {
        common::assert_echo(&mut connect(addr), &[i; 10]);
    }
    let joined = || joiner.as_ref().map_or(0, |j| j.stats().accepted);
    wait_until("40 connections counted", || {
        first.stats().accepted + joined() == 40
    });
    assert_eq!(joined(), 0, "the process that joined took connections");
    let m = scrape(first.metrics_addr().unwrap());
    for thread in ["0", "1"] {
        let accepted = value(
            &m,
            &format!("ringport_connections_accepted_total{{thread=\"{thread}\","),
        );
        assert!(accepted > 0.0, "thread {thread} accepted none of 40:\n{m}");
    }
    drop(joiner);
    drop(first);

    // Shared on purpose: both bind, and together they serve every connection.
    let mut b = setup.builder();
    b.io_threads(2).reuse_port(true);
    let a = b.build(ringport::service::Echo).unwrap();
    let mut b = setup.builder();
    b.listen(a.local_addr()).io_threads(1).reuse_port(true);
    let c = b.build(ringport::service::Echo).unwrap();
    for i in 0..40u8 {
        common::assert_echo(&mut connect(a.local_addr()), &[i; 10]);
    }
    wait_until("40 connections counted", || {
        a.stats().accepted + c.stats().accepted == 40
    });
    // A process that does not ask to share is still refused.
    let mut b = setup.builder();
    b.listen(a.local_addr());
    assert_eq!(
        b.build(ringport::service::Echo).err().unwrap().kind(),
        std::io::ErrorKind::AddrInUse
    );
}

// ---------------------------------------------------------------------------------------
// Socket activation and logs (the binary)

/// A port free on 127.0.0.1 right now (for tools that bind it themselves).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `systemd-socket-activate ACTIVATE... ringport SERVE...`, its stderr piped (and its stdout
/// when `stdout` says so).
fn socket_activate(activate: &[&str], serve: &[&str], stdout: Stdio) -> ChildGuard {
    let child = Command::new("systemd-socket-activate")
        // Its info lines ("Spawned", "died with code") are what some tests wait for.
        .env_remove("SYSTEMD_LOG_LEVEL")
        .args(activate)
        .arg(env!("CARGO_BIN_EXE_ringport"))
        .arg("serve")
        .args(serve)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .start()
        .expect("systemd-socket-activate runs (.ci/run installs the Debian package systemd)");
    ChildGuard { child }
}

/// Stop the child with its stop signal and wait for it: its exit status and all it wrote to
/// its (piped) stderr.
fn stop_and_stderr(guard: &mut ChildGuard) -> (std::process::ExitStatus, String) {
    common::stop_signal(&guard.child);
    let status = common::wait_exit(&mut guard.child);
    (status, common::read_stderr(&mut guard.child))
}

fn socket_activation_case(backend: Backend) {
    if !common::available(backend) {
        eprintln!("skipped: backend {backend} is not available on this machine");
        return;
    }
    let (port, mport) = (free_port(), free_port());
    let mut guard = socket_activate(
        &[
            "-l",
            &format!("127.0.0.1:{port}"),
            "-l",
            &format!("127.0.0.1:{mport}"),
            "--fdname",
            "web:metrics",
        ],
        &[
            "--service",
            "http",
            "--io-threads",
            "2",
            "--backend",
            backend.name(),
        ],
        Stdio::piped(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The sockets are bound before the program starts; the first connection starts it.
    wait_until("systemd-socket-activate to listen", || {
        TcpStream::connect(addr).is_ok()
    });
    for _ in 0..40 {
        assert!(http_get(addr, b"", "/plaintext").ends_with("Hello, World!"));
    }
    let mut banner = String::new();
    BufReader::new(guard.child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(
        banner.contains(&format!(
            "listening on 127.0.0.1:{port}, backend {}",
            backend.name()
        )),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("metrics http://127.0.0.1:{mport}/metrics")),
        "{banner}"
    );
    let m = scrape(format!("127.0.0.1:{mport}").parse().unwrap());
    promtool_accepts(&m);
    assert!(m.contains(&format!("backend=\"{}\"", backend.name())));
    // At least the 40 requests (probes of the wait above may add connections).
    assert!(
        value(
            &m,
            "ringport_http_requests_total{method=\"GET\",status=\"2xx\"}"
        ) >= 40.0
    );
    // The one passed listener is shared by both I/O threads, and both take connections
    // from it (with a multishot accept, io_uring left every one to the first ring).
    for thread in ["0", "1"] {
        let accepted = value(
            &m,
            &format!("ringport_connections_accepted_total{{thread=\"{thread}\","),
        );
        assert!(accepted > 0.0, "thread {thread} accepted none of 40:\n{m}");
    }
    let (status, err) = stop_and_stderr(&mut guard);
    assert!(status.success());
    assert!(
        err.contains(&format!(
            "socket activation: serving on the passed listener 127.0.0.1:{port}"
        )),
        "{err}"
    );
}

#[test]
fn uring_socket_activation_serves_the_passed_listeners() {
    socket_activation_case(Backend::Uring);
}

#[test]
fn poll_socket_activation_serves_the_passed_listeners() {
    socket_activation_case(Backend::Poll);
}

/// Start ringport under `systemd-socket-activate` with `activate` (its arguments), connect
/// to `addr` (one of the sockets), and expect ringport to refuse the sockets at start: the
/// connection closes unanswered. Returns what the children wrote to stderr.
fn activation_refused(backend: Backend, activate: &[&str], addr: SocketAddr) -> String {
    let mut guard = socket_activate(activate, &["--backend", backend.name()], Stdio::null());
    // The first connection that gets through is the one checked: without `-a` it makes the
    // activator exec ringport, which refuses and exits at once, so a later connect could be
    // refused.
    let mut first = None;
    wait_until("systemd-socket-activate to listen", || {
        first = TcpStream::connect(addr).ok();
        first.is_some()
    });
    // systemd-socket-activate's stderr, read as it comes: the children write theirs there
    // too.
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut pipe = guard.child.stderr.take().unwrap();
    let reader = {
        let err = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                err.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    // ringport exits at once: the connection it was handed closes unanswered.
    let mut c = first.expect("connected");
    c.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let _ = c.write_all(b"hello");
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{backend}: the connection should close unanswered: {other:?}"),
    }
    // Without `-a` the activator execs ringport, which exits; with it, each child has exited
    // (and so written all it had to) before the activator stops: its children get SIGTERM
    // when it exits.
    let mut exited = false;
    wait_until("ringport to exit", || {
        exited = matches!(guard.child.try_wait(), Ok(Some(_)));
        let err = err.lock().unwrap();
        let spawned = err.matches("Spawned ").count();
        exited || (spawned >= 1 && err.matches(" died with code ").count() == spawned)
    });
    if !exited {
        common::stop_signal(&guard.child);
        common::wait_exit(&mut guard.child);
    }
    reader.join().unwrap();
    let err = err.lock().unwrap().clone();
    err
}

/// systemd's `Accept=yes` passes a connected socket, not a listener: refused at start with
/// the reason (it used to be served as a listener whose every accept failed, the client
/// left waiting), whichever backend was asked for.
#[test]
fn socket_activation_refuses_a_connected_socket() {
    for backend in ringport::available_backends() {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let err = activation_refused(backend, &["-a", "-l", &addr.to_string()], addr);
        assert!(
            err.contains("passed socket 3 (unknown) is not listening"),
            "{backend}: {err}"
        );
    }
}

/// Two sockets for the service (IPv4 and IPv6 on one port, say): a process serves one, and
/// the other would take connections nobody accepts, so ringport refuses to start (it used to
/// serve the first and leave the second with a warning).
#[test]
fn socket_activation_refuses_a_socket_it_would_not_serve() {
    for backend in ringport::available_backends() {
        let (first, second) = (free_port(), free_port());
        let addr: SocketAddr = format!("127.0.0.1:{first}").parse().unwrap();
        let other = format!("127.0.0.1:{second}");
        let err = activation_refused(backend, &["-l", &addr.to_string(), "-l", &other], addr);
        assert!(
            err.contains("passed socket 4 (unknown) would not be served"),
            "{backend}: {err}"
        );
        // Two sockets named `metrics` (what one systemd unit with two sockets passes when
        // its last FileDescriptorName= is `metrics`): the second is not the service's.
        let (first, second) = (free_port(), free_port());
        let addr: SocketAddr = format!("127.0.0.1:{first}").parse().unwrap();
        let other = format!("127.0.0.1:{second}");
        let two = [
            "-l",
            &addr.to_string(),
            "-l",
            &other,
            "--fdname",
            "metrics:metrics",
        ];
        let err = activation_refused(backend, &two, addr);
        assert!(
            err.contains("passed socket 4 is a second one named `metrics`"),
            "{backend}: {err}"
        );
    }
}

/// Every log line has an RFC 3339 UTC timestamp and a level; --log-level filters, and so
/// does RUST_LOG when --log-level is not given.
#[test]
fn log_lines_have_timestamp_and_level_and_are_filtered() {
    let run = |args: &[&str], env: Option<&str>| -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringport"));
        // A --max-connections any open files limit has room for: no warning about it.
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--backend", "poll"])
            .args(["--max-connections", "100"])
            .args(args);
        match env {
            Some(v) => cmd.env("RUST_LOG", v),
            None => cmd.env_remove("RUST_LOG"),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .unwrap();
        let mut guard = ChildGuard { child };
        let mut banner = String::new();
        BufReader::new(guard.child.stdout.take().unwrap())
            .read_line(&mut banner)
            .unwrap();
        let (status, err) = stop_and_stderr(&mut guard);
        assert!(status.success());
        err
    };
    let err = run(&[], None);
    assert!(err.lines().count() > 10, "{err}");
    for line in err.lines() {
        // 2026-11-26T19:05:00.123456Z  INFO ringport: ...
        let (stamp, rest) = line.split_once(' ').unwrap();
        let b = stamp.as_bytes();
        assert!(
            stamp.len() >= 20
                && b[4] == b'-'
                && b[7] == b'-'
                && b[10] == b'T'
                && b[13] == b':'
                && b[16] == b':'
                && stamp.ends_with('Z'),
            "{line}"
        );
        let level = rest.trim_start().split(' ').next().unwrap();
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "{line}"
        );
        assert!(rest.contains(" ringport: "), "{line}");
    }
    assert!(err.contains(" INFO ringport: shutting down"), "{err}");
    assert_eq!(run(&["--log-level", "warn"], None), "");
    assert_eq!(run(&[], Some("error")), "");
    assert!(run(&["--log-level", "info"], Some("error")).contains("stopped; counters:"));
    let bad = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--log-level", "loud"])
        .run()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a level"));
}

/// Connections over --max-connections are refused, counted in the metrics and logged,
/// at most one line a second.
#[test]
fn refused_connections_are_counted_and_logged() {
    for backend in ringport::available_backends() {
        let mut p = common::serve_process(&[
            "--backend",
            backend.name(),
            "--max-connections",
            "2",
            "--io-threads",
            "2",
            "--metrics",
            "127.0.0.1:0",
        ])
        .unwrap();
        let maddr: SocketAddr = p
            .banner
            .split("metrics http://")
            .nth(1)
            .and_then(|r| r.trim().strip_suffix("/metrics"))
            .unwrap()
            .parse()
            .unwrap();
        let mut held = vec![connect(p.addr), connect(p.addr)];
        for c in &mut held {
            common::assert_echo(c, b"x");
        }
        for _ in 0..5 {
            let c = connect(p.addr);
            assert!(closed_silently(c));
        }
        wait_until("5 refusals in the metrics", || {
            value(&scrape(maddr), "ringport_connections_refused_total") == 5.0
        });
        common::stop_signal(&p.guard.child);
        assert!(common::wait_exit(&mut p.guard.child).success());
        let mut err = String::new();
        p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let lines = err
            .matches("refused: 2 open, the --max-connections cap")
            .count();
        // The first refusal is logged at once; the others within the same second are
        // folded into the next line (a slow machine may spread them over more seconds).
        assert!((1..=5).contains(&lines), "{err}");
        assert!(
            err.contains(" WARN ringport: 1 connection(s) refused: 2 open"),
            "{err}"
        );
        // Every refusal is in some line: those after the last line in one at the end.
        let logged: u64 = err
            .lines()
            .filter(|l| l.contains(" connection(s) refused"))
            .map(|l| {
                let n = l.split(" WARN ringport: ").nth(1).unwrap();
                let n = n.split(' ').next().unwrap();
                n.parse::<u64>().unwrap()
            })
            .sum();
        assert_eq!(logged, 5, "{err}");
    }
}
