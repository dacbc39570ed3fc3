//! `ringport bench` as a process: against ringport's own echo server on every backend this
//! machine runs, against a closed port, and against servers that answer wrongly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[path = "common/process.rs"]
mod process;

use process::Start;

const BIN: &str = env!("CARGO_BIN_EXE_ringport");
/// Generous: a loaded CI machine may be slow to start a process.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `ringport serve` child, killed when dropped (also when the test panics).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `ringport serve` on port 0 with `backend`; `None` when that backend does not start
/// here (it exits, or its banner names another backend).
fn serve(backend: &str) -> Option<Server> {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--io-threads", "1"])
        .args(["--workers", "1", "--backend", backend])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .start()
        .expect("spawn ringport serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // Own the child from here so a panic below still kills it.
    let mut server = Server {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    let line = rx
        .recv_timeout(DEADLINE)
        .expect("ringport serve printed no banner in time");
    // An empty line: stdout closed without a banner (the backend failed to start).
    if !line.contains(&format!("backend {backend},")) {
        return None;
    }
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in banner {line:?}"));
    server.addr = addr;
    Some(server)
}

/// Run `ringport bench` with `args` and collect its output, failing the test if it hangs.
fn bench(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .expect("spawn ringport bench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("wait for ringport bench"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("ringport bench {args:?} did not finish within {DEADLINE:?}");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout:?}"))
}

/// Closed loop, verified, against a real echo server.
fn closed_loop_verifies_and_reports_json(server: &Server) {
    let addr = server.addr.to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--connections",
        "8",
        "--depth",
        "4",
        "--size",
        "100",
        "--verify",
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["mode"], "closed");
    assert_eq!(v["connections"], 8);
    assert_eq!(v["size"], 100);
    let msgs = v["msgs"].as_u64().expect("msgs");
    assert!(msgs > 0, "{v}");
    assert!(v["msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(v["latency_us"]["p99"].as_f64().unwrap() >= v["latency_us"]["p50"].as_f64().unwrap());
    // --verify says what it checked: at least every measured message, both ways.
    assert_eq!(v["verify"], true, "{v}");
    let verified = v["verified_bytes"].as_u64().expect("verified_bytes");
    assert!(
        verified >= msgs * 100,
        "{verified} bytes verified for {msgs} msgs: {v}"
    );
}

/// Open loop: the number answered follows the schedule, not the server's speed.
fn open_loop_keeps_the_rate(server: &Server) {
    let addr = server.addr.to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--connections",
        "4",
        "--rate",
        "2000",
        // Explicit depth 1 is what the open loop does anyway (benches/echo.rs passes it).
        "--depth",
        "1",
        "--verify",
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["mode"], "open");
    assert_eq!(v["errors"], 0);
    let msgs = v["msgs"].as_u64().unwrap();
    // 2000 msgs/s for about a second; generous bounds for a loaded machine.
    assert!((1000..=3000).contains(&msgs), "{msgs} answered: {v}");
}

fn poll_server() -> Server {
    serve("poll").expect("the poll backend starts everywhere")
}

/// The uring server, or `None` (with a note) where it does not start yet or is not allowed.
fn uring_server() -> Option<Server> {
    let s = serve("uring");
    if s.is_none() {
        // Straight to stderr, which the harness does not capture: the skip shows in the output.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: `ringport serve --backend uring` does not start on this machine"
        );
    }
    s
}

#[test]
fn poll_closed_loop_verifies_and_reports_json() {
    closed_loop_verifies_and_reports_json(&poll_server());
}

#[test]
fn uring_closed_loop_verifies_and_reports_json() {
    if let Some(s) = uring_server() {
        closed_loop_verifies_and_reports_json(&s);
    }
}

#[test]
fn poll_open_loop_keeps_the_rate() {
    open_loop_keeps_the_rate(&poll_server());
}

#[test]
fn uring_open_loop_keeps_the_rate() {
    if let Some(s) = uring_server() {
        open_loop_keeps_the_rate(&s);
    }
}

#[test]
fn refused_connection_is_named_and_fails() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = bench(&["--addr", &addr.to_string(), "--duration", "1"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
}

/// A server thread that answers every connection with `answer(input)`, or closes it when
/// `answer` returns `None`.
fn fake_server(answer: fn(&[u8]) -> Option<Vec<u8>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    match answer(&buf[..n]) {
                        Some(reply) => {
                            if s.write_all(&reply).is_err() {
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn wrong_bytes_fail_verification_and_name_the_mismatch() {
    let addr = fake_server(|input| Some(input.iter().map(|b| b.wrapping_add(1)).collect()));
    let out = bench(&[
        "--addr",
        &addr.to_string(),
        "--connections",
        "2",
        "--verify",
        "--warmup",
        "0",
        "--duration",
        "5",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("verify mismatch on connection"), "{err}");
    assert!(err.contains("byte 0 of message 0"), "{err}");
}

#[test]
fn server_closing_mid_run_fails_the_run() {
    // Close each connection at its first message.
    let addr = fake_server(|_| None);
    let out = bench(&[
        "--addr",
        &addr.to_string(),
        "--connections",
        "2",
        "--warmup",
        "0",
        "--duration",
        "5",
        "--json",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("the server closed the connection"), "{err}");
    let v = json(&out);
    assert!(v["errors"].as_u64().unwrap() >= 1, "{v}");
}

/// Exit code and stderr of a run that must be refused before it starts.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = bench(args);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed {:?}",
        text(&out.stdout)
    );
    (out.status.code(), text(&out.stderr))
}

#[test]
fn depth_with_rate_is_refused() {
    // Refused before connecting: nothing listens on port 1.
    let (code, err) = refused(&["--addr", "127.0.0.1:1", "--rate", "1000", "--depth", "16"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--depth 16 cannot be used with --rate 1000"),
        "{err}"
    );
    assert!(!err.contains("connection refused"), "{err}");
}

#[test]
fn zero_duration_is_refused() {
    for zero in ["0", "0s", "0.0"] {
        let (code, err) = refused(&["--duration", zero]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("--duration"), "{err}");
        assert!(
            err.contains(&format!(
                "'{zero}' is out of range: give a duration from 10ms to 24h"
            )),
            "{err}"
        );
    }
}

#[test]
fn missing_server_pid_fails_at_start() {
    // Above every pid_max, so no such process; checked before connecting to anything.
    let (code, err) = refused(&["--addr", "127.0.0.1:1", "--server-pid", "2147483647"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--server-pid 2147483647"), "{err}");
    if cfg!(target_os = "linux") {
        assert!(err.contains("no such process"), "{err}");
    }
    assert!(!err.contains("connection refused"), "{err}");
}

#[test]
fn bad_sizes_and_addresses_are_named() {
    for (size, why) in [
        ("0", "'0' is out of range: give a size from 1 B to 64 MiB"),
        (
            "65MiB",
            "'65MiB' is out of range: give a size from 1 B to 64 MiB",
        ),
        (
            "1XB",
            "unknown unit 'XB' (use B, KiB, MiB or GiB (K, M, G for short))",
        ),
        ("big", "'big' is not a size like 4096, 64KiB or 1.5MiB"),
        ("-1", "'-1' is out of range: give a size from 1 B to 64 MiB"),
    ] {
        let (code, err) = refused(&["--size", size]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(why), "--size {size}: {err}");
    }
    let (code, err) = refused(&["--addr", "localhost"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not an address like"), "{err}");
}

#[test]
fn sizes_take_units_and_addresses_take_host_names() {
    let server = poll_server();
    let addr = format!("localhost:{}", server.addr.port());
    let out = bench(&[
        "--addr",
        &addr,
        "--connections",
        "1",
        "--size",
        "1MiB",
        "--verify",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
        "--json",
    ]);
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["size"], 1 << 20, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["msgs"].as_u64().unwrap() > 0, "{v}");
    // The server listens on 127.0.0.1 only: that is the address localhost reached it at.
    assert_eq!(v["addr"], server.addr.to_string(), "{v}");
}

#[test]
fn text_summary_names_verification_and_threads() {
    let server = poll_server();
    let out = bench(&[
        "--addr",
        &server.addr.to_string(),
        "--connections",
        "4",
        "--threads",
        "2",
        "--verify",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
    ]);
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("2 threads"), "{summary}");
    assert!(summary.contains("  verified    every byte: "), "{summary}");
    assert!(summary.contains("  latency     p50 "), "{summary}");
    if cfg!(target_os = "linux") {
        assert!(summary.contains("% of one core (2 threads"), "{summary}");
    }
}

#[test]
fn run_stopped_in_warm_up_prints_no_empty_numbers() {
    // Close each connection at its first message, well within the default 1 s warm-up.
    let addr = fake_server(|_| None);
    let out = bench(&[
        "--addr",
        &addr.to_string(),
        "--connections",
        "2",
        "--verify",
    ]);
    assert!(!out.status.success());
    let summary = text(&out.stdout);
    assert!(summary.contains("stopped during warm-up"), "{summary}");
    assert!(summary.contains("nothing measured"), "{summary}");
    assert!(!summary.contains("latency"), "{summary}");
    assert!(!summary.contains("throughput"), "{summary}");
    assert!(!summary.contains("every byte"), "{summary}");
    assert!(summary.contains("  errors      "), "{summary}");
    if cfg!(target_os = "linux") {
        assert!(!summary.contains("unknown"), "{summary}");
        assert!(summary.contains("% of one core over "), "{summary}");
    }
    let err = text(&out.stderr);
    assert!(err.contains("the server closed the connection"), "{err}");
}

/// An echo server in this process (poll backend), for tests that watch its counters.
fn echo_in_process() -> ringport::Server {
    let mut b = ringport::Server::builder();
    b.listen("127.0.0.1:0".parse().unwrap())
        .backend(ringport::Backend::Poll);
    b.build(ringport::service::Echo)
        .expect("echo server starts")
}

/// impossible_rate_is_counted_as_missed: a rate no load generator keeps ends on time, in
/// bounded memory (here under a 2 GiB address-space limit), and says how much it missed.
#[test]
fn impossible_rate_is_counted_as_missed() {
    let server = poll_server();
    let addr = server.addr.to_string();
    let args = [
        "--addr",
        &addr,
        "--rate",
        "1e12",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--json",
    ];
    let limited = Command::new("prlimit").arg("--version").run().is_ok();
    let started = std::time::Instant::now();
    let out = if limited {
        let child = Command::new("prlimit")
            .arg("--as=2147483648")
            .arg(BIN)
            .arg("bench")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .unwrap();
        child.wait_with_output().unwrap()
    } else {
        eprintln!("prlimit is not installed: memory not limited");
        bench(&args)
    };
    let took = started.elapsed();
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    assert!(took < Duration::from_secs(15), "a 1 s run took {took:?}");
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["rate_missed"], true, "{v}");
    let (planned, sent, missed) = (
        v["planned"].as_u64().unwrap(),
        v["sent"].as_u64().unwrap(),
        v["missed"].as_u64().unwrap(),
    );
    assert_eq!(planned, sent + missed, "{v}");
    assert!(sent > 0 && missed > sent, "{v}");
    assert!(v["msgs"].as_u64().unwrap() > 0, "{v}");
}

/// Buffers beyond the memory budget are refused before anything connects.
#[test]
fn buffers_over_the_memory_budget_are_refused() {
    let (code, err) = refused(&[
        "--addr",
        "127.0.0.1:1",
        "--size",
        "64MiB",
        "--connections",
        "40",
        "--duration",
        "1",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        "ringport bench: --size 64 MiB x --connections 40 x (--depth 1 + 1 pattern) needs \
         about 5 GiB of message buffers, more than the 2 GiB the load generator allows itself: \
         use fewer connections, smaller messages or a lower depth"
    );
}

/// setup_precedes_the_window: building large buffers happens before the clock starts, so
/// the measured window is the one asked for and holds answers.
#[test]
fn setup_precedes_the_window() {
    let server = poll_server();
    let out = bench(&[
        "--addr",
        &server.addr.to_string(),
        "--size",
        "4MiB",
        "--connections",
        "4",
        "--warmup",
        "0",
        "--duration",
        "2",
        "--json",
    ]);
    // A window long enough for a busy machine (or Wine's sockets) to echo a few messages.
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["duration_s"], 2.0, "{v}");
    assert!(v["msgs"].as_u64().unwrap() > 0, "{v}");
}

/// A server that reads and never answers: the run measured nothing, so it fails and says
/// why, in text (nothing claimed verified) and in JSON.
#[test]
fn server_that_never_answers_fails_the_run() {
    let addr = fake_server(|_| Some(Vec::new())).to_string();
    let args = [
        "--addr",
        &addr,
        "--connections",
        "2",
        "--verify",
        "--warmup",
        "0",
        "--duration",
        "0.3",
    ];
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    let why = "no message was answered in the measured window (is an echo server answering \
               there?)";
    assert!(
        summary.contains(&format!("  result      failed: {why}")),
        "{summary}"
    );
    assert!(!summary.contains("every byte"), "{summary}");
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!("ringport bench: {why}")
    );
    let out = bench(&[&args[..], &["--json"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["why"], why, "{v}");
    assert_eq!(v["msgs"], 0, "{v}");
}

/// With --json, a first connection that fails still prints one JSON object.
#[test]
fn json_says_why_when_nothing_connects() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = bench(&["--addr", &addr.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["ok"], false, "{v}");
    let why = v["why"].as_str().unwrap();
    assert_eq!(
        why,
        format!(
            "cannot connect to {addr} (connection 0): connection refused (is an echo server \
             listening there?)"
        )
    );
}

/// A run stopped in warm-up says so in JSON.
#[test]
fn json_names_a_stop_during_warm_up() {
    let addr = fake_server(|_| None);
    let out = bench(&["--addr", &addr.to_string(), "--connections", "2", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["stopped_during"], "warmup", "{v}");
    assert_eq!(v["measured"], false, "{v}");
}

/// Many connections failing the same way are reported on one line that counts them.
#[test]
fn connections_failing_alike_are_one_line() {
    let addr = fake_server(|_| None);
    let out = bench(&[
        "--addr",
        &addr.to_string(),
        "--connections",
        "20",
        "--warmup",
        "0",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("the server closed the connection"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    let v = json(&out);
    let n = v["errors"].as_u64().unwrap();
    if n > 1 {
        assert!(
            lines[0].starts_with(&format!(
                "ringport bench: {n} connections: the server closed the connection (first: "
            )),
            "{err}"
        );
    }
    assert_eq!(v["error_messages"].as_array().unwrap().len(), 1, "{v}");
}

/// More threads than connections: the run says it used fewer.
#[test]
fn threads_beyond_connections_are_reduced_and_said() {
    let server = poll_server();
    let out = bench(&[
        "--addr",
        &server.addr.to_string(),
        "--connections",
        "2",
        "--threads",
        "8",
        "--warmup",
        "0",
        "--duration",
        "0.3",
        "--json",
    ]);
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "ringport bench: --threads 8 reduced to 2: at most one thread per connection"
    );
    let v = json(&out);
    assert_eq!(v["threads"], 2, "{v}");
    assert_eq!(v["threads_asked"], 8, "{v}");
}

/// Ctrl-C: the header was printed when the run started; the summary of what was measured
/// follows, then exit code 130. With --json, the JSON says it was interrupted.
fn ctrl_c_prints_what_was_measured(json_out: bool) {
    let server = echo_in_process();
    let addr = server.local_addr().to_string();
    let mut args = vec![
        "bench",
        "--addr",
        &addr,
        "--connections",
        "2",
        "--warmup",
        "0",
        "--duration",
        "60",
    ];
    if json_out {
        args.push("--json");
    }
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .unwrap();
    let pid = child.id();
    let guard_pid = pid;
    // Kill it if anything below fails.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
    let _kill = Kill(guard_pid);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    if !json_out {
        let mut header = String::new();
        stdout.read_line(&mut header).unwrap();
        assert!(
            header.starts_with(&format!(
                "ringport bench: {addr}, 2 connections, 64 B messages"
            )),
            "{header}"
        );
    }
    let start = std::time::Instant::now();
    while server.stats().bytes_out < 64 * 100 {
        assert!(start.elapsed() < DEADLINE, "no traffic: {}", server.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    if json_out {
        let v: serde_json::Value = serde_json::from_str(rest.trim()).unwrap();
        assert_eq!(v["interrupted"], true, "{v}");
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["why"], "interrupted", "{v}");
        assert_eq!(v["stopped_during"], "measurement", "{v}");
        assert!(v["msgs"].as_u64().unwrap() > 0, "{v}");
    } else {
        assert!(rest.contains("  window      interrupted after "), "{rest}");
        assert!(rest.contains("  throughput  "), "{rest}");
        assert!(
            rest.contains("  result      interrupted: the figures cover what was measured"),
            "{rest}"
        );
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_prints_the_summary_and_exits_130() {
    ctrl_c_prints_what_was_measured(false);
}

#[cfg(unix)]
#[test]
fn ctrl_c_prints_the_json_and_exits_130() {
    ctrl_c_prints_what_was_measured(true);
}

/// `ringport bench` under a low soft open-files limit (`prlimit --nofile=64:4096`) raises it
/// for its 300 connections and runs them all, verified; under a hard limit of 128 it refuses
/// to start, naming the room and `--connections`.
#[cfg(target_os = "linux")]
#[test]
fn bench_raises_its_open_files_limit_for_its_connections() {
    let server = echo_in_process();
    let addr = server.local_addr().to_string();
    let run = |limit: &str| {
        let child = Command::new("prlimit")
            .arg(format!("--nofile={limit}"))
            .arg(BIN)
            .args(["bench", "--addr", &addr, "--connections", "300"])
            .args(["--warmup", "0", "--duration", "0.5", "--verify", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .start()
            .expect("spawn prlimit (util-linux) with ringport bench");
        child.wait_with_output().expect("wait for ringport bench")
    };
    let out = run("64:4096");
    assert!(out.status.success(), "bench failed: {}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["connections"], 300, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["verified_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(!text(&out.stderr).contains("open files limit"));

    // Fewer descriptors than connections: refused at start (exit 2, as for options that
    // cannot be honoured), not failed partway.
    let out = run("64:128");
    assert_eq!(
        out.status.code(),
        Some(2),
        "300 connections under 128 descriptors"
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("open files limit (RLIMIT_NOFILE) is 128, hard limit 128: room for about")
            && err.contains("not the 300 of --connections"),
        "{err}"
    );
}

/// The open files limit is set with prlimit (util-linux): Linux's.
#[cfg(not(target_os = "linux"))]
#[test]
fn bench_raises_its_open_files_limit_for_its_connections() {
    eprintln!("skipped: bench_raises_its_open_files_limit_for_its_connections: sets RLIMIT_NOFILE with prlimit, Linux's");
}
