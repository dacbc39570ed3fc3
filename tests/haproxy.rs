//! Behind HAProxy, restarted under load: HAProxy (the Debian package) in front of two
//! ringport HTTP instances with `send-proxy-v2` and health checks, driven by wrk for 20 s
//! while each instance is stopped (SIGTERM) and started again in turn. Zero failed
//! requests; the access logs show the real client address (`::1`, while HAProxy reaches
//! the instances from 127.0.0.1); every stop finished its in-flight requests (exit 0,
//! nothing discarded). One instance runs on io_uring and the other on poll where both
//! exist, so both backends take part.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, ChildGuard, Start, TempDir};
use ringport::Backend;

/// How long wrk drives HAProxy.
const LOAD: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One ringport instance.
struct Instance {
    name: &'static str,
    backend: Backend,
    port: u16,
    log: PathBuf,
    proc: Option<ChildGuard>,
}

impl Instance {
    /// Start it on its port (again); returns once its banner is out.
    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringport"))
            .args(["serve", "--service", "http", "--io-threads", "2"])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--backend", self.backend.name()])
            .args([
                "--proxy-protocol",
                "v2",
                "--proxy-protocol-from",
                "127.0.0.1",
            ])
            .arg("--access-log")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "{}: {line}", self.name);
        self.proc = Some(ChildGuard { child });
    }

    /// SIGTERM, wait for the exit; its stderr. Asserts exit 0 and no discarded output.
    fn stop(&mut self) -> Duration {
        let mut guard = self.proc.take().expect("running");
        let t = Instant::now();
        common::stop_signal(&guard.child);
        let status = common::wait_exit(&mut guard.child);
        let took = t.elapsed();
        let err = stderr_of(&mut guard.child);
        assert!(status.success(), "{} exited {status}: {err}", self.name);
        let discarded = err
            .lines()
            .find_map(|l| l.split("  discarded").nth(1))
            .map(|v| v.trim().to_string());
        assert_eq!(discarded.as_deref(), Some("0"), "{}: {err}", self.name);
        took
    }
}

/// Requests from wrk an access log holds.
fn plaintext_lines(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.matches("GET /plaintext ").count())
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    err
}

/// HAProxy's view of a server: `UP`, `DOWN`, ... (from `show stat` on its stats socket).
fn haproxy_status(sock: &Path, server: &str) -> String {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(b"show stat\n").is_err() {
        return String::new();
    }
    let mut csv = String::new();
    let _ = s.read_to_string(&mut csv);
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return String::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let status = cols.iter().position(|c| *c == "status").unwrap();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > status && f[0] == "ringport" && f[1] == server)
        .map(|f| f[status].to_string())
        .unwrap_or_default()
}

#[test]
fn rolling_restarts_behind_haproxy_lose_no_request() {
    let dir = TempDir::new("haproxy");
    let uring = common::available(Backend::Uring);
    let mut instances = [
        Instance {
            name: "a",
            backend: if uring { Backend::Uring } else { Backend::Poll },
            port: free_port(),
            log: dir.0.join("a.log"),
            proc: None,
        },
        Instance {
            name: "b",
            backend: Backend::Poll,
            port: free_port(),
            log: dir.0.join("b.log"),
            proc: None,
        },
    ];
    for i in &mut instances {
        i.start();
    }
    let front = loop {
        let p = free_port();
        if std::net::TcpListener::bind(("::1", p)).is_ok() {
            break p;
        }
    };
    let sock = dir.0.join("haproxy.sock");
    let cfg = dir.0.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 2000\n    stats socket {sock} mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
             \x20   retries 3\n    option redispatch 1\n    retry-on all-retryable-errors\n\
             frontend web\n    bind [::1]:{front}\n    default_backend ringport\n\
             backend ringport\n    balance roundrobin\n    option httpchk GET /\n    http-check expect status 200\n\
             \x20   default-server send-proxy-v2 check inter 200ms fall 1 rise 1\n\
             \x20   server a 127.0.0.1:{a}\n    server b 127.0.0.1:{b}\n",
            sock = sock.display(),
            a = instances[0].port,
            b = instances[1].port,
        ),
    )
    .unwrap();
    let haproxy = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start()
        .expect("haproxy runs (.ci/run installs the Debian package haproxy)");
    let mut haproxy = ChildGuard { child: haproxy };
    wait_until("HAProxy to see both instances up", || {
        haproxy_status(&sock, "a") == "UP" && haproxy_status(&sock, "b") == "UP"
    });

    let url = format!("http://[::1]:{front}/plaintext");
    let secs = LOAD.as_secs().to_string();
    let wrk = Command::new("wrk")
        .args(["-t1", "-c8", "-d", &format!("{secs}s"), "--latency", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .expect("wrk runs (.ci/run installs it)");
    let mut wrk = ChildGuard { child: wrk };
    let started = Instant::now();

    // Restart each instance in turn while the load runs: stop, start again, wait until
    // HAProxy sees it up, let it serve a moment, then the next one.
    let mut restarts = Vec::new();
    'outer: loop {
        for inst in instances.iter_mut() {
            if started.elapsed() + Duration::from_secs(4) > LOAD {
                break 'outer;
            }
            std::thread::sleep(Duration::from_millis(500));
            let drain = inst.stop();
            let before = plaintext_lines(&inst.log);
            let t = Instant::now();
            inst.start();
            wait_until(
                "the restarted instance to serve through HAProxy again",
                || haproxy_status(&sock, inst.name) == "UP" && plaintext_lines(&inst.log) > before,
            );
            restarts.push((inst.name, inst.backend, drain, t.elapsed()));
        }
    }
    let status = common::wait_exit(&mut wrk.child);
    let mut report = String::new();
    wrk.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    assert!(
        status.success(),
        "wrk: {report}{}",
        stderr_of(&mut wrk.child)
    );
    let requests: u64 = report
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {report}"));
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx or 3xx"), "{report}");
    assert!(restarts.len() >= 2, "{restarts:?}");
    assert!(requests > 100, "{report}");

    // Every request wrk made reached an instance with its real address: ::1 in the access
    // logs, while the instances only ever talk to 127.0.0.1 (HAProxy's health checks
    // send a LOCAL header and show as 127.0.0.1 on `/`).
    for i in &mut instances {
        i.stop();
    }
    let mut served = 0u64;
    for i in &instances {
        let text = std::fs::read_to_string(&i.log).unwrap();
        for line in text.lines().filter(|l| l.contains("GET /plaintext ")) {
            assert!(line.starts_with("::1 "), "{}: {line}", i.name);
            assert!(line.contains("\" 200 "), "{}: {line}", i.name);
            served += 1;
        }
    }
    // wrk counts the requests it got answers for; the logs may hold a few more (answered
    // while wrk was stopping).
    assert!(
        served >= requests,
        "served {served}, wrk counted {requests}"
    );
    let _ = haproxy.child.kill();
    let _ = haproxy.child.wait();
    let mut summary = format!(
        "haproxy rolling restarts: {requests} requests in {secs} s through HAProxy, 0 failed, \
         {served} in the access logs, {} restarts:",
        restarts.len()
    );
    for (name, backend, drain, up) in &restarts {
        summary.push_str(&format!(
            "\n  {name} ({backend}): stopped in {} ms, serving through HAProxy again {} ms after its start",
            drain.as_millis(),
            up.as_millis()
        ));
    }
    eprintln!("{summary}");
}
