//! Helpers shared by the integration tests: servers on every backend, clients, processes.

#![allow(dead_code)]

pub mod process;
pub mod resp;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use ringport::service::Echo;

pub use process::Start;
use ringport::{Backend, Server, ServerBuilder};

/// Generous deadline for anything a test waits on: CI machines are small and busy.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Generate one `#[test]` per backend and mode for each listed case:
/// `uring_pool_NAME`, `uring_inline_NAME`, `poll_pool_NAME`, `poll_inline_NAME`.
/// Each case is a `fn NAME(setup: Setup)`. A backend this machine cannot run is reported
/// and skipped.
#[macro_export]
macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod uring_pool { $( #[test] fn $name() { $crate::common::run(ringport::Backend::Uring, 2, super::$name) } )* }
        mod uring_inline { $( #[test] fn $name() { $crate::common::run(ringport::Backend::Uring, 0, super::$name) } )* }
        mod poll_pool { $( #[test] fn $name() { $crate::common::run(ringport::Backend::Poll, 2, super::$name) } )* }
        mod poll_inline { $( #[test] fn $name() { $crate::common::run(ringport::Backend::Poll, 0, super::$name) } )* }
    };
}

/// Backend and worker count of one generated test.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub backend: Backend,
    pub workers: usize,
}

impl Setup {
    /// A builder on 127.0.0.1:0 with this backend and worker count.
    pub fn builder(&self) -> ServerBuilder {
        let mut b = Server::builder();
        b.listen("127.0.0.1:0".parse().unwrap())
            .backend(self.backend)
            .workers(self.workers);
        b
    }

    /// An echo server with the defaults.
    pub fn echo(&self) -> Server {
        self.builder().build(Echo).expect("echo server starts")
    }

    /// The `--backend` value for the binary.
    pub fn backend_arg(&self) -> &'static str {
        self.backend.name()
    }
}

/// True when `backend` runs on this machine.
pub fn available(backend: Backend) -> bool {
    ringport::available_backends().contains(&backend)
}

/// Run `case` on `backend` with `workers`, or say why it is skipped.
pub fn run(backend: Backend, workers: usize, case: fn(Setup)) {
    if !available(backend) {
        skip(format_args!(
            "backend {backend} is not available on this machine"
        ));
        return;
    }
    case(Setup { backend, workers });
}

/// Report that the running test (or part of it) is skipped, and why, as
/// `skipped: TEST: REASON`. Written straight to stderr, which the test harness does not
/// capture, so the line shows in every run's output, passing or not. A skip is only for
/// what the OS itself makes different (say which) or a missing external tool, never to
/// hide a ringport bug.
pub fn skip(reason: impl std::fmt::Display) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    let _ = writeln!(io::stderr(), "skipped: {test}: {reason}");
}

/// Return from the running test with a printed reason (see [`skip`]) unless `cond` holds:
/// `skip_unless!(cfg!(target_os = "linux"), "reads RSS from /proc")`,
/// `skip_unless!(common::runs("curl"), "curl is not installed")`.
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            $crate::common::skip(format_args!($($reason)+));
            return;
        }
    };
}

/// True when the external program `name` runs here (`name --version` exits 0).
pub fn runs(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Wait until `cond` holds, panicking with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A small deterministic generator for payloads and chunk sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Connect with a read timeout so a broken server fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Send `msg` on `stream` and assert that exactly `msg` comes back.
pub fn assert_echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("send");
    let mut buf = vec![0; msg.len()];
    stream.read_exact(&mut buf).expect("read echo");
    assert_eq!(buf, msg, "echo differs");
}

/// Send `payload` in random chunks from one thread while reading the echo on this one;
/// returns what came back before EOF (when `half_close`) or exactly `payload.len()` bytes.
pub fn echo_exchange(addr: SocketAddr, payload: &[u8], seed: u64, half_close: bool) -> Vec<u8> {
    let stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = stream;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng::new(seed);
            let mut off = 0;
            while off < payload.len() {
                let n = rng.range(1, 64 * 1024).min(payload.len() - off);
                writer.write_all(&payload[off..off + n]).unwrap();
                off += n;
            }
            if half_close {
                writer.shutdown(std::net::Shutdown::Write).unwrap();
            }
        });
        let mut got = Vec::with_capacity(payload.len());
        if half_close {
            reader.read_to_end(&mut got).expect("read echo until EOF");
        } else {
            got.resize(payload.len(), 0);
            reader.read_exact(&mut got).expect("read echo");
        }
        got
    })
}

/// Count this process's open descriptors.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard {
    pub child: Child,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `ringport serve` process on port 0, with its banner parsed.
pub struct ServeProcess {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
    pub banner: String,
    pub stderr: Option<ChildStderr>,
}

/// Start `ringport serve --listen 127.0.0.1:0 ARGS...` and wait for its banner.
pub fn serve_process(args: &[&str]) -> io::Result<ServeProcess> {
    serve_process_under(&[], args)
}

/// Like [`serve_process`], run through `wrapper` (e.g. `["prlimit", "--nofile=64:64"]`).
pub fn serve_process_under(wrapper: &[&str], args: &[&str]) -> io::Result<ServeProcess> {
    let bin = env!("CARGO_BIN_EXE_ringport");
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    stoppable(&mut cmd);
    let mut child = cmd.start()?;
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take();
    let guard = ChildGuard { child };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no banner, got {line:?}")))?;
    Ok(ServeProcess {
        guard,
        addr,
        banner: line,
        stderr,
    })
}

/// Ask a child started with [`stoppable`] to stop the way its user would: SIGTERM on Unix;
/// Ctrl+C on Windows. Windows raises Ctrl+C only for every process of one console (and
/// Wine 8 implements no Ctrl+Break for one process group), so the child has a console of its
/// own and a helper attaches to it and raises the event there: the `.exe` named by
/// `RINGPORT_TEST_CTRL_C`, which `.ci/windows` builds from `.ci/console-ctrl-c.c`.
pub fn stop_signal(child: &Child) {
    #[cfg(unix)]
    {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed: {}", io::Error::last_os_error());
    }
    #[cfg(windows)]
    {
        let sender = std::env::var_os("RINGPORT_TEST_CTRL_C")
            .expect("RINGPORT_TEST_CTRL_C names the console Ctrl+C sender (.ci/windows builds it)");
        let status = Command::new(sender)
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run the console Ctrl+C sender");
        assert!(status.success(), "console Ctrl+C sender: {status}");
    }
}

/// Prepare `cmd` so that [`stop_signal`] can reach the process it starts: on Windows, a
/// console of its own (Ctrl+C then reaches it alone); nothing to do elsewhere.
pub fn stoppable(cmd: &mut Command) {
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const CREATE_NEW_CONSOLE: u32 = 0x0000_0010;
        cmd.creation_flags(CREATE_NEW_CONSOLE);
    }
    #[cfg(not(windows))]
    let _ = cmd;
}

/// Wait for a child to exit, with the deadline.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(start.elapsed() < DEADLINE, "process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// All a child wrote to its piped stderr, read to the end (when it and every process it
/// handed the pipe to have closed it).
pub fn read_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// CPU time (user + system) a process has used, in clock ticks, from /proc/PID/stat.
#[cfg(target_os = "linux")]
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
#[cfg(target_os = "linux")]
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Resident memory of a process in bytes, from /proc/PID/status.
#[cfg(target_os = "linux")]
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Echo `msg` on a fresh connection; `Err` if the server does not answer correctly.
pub fn try_echo(addr: SocketAddr, msg: &[u8]) -> io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(msg)?;
    let mut buf = vec![0; msg.len()];
    c.read_exact(&mut buf)?;
    if buf == msg {
        Ok(())
    } else {
        Err(io::Error::other("echo differs"))
    }
}

/// Fail the test at once when `prlimit` (util-linux, which the tests that lower the
/// open-files limit start the server under) is missing.
#[cfg(target_os = "linux")]
pub fn require_prlimit() {
    if Command::new("prlimit").arg("--version").run().is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
}

/// A fresh directory under the test build's scratch space, removed when dropped; `.0` is its
/// path. Each call gets its own (tag, process and a counter name it).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
