//! The `ringport` program as a user runs it.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{available, connect, serve_process, stop_signal, stoppable, wait_exit, Rng, Start};
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
    let counters = exit_counters(&err);
    assert_eq!(counters["backend"], backend.name(), "stderr: {err}");
    assert_eq!(counters["accepted"], "1", "stderr: {err}");
    assert_eq!(counters["closed"], "1", "stderr: {err}");
    assert_eq!(counters["bytes_in"], "200000", "stderr: {err}");
    assert_eq!(counters["bytes_out"], "200000", "stderr: {err}");
    assert_eq!(counters["failed_calls"], "0", "stderr: {err}");
    // The client that was still connected got EOF at shutdown.
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
}

/// The counters printed at exit: after `ringport: stopped; counters:`, one `name value`
/// line each, indented, the values in one column.
fn exit_counters(stderr: &str) -> std::collections::HashMap<String, String> {
    // Log lines: `TIMESTAMP LEVEL ringport: MESSAGE`; the counters follow the line that
    // says `stopped; counters:`, one line each.
    let messages: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once(" ringport: ").map(|(_, m)| m))
        .collect();
    let at = messages
        .iter()
        .position(|m| *m == "stopped; counters:")
        .unwrap_or_else(|| panic!("no counters in {stderr:?}"));
    let rest = messages[at + 1..].join("\n");
    let lines: Vec<&str> = messages[at + 1..]
        .iter()
        .copied()
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(lines.len() >= 13, "too few counters: {rest:?}");
    let column = lines[0].len()
        - lines[0]
            .trim_start_matches("  ")
            .split_whitespace()
            .last()
            .unwrap()
            .len();
    lines
        .iter()
        .map(|l| {
            assert_eq!(
                l.len() - l.split_whitespace().last().unwrap().len(),
                column,
                "not aligned: {rest:?}"
            );
            let mut parts = l.split_whitespace();
            let (k, v) = (parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(parts.next(), None, "not `name value`: {l:?}");
            (k.to_string(), v.to_string())
        })
        .collect()
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
            .start()
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
        .run()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown backend"), "stderr: {err}");

    let out = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--idle-timeout", "soon"])
        .run()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));

    // A port that is taken is a clear error, not a panic.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--backend", "poll", "--listen", &addr])
        .run()
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
        .run()
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

/// Run `ringport ARGS` with `env` set, expecting a usage error: exit code 2, nothing on
/// stdout, and the error on stderr, which is returned.
fn usage_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringport"));
    cmd.env_remove("RINGPORT_BACKEND");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).run().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    err
}

/// An option of one service given with another is refused, not ignored without a word.
#[test]
fn options_of_another_service_are_refused() {
    for (args, want) in [
        (
            &["serve", "--root", "."][..],
            "--root applies to --service http only (this is --service echo)",
        ),
        (
            &["serve", "--service", "resp", "--access-log", "-"][..],
            "--access-log applies to --service http only (this is --service resp)",
        ),
        (
            &["serve", "--service", "http", "--maxmemory", "1MiB"][..],
            "--maxmemory applies to --service resp only (this is --service http)",
        ),
        (
            &["serve", "--service", "echo", "--autoindex"][..],
            "--autoindex applies to --service http only (this is --service echo)",
        ),
    ] {
        let err = usage_error(args, &[]);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Negative values are out of range, not "unexpected argument"; every number, size and
/// duration names its range; both subcommands take the same units.
#[test]
fn out_of_range_values_name_their_range() {
    for (args, want) in [
        (
            &["serve", "--io-threads", "-1"][..],
            "invalid value '-1' for '--io-threads <N>': '-1' is out of range: give a whole \
             number from 1 to 255",
        ),
        (
            &["serve", "--output-limit", "-1"],
            "'-1' is out of range: give a size from 1 KiB to 1 GiB",
        ),
        (
            &["serve", "--idle-timeout", "-1s"],
            "'-1s' is out of range: give 0 (off) or a duration from 10ms to 168h",
        ),
        (
            &["bench", "--rate", "-5"],
            "'-5' is out of range: give a positive number of messages per second",
        ),
        (
            &["serve", "--max-connections", "18446744073709551615"],
            "is out of range: give a whole number from 1 to 10000000",
        ),
        (
            &["serve", "--max-connections", "0"],
            "'0' is out of range: give a whole number from 1 to 10000000",
        ),
        (
            &["serve", "--idle-timeout", "1ns"],
            "unknown unit 'ns' (use us, ms, s, m or h (a bare number is seconds))",
        ),
        (
            &["serve", "--batch-wait", "20ms"],
            "'20ms' is out of range: give 0 (off) or a duration from 0ms to 10ms",
        ),
        (
            &["serve", "--send-timeout", "5ms"],
            "'5ms' is out of range: give 0 (off) or a duration from 10ms to 168h",
        ),
        (
            &["bench", "--warmup", "1000000000"],
            "'1000000000' is out of range: give 0 (off) or a duration from 1ms to 1h",
        ),
        (
            &["serve", "--output-limit", "1MB"],
            "unknown unit 'MB' (use B, KiB, MiB or GiB (K, M, G for short))",
        ),
        (
            &["bench", "--size", "1XB"],
            "unknown unit 'XB' (use B, KiB, MiB or GiB (K, M, G for short))",
        ),
        (
            &["serve", "--buffer-size", "100.5"],
            "'100.5' is not a whole number of bytes",
        ),
    ] {
        let err = usage_error(args, &[]);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

/// Decimal sizes are taken, and a bare number is seconds for `serve` as for `bench`: the
/// server starts with them.
#[cfg(unix)]
#[test]
fn decimal_sizes_and_bare_seconds_are_taken() {
    let mut p = serve_process(&[
        "--backend",
        "poll",
        "--output-limit",
        "1.5MiB",
        "--idle-timeout",
        "30",
        "--send-timeout",
        "2.5",
        "--shutdown-grace",
        "0.5",
        "--linger",
        "0.25",
    ])
    .unwrap();
    let mut c = connect(p.addr);
    common::assert_echo(&mut c, b"decimals");
    stop_signal(&p.guard.child);
    assert!(wait_exit(&mut p.guard.child).success());
}

/// `RINGPORT_BACKEND` set but empty, or set to nonsense, is named in the error, not
/// `--backend`.
#[test]
fn backend_variable_errors_name_the_variable() {
    let err = usage_error(&["serve"], &[("RINGPORT_BACKEND", "")]);
    assert!(
        err.contains(
            "RINGPORT_BACKEND is set but empty: set it to auto, uring or poll, or unset it"
        ),
        "{err}"
    );
    assert!(!err.contains("--backend"), "{err}");
    let err = usage_error(&["serve"], &[("RINGPORT_BACKEND", "pigeon")]);
    assert!(
        err.contains("RINGPORT_BACKEND='pigeon': unknown backend 'pigeon'"),
        "{err}"
    );
}

/// A banner that cannot be written (stdout is /dev/full) stops the server with one line and
/// exit code 1: no panic, no backtrace.
#[cfg(target_os = "linux")]
#[test]
fn banner_to_a_full_stdout_is_one_clear_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    // A --max-connections any open files limit has room for: no warning about it.
    let out = Command::new(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--listen", "127.0.0.1:0", "--backend", "poll"])
        .args(["--max-connections", "100"])
        .stdout(full)
        .stderr(std::process::Stdio::piped())
        .run()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(
        err.trim_end().ends_with(
            " ERROR ringport: cannot write the banner to stdout (No space left on device (os \
             error 28)); stopping"
        ),
        "stderr: {err}"
    );
}

/// Log lines that cannot be written (stderr is /dev/full) do not stop the server: it serves
/// and exits 0 on SIGTERM.
#[cfg(target_os = "linux")]
#[test]
fn log_lines_to_a_full_stderr_are_dropped() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = common::ChildGuard {
        child: Command::new(env!("CARGO_BIN_EXE_ringport"))
            .args(["serve", "--listen", "127.0.0.1:0", "--backend", "poll"])
            .stdout(std::process::Stdio::piped())
            .stderr(full)
            .start()
            .unwrap(),
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no banner: {line:?}"));
    common::assert_echo(&mut connect(addr), b"still serving");
    stop_signal(&child.child);
    let status = wait_exit(&mut child.child);
    assert_eq!(status.code(), Some(0), "{status}");
}

/// io_uring buffers the kernel will not give (here: under a 4 GiB address-space limit) are
/// named with the memory asked for, not blamed on RLIMIT_MEMLOCK.
#[cfg(target_os = "linux")]
#[test]
fn refused_ring_memory_says_how_much_was_asked() {
    if !available(Backend::Uring) {
        eprintln!("skipped: backend uring is not available on this machine");
        return;
    }
    if Command::new("prlimit").arg("--version").run().is_err() {
        eprintln!("skipped: prlimit is not installed");
        return;
    }
    let out = Command::new("prlimit")
        .arg("--as=4294967296")
        .arg(env!("CARGO_BIN_EXE_ringport"))
        .args(["serve", "--listen", "127.0.0.1:0", "--backend", "uring"])
        .args(["--ring-buffers", "32768", "--buffer-size", "1MiB"])
        .stdout(std::process::Stdio::null())
        .run()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains(
            " ERROR ringport: cannot serve on 127.0.0.1:0: io_uring unavailable: the ring asked for \
             32 GiB per I/O thread for its receive buffers (32768 of 1 MiB) and the kernel \
             refused it ("
        ),
        "stderr: {err}"
    );
    assert!(
        err.trim_end()
            .ends_with("); use fewer --ring-buffers or a smaller --buffer-size"),
        "stderr: {err}"
    );
    assert!(!err.contains("MEMLOCK"), "stderr: {err}");
}

/// A stop signal delivered twice at once (`timeout` signals the process and its group) is
/// one request to stop: the shutdown is graceful (exit 0, counters). A second signal later
/// exits at once (130), saying so, while output is still owed.
#[cfg(unix)]
#[test]
fn a_signal_twice_at_once_is_one_stop_and_a_later_one_exits_at_once() {
    let kill = |child: &std::process::Child| {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }
    };
    let mut p = serve_process(&["--backend", "poll"]).unwrap();
    assert_eq!((kill(&p.guard.child), kill(&p.guard.child)), (0, 0));
    let status = wait_exit(&mut p.guard.child);
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(exit_counters(&err).contains_key("accepted"), "{err}");

    // Output owed to a client that does not read holds the shutdown (up to the grace).
    let mut p = serve_process(&["--backend", "poll", "--shutdown-grace", "60s"]).unwrap();
    let mut c = connect(p.addr);
    socket2::SockRef::from(&c)
        .set_recv_buffer_size(16 * 1024)
        .unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        while w.write_all(&chunk).is_ok() {}
    });
    // Echoed bytes: the connection is the server's, and its output builds up from here.
    let mut some = [0u8; 4096];
    c.read_exact(&mut some).unwrap();
    assert_eq!(kill(&p.guard.child), 0);
    // Well past the 500 ms within which a repeat is the same request.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(kill(&p.guard.child), 0);
    let status = wait_exit(&mut p.guard.child);
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("a second signal: exiting at once"), "{err}");
    let _ = c.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
}
