//! Driver internals under stress: a starved io_uring buffer ring, closes racing in-flight
//! operations (both backends), and the real fallback when seccomp forbids io_uring (as
//! Docker's default profile does).
//!
//! Each test holds one lock for its whole run: the descriptor-count test counts this
//! process's descriptors, so no other test may open sockets meanwhile.
//!
//! Outside Linux the io_uring cases skip (no such backend) and the seccomp case is skipped
//! with its reason; the close race runs on poll everywhere.

mod common;

#[cfg(target_os = "linux")]
use std::io::{self, BufRead, BufReader};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
#[cfg(target_os = "linux")]
use std::process::{Child, Command, Stdio};
#[cfg(target_os = "linux")]
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;
#[cfg(target_os = "linux")]
use std::time::Instant;

use common::{available, connect, wait_until, Rng, DEADLINE};
#[cfg(target_os = "linux")]
use common::{fd_count, wait_exit, ChildGuard, Start};
use ringport::fallback::Disposition;
use ringport::{Backend, Server, ServerStats};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deterministic bytes for connection `seed`, different for every seed.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// An echo server on `backend`, or `None` (with a note) when this machine lacks it.
fn server(
    backend: Backend,
    workers: usize,
    configure: impl FnOnce(&mut ringport::ServerBuilder),
) -> Option<Server> {
    if !available(backend) {
        common::skip(format_args!(
            "backend {backend} is not available on this machine"
        ));
        return None;
    }
    let mut b = Server::builder();
    b.listen("127.0.0.1:0".parse().unwrap())
        .backend(backend)
        .workers(workers);
    configure(&mut b);
    let server = b.build(ringport::service::Echo).expect("server starts");
    assert_eq!(server.backend(), backend);
    Some(server)
}

fn stop(server: Server) -> ServerStats {
    server.shutdown();
    let stats = server.wait().expect("server exits cleanly");
    eprintln!("{stats}");
    assert_eq!(stats.open, 0, "{stats}");
    stats
}

/// Echo `total` bytes over `stream` in rounds of `chunk` and check them byte for byte.
fn echo_exact(stream: &mut TcpStream, seed: u64, total: usize) {
    let data = payload(seed, total);
    let mut back = vec![0u8; total];
    stream.write_all(&data).unwrap();
    stream.read_exact(&mut back).unwrap();
    assert!(back == data, "connection {seed}: echo differs");
}

/// 500 connections, all open at once, all sending at once, against 4 receive buffers of
/// 1 KiB: the ring runs dry again and again, and not one byte may be lost or moved.
fn tiny_buffer_ring(workers: usize) {
    let _serial = serial();
    const CONNS: usize = 500;
    const THREADS: usize = 25;
    const ROUNDS: usize = 8;
    let Some(server) = server(Backend::Uring, workers, |b| {
        b.ring_buffers(4).buffer_size(1024);
    }) else {
        return;
    };
    let addr = server.local_addr();
    let barrier = Arc::new(Barrier::new(THREADS));
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let ids: Vec<u64> = (0..CONNS / THREADS)
                    .map(|i| (t * 1000 + i) as u64)
                    .collect();
                let mut socks: Vec<TcpStream> = ids.iter().map(|_| connect(addr)).collect();
                // Every connection is open before any traffic starts.
                barrier.wait();
                let mut sent = vec![Vec::new(); socks.len()];
                for round in 0..ROUNDS {
                    // Sizes straddle the 1 KiB buffers: one message spans several buffers.
                    let len = 700 + (round * 977 + t * 131) % 5000;
                    for (i, s) in socks.iter_mut().enumerate() {
                        let chunk = payload(ids[i] << 8 | round as u64, len);
                        s.write_all(&chunk).unwrap();
                        sent[i].push(chunk);
                    }
                    for (i, s) in socks.iter_mut().enumerate() {
                        let want = sent[i].last().unwrap();
                        let mut got = vec![0u8; want.len()];
                        s.read_exact(&mut got).unwrap();
                        assert!(&got == want, "conn {} round {round}: echo differs", ids[i]);
                    }
                }
                for s in &mut socks {
                    s.shutdown(Shutdown::Write).unwrap();
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).unwrap();
                    assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
                }
                socks.len()
            })
        })
        .collect();
    let mut conns = 0;
    for c in clients {
        conns += c.join().expect("client thread");
    }
    assert_eq!(conns, CONNS);
    wait_until("every connection closed", || server.stats().open == 0);
    let stats = stop(server);
    assert_eq!(stats.accepted, CONNS as u64, "{stats}");
    assert_eq!(stats.closed, CONNS as u64, "{stats}");
    assert_eq!(stats.bytes_in, stats.bytes_out, "{stats}");
    assert!(
        stats.enobufs > 0,
        "4 buffers for 500 busy connections never ran dry: {stats}"
    );
    assert_eq!(stats.errors_of(Disposition::Fatal), 0);
}

#[test]
fn tiny_buffer_ring_stays_byte_exact_inline() {
    tiny_buffer_ring(0);
}

#[test]
fn tiny_buffer_ring_stays_byte_exact_with_workers() {
    tiny_buffer_ring(2);
}

/// A table of registered descriptors of 3 slots and 10 connections at a time: connections
/// in and past the table, closed in a mixed order and their slots reused, all echo byte for
/// byte, and every close reaches the peer (the table never keeps a socket open).
fn registered_files_and_plain_descriptors(workers: usize) {
    let _serial = serial();
    const CONNS: usize = 10;
    let Some(server) = server(Backend::Uring, workers, |b| {
        // One ring, so that its 3 slots are all the table there is.
        b.registered_files(3).io_threads(1);
    }) else {
        return;
    };
    let addr = server.local_addr();
    let mut socks: Vec<TcpStream> = (0..CONNS).map(|_| connect(addr)).collect();
    for (i, s) in socks.iter_mut().enumerate() {
        echo_exact(s, i as u64, 10_000 + i * 333);
    }
    // Close every other one (slots in and past the table come free), open as many again
    // (they take those slots), and echo on all of them.
    let mut closed = 0;
    for i in (0..CONNS).rev().step_by(2) {
        let mut s = socks.swap_remove(i);
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
        closed += 1;
    }
    wait_until("the closed connections gone", || {
        server.stats().open == (CONNS - closed) as u64
    });
    socks.extend((0..closed).map(|_| connect(addr)));
    for (i, s) in socks.iter_mut().enumerate() {
        echo_exact(s, 100 + i as u64, 50_000 + i * 777);
    }
    // The server closes each (it answers the client's EOF with its own): the client reads
    // EOF, which it would not while anything still held the socket open.
    for s in &mut socks {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
    }
    wait_until("every connection closed", || server.stats().open == 0);
    let stats = stop(server);
    let total = (CONNS + closed) as u64;
    assert_eq!(stats.accepted, total, "{stats}");
    assert_eq!(stats.closed, total, "{stats}");
    assert_eq!(stats.bytes_in, stats.bytes_out, "{stats}");
    assert_eq!(stats.errors_of(Disposition::Fatal), 0);
    // Some connections were in the table and some past it (kernels before 6.13 get none).
    if kernel_at_least(6, 13) {
        assert!(stats.registered >= 3, "{stats}");
    } else {
        assert_eq!(stats.registered, 0, "{stats}");
    }
    assert!(stats.registered < total, "{stats}");
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split('.').map(|p| {
        p.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u32>()
            .ok()
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[test]
fn registered_files_and_plain_descriptors_inline() {
    registered_files_and_plain_descriptors(0);
}

#[test]
fn registered_files_and_plain_descriptors_with_workers() {
    registered_files_and_plain_descriptors(2);
}

/// Connect, push as much as the socket takes without ever reading, then reset: the server
/// has a send blocked on a full window and a receive armed when the RST lands.
fn abuse(addr: SocketAddr, seed: u64) {
    let s = connect(addr);
    s.set_nonblocking(true).unwrap();
    let junk = payload(seed, 64 * 1024);
    let mut s_ref = &s;
    let mut written = 0;
    while written < 4 * 1024 * 1024 {
        match s_ref.write(&junk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // Linger 0: close sends RST instead of FIN.
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// Closes racing operations in flight (resets while a send is blocked and a receive is
/// armed), on both backends: no stranger's byte, and every descriptor given back.
fn close_with_ops_in_flight(backend: Backend) {
    let _serial = serial();
    const ROUNDS: u64 = 200;
    const ABUSERS: u64 = 4;
    const CHECKERS: u64 = 3;
    let Some(server) = server(backend, 2, |b| {
        // Small limits: the read pause (output over the limit) is hit as well.
        b.ring_buffers(64).buffer_size(4096).output_limit(64 * 1024);
    }) else {
        return;
    };
    let addr = server.local_addr();
    #[cfg(target_os = "linux")]
    let baseline = fd_count();
    for round in 0..ROUNDS {
        let mut threads = Vec::new();
        for a in 0..ABUSERS {
            threads.push(thread::spawn(move || abuse(addr, round << 16 | a)));
        }
        for c in 0..CHECKERS {
            threads.push(thread::spawn(move || {
                let mut s = connect(addr);
                let seed = 1 << 40 | round << 16 | c;
                // Several exchanges on one connection: any stranger's byte would show.
                for part in 0..4 {
                    echo_exact(&mut s, seed << 3 | part, 3000 + (part as usize) * 4096);
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "round {round}: {} stray bytes", rest.len());
            }));
        }
        for t in threads {
            t.join().expect("client");
        }
    }
    let total = ROUNDS * (ABUSERS + CHECKERS);
    // An abuser may reset before the server accepted it: Linux still accepts it, Windows
    // fails that accept and the server skips the peer. Every connection is one or the other.
    wait_until("every connection accepted or skipped, and closed", || {
        let s = server.stats();
        s.open == 0 && s.accepted + s.errors_of(Disposition::SkipPeer) == total
    });
    // Closed connections' descriptors are gone: back to what the server held when idle.
    #[cfg(target_os = "linux")]
    wait_until("descriptor count back to the baseline", || {
        fd_count() == baseline
    });
    #[cfg(not(target_os = "linux"))]
    common::skip(
        "the descriptor count part: it counts /proc/self/fd, which only Linux has \
         (Windows sockets are handles); the rest of the test ran",
    );
    let stats = stop(server);
    assert_eq!(stats.closed, stats.accepted, "{stats}");
    assert_eq!(stats.errors_of(Disposition::Fatal), 0, "{stats}");
    assert_eq!(stats.accept_pauses, 0, "{stats}");
}

#[test]
fn uring_close_with_ops_in_flight_leaks_nothing_and_misdelivers_nothing() {
    close_with_ops_in_flight(Backend::Uring);
}

#[test]
fn poll_close_with_ops_in_flight_leaks_nothing_and_misdelivers_nothing() {
    close_with_ops_in_flight(Backend::Poll);
}

// ---- the fallback, for real: io_uring_setup forbidden by seccomp ----

// `AUDIT_ARCH_*` from <linux/audit.h>: the ELF machine | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// A classic BPF seccomp filter: on this architecture, `io_uring_setup` fails with EPERM
/// (what Docker's default profile does); every other call is allowed.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn deny_io_uring_filter() -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // struct seccomp_data { int nr; __u32 arch; ... }
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, ARCH),
        // Another architecture: allow (jump over the next three to ALLOW).
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH,
            0,
            3,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, NR),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            libc::SYS_io_uring_setup as u32,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA),
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Start `ringport serve` under the filter.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn spawn_without_io_uring(backend: &str) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let filter = deny_io_uring_filter();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringport"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        backend,
        "--workers",
        "1",
    ])
    .env_remove("RINGPORT_BACKEND")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only makes two prctl
    // calls with a filter program built on the stack from `filter`, which was allocated
    // before the fork and is only read: no allocation, no lock, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.start()
}

/// Lines of a child's pipe, read on a thread so that waits can have a deadline.
#[cfg(target_os = "linux")]
fn lines<R: Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line from `rx` that satisfies `pred`, within the deadline.
#[cfg(target_os = "linux")]
fn expect_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no {what}; lines seen: {seen:?}"),
        }
    }
}

/// seccomp and io_uring are Linux's: elsewhere there is nothing to forbid.
#[cfg(not(target_os = "linux"))]
#[test]
fn seccomp_denied_io_uring_falls_back_to_poll() {
    common::skip("seccomp filters and io_uring exist only on Linux; `auto` runs poll here");
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn seccomp_denied_io_uring_falls_back_to_poll() {
    let _serial = serial();

    // auto: one line on stderr saying io_uring is out and why, a banner with `backend poll`,
    // and it serves.
    let mut guard = ChildGuard {
        child: spawn_without_io_uring("auto").expect("spawn ringport"),
    };
    let child = &mut guard.child;
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let reason = expect_line(&err, "stderr line naming io_uring", |l| {
        l.contains("io_uring")
    });
    eprintln!("child: {reason}");
    assert!(
        reason.contains("not permitted") || reason.contains("forbidden"),
        "the reason names EPERM/seccomp: {reason}"
    );
    let banner = expect_line(&out, "banner", |l| l.contains("listening on"));
    assert!(banner.contains("backend poll"), "banner: {banner}");
    let addr: SocketAddr = banner
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in banner: {banner}"));
    let mut s = connect(addr);
    echo_exact(&mut s, 77, 100_000);
    drop(s);
    common::stop_signal(child);
    let status = wait_exit(child);
    assert!(status.success(), "SIGTERM ends serve cleanly: {status}");

    // uring, explicitly: an error naming io_uring, non-zero exit, no banner.
    let mut guard = ChildGuard {
        child: spawn_without_io_uring("uring").expect("spawn ringport"),
    };
    let child = &mut guard.child;
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let status = wait_exit(child);
    assert!(
        !status.success(),
        "explicit uring without io_uring must fail"
    );
    let msg = expect_line(&err, "error naming io_uring", |l| l.contains("io_uring"));
    assert!(msg.contains("cannot serve"), "error line: {msg}");
    let stdout: Vec<String> = out.try_iter().collect();
    assert!(
        stdout.iter().all(|l| !l.contains("listening on")),
        "no banner expected: {stdout:?}"
    );
}
