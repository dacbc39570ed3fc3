//! The `ringport` program as a user runs it.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{available, connect, serve_process, stop_signal, stoppable, wait_exit, Rng};
use ringport::Backend;

/// `ringport serve` prints its banner, echoes byte-exact, and on the stop signal (SIGTERM;
/// Ctrl+C on Windows) closes the connection still open, prints its counters and exits 0.
fn serve_echo_then_stop_signal_exits_zero(backend: Backend, workers: &str) {
    skip_unless!(
        available(backend),
        "backend {backend} is not available on this machine"
    );
    let mut p = serve_process(&["--backend", backend.name(), "--workers", workers]).unwrap();
    assert!(
        p.banner.contains(&format!("backend {}", backend.name())),
        "banner: {}",
        p.banner
    );
    assert!(p.banner.contains("service echo"), "banner: {}", p.banner);
    let payload = Rng::new(9).bytes(200_000);
    let mut c = connect(p.addr);
    let mut w = c.try_clone().unwrap();
    let sent = payload.clone();
    let t = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut got = vec![0; payload.len()];
    c.read_exact(&mut got).unwrap();
    t.join().unwrap();
    assert!(got == payload);
    stop_signal(&p.guard.child);
    let status = wait_exit(&mut p.guard.child);
    assert!(status.success(), "exit status {status}");
    let mut err = String::new();
    p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("stopped;"), "stderr: {err}");
    assert!(err.contains("accepted 1"), "stderr: {err}");
    // The client that was still connected got EOF at shutdown.
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn uring_pool_serve_then_stop_signal() {
    serve_echo_then_stop_signal_exits_zero(Backend::Uring, "2");
}

#[test]
fn uring_inline_serve_then_stop_signal() {
    serve_echo_then_stop_signal_exits_zero(Backend::Uring, "0");
}

#[test]
fn poll_pool_serve_then_stop_signal() {
    serve_echo_then_stop_signal_exits_zero(Backend::Poll, "2");
}

#[test]
fn poll_inline_serve_then_stop_signal() {
    serve_echo_then_stop_signal_exits_zero(Backend::Poll, "0");
}

#[test]
fn backend_from_environment() {
    let mut p = Command::new(env!("CARGO_BIN_EXE_ringport"));
    p.env("RINGPORT_BACKEND", "poll");
    stoppable(&mut p);
    let mut child = common::ChildGuard {
        child: p
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("backend poll"), "banner: {line}");
    stop_signal(&child.child);
    assert!(wait_exit(&mut child.child).success());
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--backend", "carrier-pigeon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown backend"), "stderr: {err}");

    let out = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--idle-timeout", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));

    // A port that is taken is a clear error, not a panic.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--backend", "poll", "--listen", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot serve on"), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
}

#[test]
fn help_shows_examples() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--backend",
        "--workers",
        "--io-threads",
        "--max-connections",
        "--idle-timeout",
        "--output-limit",
        "Examples:",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}
