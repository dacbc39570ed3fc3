//! The echo load generator behind `ringport bench`.
//!
//! It opens `--connections` TCP connections to an echo server and spreads them over
//! `--threads` event loops (one [`polling::Poller`] each, edge-triggered where the OS has
//! it). Two ways to load:
//!
//! - **Closed loop** (default): every connection keeps `--depth` messages in flight; each
//!   answer sends the next message (depth 1 is ping-pong). Latency runs from the moment a
//!   message was queued to the moment its last byte came back.
//! - **Open loop** (`--rate`): every connection sends on a fixed schedule, whatever the
//!   server does, and latency runs from the *scheduled* send time. A server that stalls
//!   cannot hide the queue it builds (no coordinated omission). A loop wakes at most every
//!   [`OPEN_LOOP_TICK`]; messages that fell due in between leave together, and the wait
//!   counts in their latency.
//!
//! Cost: per loop turn one wait, one read per readable connection (a short read means the
//! socket is drained, so no second read to see `WouldBlock`), and one write per connection
//! with everything queued on it. Messages are built into per-connection buffers that are
//! reused; latency goes into a preallocated HDR histogram per thread. Nothing allocates per
//! message in steady state.
//!
//! Every message carries its sequence number in its first 8 bytes and a per-connection
//! pattern after that, so `--verify` can name the connection, message and byte that came
//! back wrong. Any failure (refused connection, the server closing or resetting a connection,
//! wrong bytes) stops the run, is printed, and makes the exit code non-zero.
//!
//! CPU use (`load CPU`, and with `--server-pid` the server's) is read from `/proc/PID/stat`
//! over the measured window, on Linux only, and given in percent of one core (a load
//! generator with 2 threads can reach 200%). When a failure stops the run during warm-up,
//! before anything was measured, CPU use is given over the time it did run.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use polling::{Event, Events, PollMode, Poller};
use ringport_fallback::errno::{classify, Disposition, Site};
use ringport_fallback::Registered;

/// An open-loop event loop wakes to send at most this often.
pub const OPEN_LOOP_TICK: Duration = Duration::from_micros(50);

/// Bytes read per call.
const READ_BUFFER: usize = 64 * 1024;
/// Longest a loop sleeps before it looks at the stop flag again.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Largest latency the histogram holds exactly (larger ones are recorded as this).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Smallest and largest `--size`.
const MIN_SIZE: u64 = 1;
const MAX_SIZE: u64 = 64 << 20;

/// The server to load: what the user wrote and the addresses it resolved to, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As given (`localhost:7000`, `127.0.0.1:7000`).
    pub name: String,
    /// What it resolved to; never empty. Connections go to the first that accepts one.
    pub addrs: Vec<SocketAddr>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Options of `ringport bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  ringport bench --addr 127.0.0.1:7000 --connections 50 --duration 10\n  ringport bench --depth 16 --size 4096 --verify\n  ringport bench --rate 100000 --json"
)]
pub struct BenchArgs {
    /// Address of the echo server to load: IP:PORT or HOST:PORT (resolved at start; the
    /// first address that accepts a connection is used).
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_target)]
    pub addr: Target,
    /// Connections to open, spread over the threads.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// Bytes per message: a number, or with a unit (B, KiB, MiB); 1 B to 64 MiB.
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub size: u32,
    /// Closed loop: messages in flight per connection (1 = ping-pong). With --rate only 1 is
    /// accepted: the schedule decides what is in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub depth: u32,
    /// How long to measure, in seconds (2, 0.5) or with a unit (500ms); more than zero.
    #[arg(long, default_value = "5", value_parser = parse_positive_secs)]
    pub duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Open loop: send this many messages per second in all, on a fixed schedule; latency
    /// counts from the scheduled send time.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Event loops (threads) of the load generator.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// Check that every byte comes back as it was sent (the summary says how many were).
    #[arg(long)]
    pub verify: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also report the CPU use of this process (the server) during the measurement, and its
    /// CPU time per message (Linux only; a PID that does not exist is an error).
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub server_pid: Option<u32>,
}

/// Parse `2`, `0.5` (seconds) or `500ms`, `2s`.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("'{s}' is not a number of seconds"));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("'{s}' is not a duration like 5, 0.5 or 500ms"))
}

/// Like [`parse_secs`], but zero is refused: there would be nothing to measure.
fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err(format!(
            "'{s}' is zero: give a duration to measure, like 5, 0.5 or 500ms"
        ));
    }
    Ok(d)
}

/// Parse `64`, `4096B`, `4KiB`, `1MiB` (K and M are powers of 1024), from 1 B to 64 MiB.
fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 64, 4KiB or 1MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{}' (use B, KiB or MiB)",
                unit.trim()
            ))
        }
    };
    match n.checked_mul(mult) {
        Some(b) if (MIN_SIZE..=MAX_SIZE).contains(&b) => {
            Ok(u32::try_from(b).expect("64 MiB fits in u32"))
        }
        _ => Err(format!("'{s}' is outside 1 B to 64 MiB")),
    }
}

/// An IP:PORT, or a HOST:PORT resolved now to all its addresses.
fn parse_target(s: &str) -> Result<Target, String> {
    let name = s.trim().to_string();
    let addrs: Vec<SocketAddr> = match name.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => name
            .to_socket_addrs()
            .map_err(|e| {
                format!("'{s}' is not an address like 127.0.0.1:7000 or localhost:7000 ({e})")
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("'{s}' resolves to no address"));
    }
    Ok(Target { name, addrs })
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "'{s}' is not a positive number of messages per second"
        )),
    }
}

/// Run `ringport bench` and return the process exit code.
pub fn main(args: &BenchArgs) -> std::process::ExitCode {
    // Options that cannot be honoured are a usage error (exit 2), as clap's own are.
    if let Err(e) = validate(args) {
        eprintln!("ringport bench: {e}");
        return ExitCode::from(2);
    }
    let report = match run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringport bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = io::stdout().lock();
    // A closed stdout (a pipe whose reader left) must not turn a good run into a panic.
    let _ = if args.json {
        writeln!(out, "{}", report.to_json())
    } else {
        write!(out, "{report}")
    };
    let _ = out.flush();
    for e in &report.error_messages {
        eprintln!("ringport bench: {e}");
    }
    if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The server's address (the one connected to).
    pub addr: SocketAddr,
    /// Connections opened.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Closed loop: messages in flight per connection.
    pub depth: usize,
    /// Open loop: scheduled messages per second.
    pub rate: Option<f64>,
    /// Event loops used.
    pub threads: usize,
    /// Whether the measured window opened (`false`: a failure stopped the run in warm-up).
    pub measured: bool,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Messages answered in the window.
    pub msgs: u64,
    /// Latencies of those messages, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Open loop: how late messages left against their schedule, in nanoseconds (the load
    /// generator's own delay, included in `latency`).
    pub lag: Histogram<u64>,
    /// Failures (each stops the run).
    pub errors: u64,
    /// What went wrong, one line each.
    pub error_messages: Vec<String>,
    /// Whether `--verify` checked the answers.
    pub verify: bool,
    /// With `--verify`: bytes that came back as sent, over the whole run (warm-up included).
    pub verified_bytes: u64,
    /// The time over which CPU use was measured: the window, or when the run stopped before
    /// the window opened, the time it ran.
    pub cpu_elapsed: Duration,
    /// CPU time of the load generator over `cpu_elapsed`, if known.
    pub load_cpu: Option<Duration>,
    /// `--server-pid`, if given.
    pub server_pid: Option<u32>,
    /// The server's process id and its CPU time over `cpu_elapsed`, if asked for and known.
    pub server_cpu: Option<(u32, Duration)>,
}

impl Report {
    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answered messages per second (0 when nothing was measured).
    pub fn msgs_per_sec(&self) -> f64 {
        if !self.measured {
            return 0.0;
        }
        self.msgs as f64 / self.secs()
    }

    /// Payload megabytes (10^6) per second, one direction.
    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64 / 1e6
    }

    /// Latency at quantile `q` in microseconds (`None` when no message was measured).
    pub fn latency_us(&self, q: f64) -> Option<f64> {
        if self.latency.is_empty() {
            return None;
        }
        Some(self.latency.value_at_quantile(q) as f64 / 1e3)
    }

    /// Open loop: how late messages left, at quantile `q`, in microseconds.
    pub fn lag_us(&self, q: f64) -> Option<f64> {
        if self.rate.is_none() || self.lag.is_empty() {
            return None;
        }
        Some(self.lag.value_at_quantile(q) as f64 / 1e3)
    }

    /// Largest latency in microseconds (`None` when no message was measured).
    pub fn max_us(&self) -> Option<f64> {
        if self.latency.is_empty() {
            return None;
        }
        Some(self.latency.max() as f64 / 1e3)
    }

    /// Mean latency in microseconds (`None` when no message was measured).
    pub fn mean_us(&self) -> Option<f64> {
        if self.latency.is_empty() {
            return None;
        }
        Some(self.latency.mean() / 1e3)
    }

    fn cpu_percent(&self, cpu: Duration) -> Option<f64> {
        if self.cpu_elapsed.is_zero() {
            return None;
        }
        Some(cpu.as_secs_f64() * 100.0 / self.cpu_elapsed.as_secs_f64())
    }

    /// CPU use of the load generator in percent of one core (all its threads together, so
    /// up to 100% per thread).
    pub fn load_cpu_percent(&self) -> Option<f64> {
        self.load_cpu.and_then(|c| self.cpu_percent(c))
    }

    /// CPU use of the server in percent of one core.
    pub fn server_cpu_percent(&self) -> Option<f64> {
        self.server_cpu.and_then(|(_, c)| self.cpu_percent(c))
    }

    /// Server CPU time per answered message, in nanoseconds.
    pub fn server_ns_per_msg(&self) -> Option<f64> {
        match self.server_cpu {
            Some((_, c)) if self.measured && self.msgs > 0 => {
                Some(c.as_nanos() as f64 / self.msgs as f64)
            }
            _ => None,
        }
    }

    fn mode(&self) -> String {
        match self.rate {
            Some(r) => format!("open loop at {r:.0} msgs/s"),
            None => format!("closed loop, depth {}", self.depth),
        }
    }

    /// The report as one line of JSON. Values that mean nothing for this run (latency when
    /// no message was answered, throughput when nothing was measured) are `null`.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(640);
        let num = |v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("{v:.3}"),
            _ => "null".to_string(),
        };
        let measured = |v: f64| self.measured.then_some(v);
        let _ = write!(
            s,
            "{{\"addr\":\"{}\",\"mode\":\"{}\",\"connections\":{},\"size\":{},\"depth\":{},\"rate\":{},\"threads\":{},\"measured\":{},\"duration_s\":{:.3},\"msgs\":{},\"msgs_per_s\":{},\"mb_per_s\":{}",
            self.addr,
            if self.rate.is_some() { "open" } else { "closed" },
            self.connections,
            self.size,
            self.depth,
            num(self.rate),
            self.threads,
            self.measured,
            self.elapsed.as_secs_f64(),
            self.msgs,
            num(measured(self.msgs_per_sec())),
            num(measured(self.mb_per_sec())),
        );
        let _ = write!(
            s,
            ",\"latency_us\":{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{}}}",
            num(self.latency_us(0.5)),
            num(self.latency_us(0.99)),
            num(self.latency_us(0.999)),
            num(self.max_us()),
            num(self.mean_us()),
        );
        let _ = write!(
            s,
            ",\"send_lag_us\":{{\"p50\":{},\"p99\":{}}}",
            num(self.lag_us(0.5)),
            num(self.lag_us(0.99)),
        );
        let _ = write!(
            s,
            ",\"verify\":{},\"verified_bytes\":{}",
            self.verify,
            if self.verify {
                self.verified_bytes.to_string()
            } else {
                "null".to_string()
            }
        );
        let _ = write!(s, ",\"errors\":{},\"error_messages\":[", self.errors);
        for (i, e) in self.error_messages.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_string(&mut s, e);
        }
        let _ = write!(
            s,
            "],\"cpu_window_s\":{:.3},\"load_cpu_percent\":{},\"server_pid\":{},\"server_cpu_percent\":{},\"server_cpu_ns_per_msg\":{}}}",
            self.cpu_elapsed.as_secs_f64(),
            num(self.load_cpu_percent()),
            self.server_pid
                .map_or_else(|| "null".to_string(), |p| p.to_string()),
            num(self.server_cpu_percent()),
            num(self.server_ns_per_msg()),
        );
        s
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn fmt_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// `2 threads`, `1 thread`.
fn threads_text(n: usize) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stopped = self.errors > 0;
        let window = match (self.measured, stopped) {
            (false, _) => format!(
                "stopped during warm-up after {:.2} s, nothing measured",
                self.cpu_elapsed.as_secs_f64()
            ),
            (true, true) => format!("stopped after {:.2} s measured", self.elapsed.as_secs_f64()),
            (true, false) => format!("{:.1} s measured", self.elapsed.as_secs_f64()),
        };
        writeln!(
            f,
            "ringport bench: {}, {} connections, {} B messages, {}, {}, {window}",
            self.addr,
            self.connections,
            self.size,
            self.mode(),
            threads_text(self.threads),
        )?;
        if self.measured {
            writeln!(
                f,
                "  throughput  {:.0} msgs/s, {:.2} MB/s each way ({} msgs)",
                self.msgs_per_sec(),
                self.mb_per_sec(),
                self.msgs
            )?;
        }
        if let (Some(p50), Some(p99), Some(p999), Some(max)) = (
            self.latency_us(0.5),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.max_us(),
        ) {
            writeln!(
                f,
                "  latency     p50 {}, p99 {}, p99.9 {}, max {}",
                fmt_us(p50),
                fmt_us(p99),
                fmt_us(p999),
                fmt_us(max),
            )?;
        }
        if let (Some(p50), Some(p99)) = (self.lag_us(0.5), self.lag_us(0.99)) {
            writeln!(
                f,
                "  send lag    p50 {}, p99 {} behind schedule (counted in latency)",
                fmt_us(p50),
                fmt_us(p99)
            )?;
        }
        if self.verify {
            if stopped {
                writeln!(
                    f,
                    "  verified    {} bytes came back as sent before the run stopped",
                    self.verified_bytes
                )?;
            } else {
                writeln!(
                    f,
                    "  verified    every byte: {} bytes came back as sent (warm-up included)",
                    self.verified_bytes
                )?;
            }
        }
        writeln!(f, "  errors      {}", self.errors)?;
        // Over the warm-up that ran, when the run stopped before measuring.
        let over = if self.measured {
            String::new()
        } else {
            format!(" over {:.2} s of warm-up", self.cpu_elapsed.as_secs_f64())
        };
        match self.load_cpu_percent() {
            Some(p) => {
                let ceiling = if p >= 95.0 * self.threads as f64 {
                    ", the load generator is the limit"
                } else {
                    ""
                };
                writeln!(
                    f,
                    "  load CPU    {p:.0}% of one core{over} ({}{ceiling})",
                    threads_text(self.threads)
                )?;
            }
            None if cfg!(target_os = "linux") => writeln!(f, "  load CPU    not measured")?,
            None => writeln!(f, "  load CPU    unknown on this OS")?,
        }
        if let Some(pid) = self.server_pid {
            match self.server_cpu_percent() {
                Some(p) => {
                    let per = self
                        .server_ns_per_msg()
                        .map_or_else(String::new, |ns| format!(", {ns:.0} ns per message"));
                    writeln!(
                        f,
                        "  server CPU  {p:.0}% of one core{over}{per} (pid {pid})"
                    )?;
                }
                None => writeln!(
                    f,
                    "  server CPU  not measured (pid {pid} could not be read to the end)"
                )?,
            }
        }
        Ok(())
    }
}

/// CPU time (user + system) of a process so far: `None` for this process.
#[cfg(target_os = "linux")]
pub fn process_cpu(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after it start
    // after the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it exports them for.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU time of a process so far (not known on this OS).
#[cfg(not(target_os = "linux"))]
pub fn process_cpu(_pid: Option<u32>) -> Option<Duration> {
    None
}

/// Check that `--server-pid` names a process whose CPU time can be read.
#[cfg(target_os = "linux")]
fn check_server_pid(pid: u32) -> Result<(), String> {
    let path = format!("/proc/{pid}/stat");
    match std::fs::read_to_string(&path) {
        Ok(_) if process_cpu(Some(pid)).is_some() => Ok(()),
        Ok(_) => Err(format!("--server-pid {pid}: cannot parse {path}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(format!("--server-pid {pid}: no such process"))
        }
        Err(e) => Err(format!("--server-pid {pid}: cannot read {path}: {e}")),
    }
}

/// `--server-pid` needs `/proc`, which this OS does not have.
#[cfg(not(target_os = "linux"))]
fn check_server_pid(pid: u32) -> Result<(), String> {
    Err(format!(
        "--server-pid {pid}: the server's CPU use can only be measured on Linux"
    ))
}

/// What every event loop needs to know; times in nanoseconds since the run's start.
#[derive(Debug, Clone, Copy)]
struct Plan {
    size: usize,
    depth: usize,
    verify: bool,
    /// Open loop: nanoseconds between two messages of one connection.
    interval_ns: Option<u64>,
    connections: usize,
    warmup_end: u64,
    end: u64,
}

/// State shared by the event loops and the main thread.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    /// Answers so far (warm-up included), for the progress line.
    answered: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn fail(&self, msg: String) {
        if let Ok(mut e) = self.errors.lock() {
            e.push(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One connection of an event loop.
struct Conn {
    /// Number among all connections (for messages and the pattern).
    index: usize,
    stream: Registered,
    /// The bytes of a message after its 8-byte sequence number.
    pattern: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Send (closed loop) or scheduled (open loop) time of each message in flight.
    stamps: VecDeque<u64>,
    next_seq: u64,
    recv_seq: u64,
    recv_off: usize,
    bytes_written: u64,
    bytes_read: u64,
    /// Open loop: scheduled time of the next message.
    next_due: u64,
    dead: bool,
}

impl Conn {
    fn new(index: usize, stream: Registered, plan: &Plan) -> Conn {
        let pattern = (0..plan.size)
            .map(|i| {
                (i as u64)
                    .wrapping_mul(131)
                    .wrapping_add(index as u64 * 29 + 7) as u8
            })
            .collect();
        let next_due = plan.interval_ns.map_or(0, |iv| {
            iv.saturating_mul(index as u64) / plan.connections as u64
        });
        Conn {
            index,
            stream,
            pattern,
            out: Vec::with_capacity(plan.size * plan.depth.min(64)),
            out_pos: 0,
            stamps: VecDeque::with_capacity(plan.depth.max(16)),
            next_seq: 0,
            recv_seq: 0,
            recv_off: 0,
            bytes_written: 0,
            bytes_read: 0,
            next_due,
            dead: false,
        }
    }

    /// Queue the next message, stamped `at`.
    fn queue(&mut self, at: u64) {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= READ_BUFFER {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        let seq = self.next_seq.to_le_bytes();
        let head = self.pattern.len().min(8);
        self.out.extend_from_slice(&seq[..head]);
        self.out.extend_from_slice(&self.pattern[head..]);
        self.next_seq += 1;
        self.stamps.push_back(at);
    }

    /// Compare `data`, found at byte `off` of the message being received, with what was
    /// sent; on a mismatch name it.
    fn check(&self, data: &[u8], off: usize) -> Result<(), String> {
        let want_at = |pos: usize| {
            if pos < 8 {
                self.recv_seq.to_le_bytes()[pos]
            } else {
                self.pattern[pos]
            }
        };
        let head = 8usize.saturating_sub(off).min(data.len());
        let tail_ok = data[head..] == self.pattern[off + head..off + data.len()];
        let head_ok = (0..head).all(|i| data[i] == want_at(off + i));
        if head_ok && tail_ok {
            return Ok(());
        }
        let i = (0..data.len())
            .find(|&i| data[i] != want_at(off + i))
            .unwrap_or(0);
        Err(format!(
            "verify mismatch on connection {}: byte {} of message {} came back as {:#04x}, \
             {:#04x} was sent",
            self.index,
            off + i,
            self.recv_seq,
            data[i],
            want_at(off + i)
        ))
    }
}

/// Per-thread results.
struct Tally {
    latency: Histogram<u64>,
    /// Open loop: how late each message left against its schedule.
    lag: Histogram<u64>,
    msgs: u64,
    /// With `--verify`: bytes that came back as sent.
    verified: u64,
}

/// One event loop and the connections it drives.
struct Loop<'a> {
    poller: Arc<Poller>,
    mode: PollMode,
    conns: Vec<Conn>,
    plan: Plan,
    shared: &'a Shared,
    start: Instant,
    tally: Tally,
    buf: Vec<u8>,
}

impl<'a> Loop<'a> {
    fn new(
        streams: Vec<(usize, TcpStream)>,
        plan: Plan,
        shared: &'a Shared,
        start: Instant,
    ) -> io::Result<Self> {
        let poller = Arc::new(Poller::new()?);
        // Edge-triggered: registered once, never re-armed. Where the OS has no edge mode,
        // oneshot interest is re-armed after each event.
        let mode = if poller.supports_edge() {
            PollMode::Edge
        } else {
            PollMode::Oneshot
        };
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut lp = Loop {
            poller,
            mode,
            conns: Vec::with_capacity(streams.len()),
            plan,
            shared,
            start,
            tally: Tally {
                lag: latency.clone(),
                latency,
                msgs: 0,
                verified: 0,
            },
            buf: vec![0; READ_BUFFER],
        };
        for (index, stream) in streams {
            let key = lp.conns.len();
            let stream = Registered::new(&lp.poller, stream, Event::all(key), mode)?;
            lp.conns.push(Conn::new(index, stream, &plan));
        }
        Ok(lp)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn fail(&mut self, key: usize, what: String) {
        let c = &mut self.conns[key];
        if !c.dead {
            c.dead = true;
            self.shared.fail(what);
        }
    }

    /// Describe an I/O failure on connection `key`.
    fn io_failure(&self, key: usize, site: Site, e: &io::Error) -> String {
        let c = &self.conns[key];
        let what = if classify(site, e) == Disposition::PeerGone {
            "the server reset the connection"
        } else {
            "I/O error"
        };
        format!(
            "connection {} to {}: {what} after {} answered messages ({e})",
            c.index,
            c.stream
                .peer_addr()
                .map_or_else(|_| "the server".to_string(), |a| a.to_string()),
            c.recv_seq
        )
    }

    fn run(mut self) -> Tally {
        let now = self.now();
        if self.plan.interval_ns.is_none() {
            for key in 0..self.conns.len() {
                for _ in 0..self.plan.depth {
                    self.conns[key].queue(now);
                }
                self.write(key);
            }
        }
        let mut events = Events::with_capacity(NonZeroUsize::new(1024).expect("non-zero"));
        let tick = OPEN_LOOP_TICK.as_nanos() as u64;
        let mut last_send = 0u64;
        let mut reported = 0u64;
        loop {
            let now = self.now();
            if now >= self.plan.end || self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let mut wake_at = self.plan.end.min(now + MAX_SLEEP.as_nanos() as u64);
            if let Some(interval) = self.plan.interval_ns {
                if now >= last_send + tick {
                    last_send = now;
                    for key in 0..self.conns.len() {
                        let c = &mut self.conns[key];
                        if c.dead || c.next_due > now {
                            continue;
                        }
                        while c.next_due <= now {
                            let due = c.next_due;
                            c.queue(due);
                            c.next_due += interval;
                            if due >= self.plan.warmup_end {
                                self.tally.lag.saturating_record(now - due);
                            }
                        }
                        self.write(key);
                    }
                }
                let due = self
                    .conns
                    .iter()
                    .filter(|c| !c.dead)
                    .map(|c| c.next_due)
                    .min()
                    .unwrap_or(u64::MAX);
                wake_at = wake_at.min(due.max(last_send + tick));
            }
            let timeout = Duration::from_nanos(wake_at.saturating_sub(self.now()));
            events.clear();
            if let Err(e) = self.poller.wait(&mut events, Some(timeout)) {
                if classify(Site::Wait, &e) != Disposition::Retry {
                    self.shared.fail(format!("waiting for events failed: {e}"));
                    break;
                }
            }
            for ev in events.iter() {
                let key = ev.key;
                if key >= self.conns.len() || self.conns[key].dead {
                    continue;
                }
                if ev.readable {
                    self.read(key);
                }
                if ev.writable || !self.conns[key].out.is_empty() {
                    self.write(key);
                }
                self.rearm(key);
            }
            let answered = self.tally_answered();
            if answered > reported {
                self.shared
                    .answered
                    .fetch_add(answered - reported, Ordering::Relaxed);
                reported = answered;
            }
        }
        self.tally_out()
    }

    fn tally_answered(&self) -> u64 {
        self.conns.iter().map(|c| c.recv_seq).sum()
    }

    fn tally_out(mut self) -> Tally {
        let empty = || Histogram::new(1).expect("a histogram of 1 significant digit");
        Tally {
            latency: std::mem::replace(&mut self.tally.latency, empty()),
            lag: std::mem::replace(&mut self.tally.lag, empty()),
            msgs: self.tally.msgs,
            verified: self.tally.verified,
        }
    }

    fn rearm(&mut self, key: usize) {
        if self.mode != PollMode::Oneshot {
            return;
        }
        let c = &self.conns[key];
        if c.dead {
            return;
        }
        let ev = Event::new(key, true, c.out_pos < c.out.len());
        if let Err(e) = self.poller.modify(&*c.stream, ev) {
            let msg = self.io_failure(key, Site::Wait, &e);
            self.fail(key, msg);
        }
    }

    /// Write what is queued on `key`, until done or the socket is full.
    fn write(&mut self, key: usize) {
        loop {
            let c = &mut self.conns[key];
            if c.dead || c.out_pos == c.out.len() {
                return;
            }
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(n) => {
                    c.out_pos += n;
                    c.bytes_written += n as u64;
                    if c.out_pos == c.out.len() {
                        c.out.clear();
                        c.out_pos = 0;
                    }
                }
                Err(e) => match classify(Site::Send, &e) {
                    Disposition::Retry => {}
                    Disposition::WouldBlock => return,
                    _ => {
                        let msg = self.io_failure(key, Site::Send, &e);
                        self.fail(key, msg);
                        return;
                    }
                },
            }
        }
    }

    /// Read what arrived on `key` and account for every message it completes.
    fn read(&mut self, key: usize) {
        loop {
            let n = match self.conns[key].stream.read(&mut self.buf) {
                Ok(0) => {
                    let c = &self.conns[key];
                    let msg = format!(
                        "connection {}: the server closed the connection after {} answered \
                         messages ({} of {} bytes sent came back)",
                        c.index, c.recv_seq, c.bytes_read, c.bytes_written
                    );
                    self.fail(key, msg);
                    return;
                }
                Ok(n) => n,
                Err(e) => match classify(Site::Recv, &e) {
                    Disposition::Retry => continue,
                    Disposition::WouldBlock => return,
                    _ => {
                        let msg = self.io_failure(key, Site::Recv, &e);
                        self.fail(key, msg);
                        return;
                    }
                },
            };
            if let Err(msg) = self.take(key, n) {
                self.fail(key, msg);
                return;
            }
            if n < self.buf.len() {
                // A short read drained the socket: the next edge says when more arrives.
                return;
            }
        }
    }

    /// Account for `n` bytes just read into the buffer on `key`.
    fn take(&mut self, key: usize, n: usize) -> Result<(), String> {
        let now = self.now();
        let plan = self.plan;
        let closed_loop = plan.interval_ns.is_none();
        let in_window = now >= plan.warmup_end && now <= plan.end;
        let c = &mut self.conns[key];
        c.bytes_read += n as u64;
        if c.bytes_read > c.bytes_written {
            return Err(format!(
                "connection {}: the server sent {} bytes, more than the {} it was sent",
                c.index, c.bytes_read, c.bytes_written
            ));
        }
        let mut p = 0;
        while p < n {
            let take = (plan.size - c.recv_off).min(n - p);
            if plan.verify {
                c.check(&self.buf[p..p + take], c.recv_off)?;
                self.tally.verified += take as u64;
            }
            c.recv_off += take;
            p += take;
            if c.recv_off < plan.size {
                break;
            }
            c.recv_off = 0;
            c.recv_seq += 1;
            let stamp = c.stamps.pop_front().unwrap_or(now);
            if in_window {
                self.tally
                    .latency
                    .saturating_record(now.saturating_sub(stamp).max(1));
                self.tally.msgs += 1;
            }
            if closed_loop {
                c.queue(now);
            }
        }
        Ok(())
    }
}

/// Refuse options that cannot be honoured: `--depth` above 1 with `--rate` (explicit
/// `--depth 1` stays allowed: it is what the open loop does), and what the value parsers
/// refuse already, for callers of [`run`] that build [`BenchArgs`] themselves; and a
/// `--server-pid` whose process does not exist.
fn validate(args: &BenchArgs) -> Result<(), String> {
    if let (Some(rate), true) = (args.rate, args.depth != 1) {
        return Err(format!(
            "--depth {} cannot be used with --rate {rate}: depth applies to the closed loop \
             only, the open loop's schedule decides what is in flight (drop --depth, or drop \
             --rate for a closed loop)",
            args.depth
        ));
    }
    if args.duration.is_zero() {
        return Err("--duration must be more than zero".to_string());
    }
    if !(MIN_SIZE..=MAX_SIZE).contains(&u64::from(args.size)) {
        return Err(format!("--size {} is outside 1 B to 64 MiB", args.size));
    }
    if args.addr.addrs.is_empty() {
        return Err(format!("'{}' resolves to no address", args.addr));
    }
    if let Some(pid) = args.server_pid {
        check_server_pid(pid)?;
    }
    Ok(())
}

/// Open connection `i` to `addr`.
fn connect(target: &Target, addr: SocketAddr, i: usize) -> Result<TcpStream, String> {
    TcpStream::connect(addr).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::ConnectionRefused => {
                "connection refused (is an echo server listening there?)".to_string()
            }
            _ => e.to_string(),
        };
        if target.addrs.len() == 1 && target.name == addr.to_string() {
            format!("cannot connect to {target} (connection {i}): {why}")
        } else {
            format!("cannot connect to {target} at {addr} (connection {i}): {why}")
        }
    })
}

/// Connect, load, measure.
///
/// # Errors
/// A message when the run cannot start: bad options, no such `--server-pid`, no
/// connection, no event loop, no thread.
pub fn run(args: &BenchArgs) -> Result<Report, String> {
    validate(args)?;
    let connections = args.connections as usize;
    let threads = (args.threads as usize).min(connections).max(1);
    let plan_interval = args
        .rate
        .map(|r| ((connections as f64 * 1e9 / r).round() as u64).max(1));
    // The first address that accepts a connection takes them all; when none does, the
    // error names the last one tried.
    let mut first = Err(String::new());
    for &a in &args.addr.addrs {
        first = connect(&args.addr, a, 0).map(|s| (a, s));
        if first.is_ok() {
            break;
        }
    }
    let (addr, first) = first?;
    let mut first = Some(first);
    let mut streams = Vec::with_capacity(connections);
    for i in 0..connections {
        let s = match first.take() {
            Some(s) => s,
            None => connect(&args.addr, addr, i)?,
        };
        s.set_nodelay(true)
            .and_then(|()| s.set_nonblocking(true))
            .map_err(|e| format!("cannot configure connection {i}: {e}"))?;
        streams.push((i, s));
    }
    let mut per_thread: Vec<Vec<(usize, TcpStream)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in streams {
        per_thread[i % threads].push((i, s));
    }
    let shared = Shared::default();
    let server_cpu_now = || args.server_pid.and_then(|p| process_cpu(Some(p)));
    // CPU marks (load generator, server) where CPU use is measured from: the run's start
    // until the window opens, then the window's start.
    let mut cpu_from = (process_cpu(None), server_cpu_now());
    let start = Instant::now();
    let warmup_end = start + args.warmup;
    let end = warmup_end + args.duration;
    let plan = Plan {
        size: args.size as usize,
        depth: args.depth as usize,
        verify: args.verify,
        interval_ns: plan_interval,
        connections,
        warmup_end: args.warmup.as_nanos() as u64,
        end: (args.warmup + args.duration).as_nanos() as u64,
    };
    let progress = io::stderr().is_terminal();
    let mut tallies = Vec::with_capacity(threads);
    let mut cpu_to = (None, None);
    let mut window = Duration::ZERO;
    let mut cpu_window = Duration::ZERO;
    let mut measured = false;
    let spawned: Result<(), String> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for (t, conns) in per_thread.into_iter().enumerate() {
            let lp = Loop::new(conns, plan, &shared, start)
                .map_err(|e| format!("cannot start event loop {t}: {e}"))?;
            let h = std::thread::Builder::new()
                .name(format!("ringport-bench-{t}"))
                .spawn_scoped(scope, move || lp.run())
                .map_err(|e| format!("cannot start thread {t}: {e}"));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        // The main thread marks the window, samples CPU at its edges and shows progress.
        let mut next_tick = start + Duration::from_secs(1);
        let mut last_answered = 0u64;
        let mut window_start = None;
        loop {
            let now = Instant::now();
            if window_start.is_none() && now >= warmup_end {
                window_start = Some(now);
                cpu_from = (process_cpu(None), server_cpu_now());
            }
            if now >= end || shared.stop.load(Ordering::Relaxed) {
                cpu_to = (process_cpu(None), server_cpu_now());
                measured = window_start.is_some();
                window = now.saturating_duration_since(window_start.unwrap_or(now));
                cpu_window = now.saturating_duration_since(window_start.unwrap_or(start));
                break;
            }
            if now >= next_tick {
                let answered = shared.answered.load(Ordering::Relaxed);
                if progress {
                    let secs = now.duration_since(start).as_secs();
                    let phase = if now < warmup_end { " (warm-up)" } else { "" };
                    eprintln!(
                        "[{secs:>3} s] {} msgs/s, {:.2} MB/s{phase}",
                        answered - last_answered,
                        (answered - last_answered) as f64 * plan.size as f64 / 1e6
                    );
                }
                last_answered = answered;
                next_tick += Duration::from_secs(1);
            }
            let mut until = next_tick.min(end);
            if window_start.is_none() {
                until = until.min(warmup_end);
            }
            let nap = until
                .saturating_duration_since(Instant::now())
                .min(MAX_SLEEP);
            std::thread::sleep(nap);
        }
        shared.stop.store(true, Ordering::SeqCst);
        for h in handles {
            match h.join() {
                Ok(t) => tallies.push(t),
                Err(_) => shared.fail("an event loop panicked".to_string()),
            }
        }
        Ok(())
    });
    spawned?;
    let mut latency =
        Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).map_err(|e| e.to_string())?;
    let mut lag = latency.clone();
    let mut msgs = 0;
    let mut verified_bytes = 0;
    for t in &tallies {
        latency.add(&t.latency).map_err(|e| e.to_string())?;
        lag.add(&t.lag).map_err(|e| e.to_string())?;
        msgs += t.msgs;
        verified_bytes += t.verified;
    }
    let error_messages = shared.errors.into_inner().unwrap_or_default();
    let delta = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let server_cpu = match (args.server_pid, delta(cpu_from.1, cpu_to.1)) {
        (Some(pid), Some(c)) => Some((pid, c)),
        _ => None,
    };
    Ok(Report {
        addr,
        connections,
        size: plan.size,
        depth: plan.depth,
        rate: args.rate,
        threads,
        measured,
        elapsed: window,
        msgs,
        latency,
        lag,
        errors: error_messages.len() as u64,
        error_messages,
        verify: args.verify,
        verified_bytes,
        cpu_elapsed: cpu_window,
        load_cpu: delta(cpu_from.0, cpu_to.0),
        server_pid: args.server_pid,
        server_cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(size: usize) -> Plan {
        Plan {
            size,
            depth: 1,
            verify: true,
            interval_ns: None,
            connections: 4,
            warmup_end: 0,
            end: u64::MAX,
        }
    }

    fn conn(size: usize) -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let poller = Arc::new(Poller::new().unwrap());
        let s = Registered::new(&poller, s, Event::none(0), PollMode::Oneshot).unwrap();
        Conn::new(3, s, &plan(size))
    }

    #[test]
    fn messages_carry_their_sequence_and_verify_byte_by_byte() {
        for size in [1, 5, 8, 9, 64] {
            let mut c = conn(size);
            c.queue(0);
            c.queue(0);
            let sent = c.out.clone();
            assert_eq!(sent.len(), 2 * size);
            // Check each message in two pieces, as reads may split it.
            for m in 0..2 {
                let msg = &sent[m * size..(m + 1) * size];
                let cut = size / 2;
                c.check(&msg[..cut], 0).unwrap();
                c.check(&msg[cut..], cut).unwrap();
                c.recv_seq += 1;
            }
            c.recv_seq = 1;
            let err = c.check(&sent[..size], 0).unwrap_err();
            assert!(err.contains("mismatch on connection 3"), "{err}");
            assert!(err.contains("byte 0 of message 1"), "{err}");
        }
    }

    #[test]
    fn wrong_tail_byte_is_named() {
        let mut c = conn(16);
        c.queue(0);
        let mut msg = c.out.clone();
        msg[12] ^= 0xff;
        let err = c.check(&msg, 0).unwrap_err();
        assert!(err.contains("byte 12 of message 0"), "{err}");
    }

    #[test]
    fn seconds_parse_as_numbers_or_durations() {
        assert_eq!(parse_secs("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_secs("300ms"), Ok(Duration::from_millis(300)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_rate("1000"), Ok(1000.0));
    }

    #[test]
    fn zero_durations_are_refused_for_the_measurement_only() {
        for zero in ["0", "0.0", "0s", "0ms"] {
            let err = parse_positive_secs(zero).unwrap_err();
            assert!(err.contains("is zero"), "{zero}: {err}");
        }
        assert_eq!(parse_positive_secs("0.5"), Ok(Duration::from_millis(500)));
        // A warm-up of zero stays allowed.
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn sizes_take_units_and_stay_within_bounds() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4 kib"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("67108864"), Ok(64 << 20));
        for (bad, why) in [
            ("0", "outside 1 B to 64 MiB"),
            ("65MiB", "outside 1 B to 64 MiB"),
            ("67108865", "outside 1 B to 64 MiB"),
            ("99999999999999999999", "not a size"),
            ("1GiB", "unknown unit 'GiB'"),
            ("1XB", "unknown unit 'XB'"),
            ("1.5MiB", "unknown unit '.5MiB'"),
            ("MiB", "not a size"),
            ("", "not a size"),
            ("-1", "not a size"),
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn addresses_may_name_a_host() {
        let t = parse_target("127.0.0.1:7000").unwrap();
        assert_eq!(t.addrs, vec!["127.0.0.1:7000".parse().unwrap()]);
        let t = parse_target("[::1]:7000").unwrap();
        assert_eq!(t.addrs, vec!["[::1]:7000".parse().unwrap()]);
        let t = parse_target("localhost:7000").unwrap();
        assert_eq!(t.name, "localhost:7000");
        assert!(!t.addrs.is_empty());
        assert!(t
            .addrs
            .iter()
            .all(|a| a.port() == 7000 && a.ip().is_loopback()));
        let err = parse_target("localhost").unwrap_err();
        assert!(err.contains("not an address like"), "{err}");
        assert!(parse_target("127.0.0.1:99999").is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn command_line_refuses_what_it_cannot_honour() {
        let err = validate(&parse(&["--rate", "1000", "--depth", "16"]).unwrap()).unwrap_err();
        assert!(
            err.starts_with("--depth 16 cannot be used with --rate 1000: "),
            "{err}"
        );
        // --rate alone keeps depth 1, and saying so is fine (the echo bench does); --depth
        // alone is a closed loop.
        for ok in [
            &["--rate", "1000"][..],
            &["--rate", "1000", "--depth", "1"],
            &["--depth", "16"],
        ] {
            assert_eq!(validate(&parse(ok).unwrap()), Ok(()), "{ok:?}");
        }
        assert!(parse(&["--duration", "0"]).is_err());
        assert!(parse(&["--server-pid", "0"]).is_err());
        let a = parse(&["--size", "1MiB", "--addr", "localhost:7000"]).unwrap();
        assert_eq!(a.size, 1 << 20);
        assert_eq!(a.addr.name, "localhost:7000");
        assert_eq!(
            parse(&[]).unwrap().addr.addrs,
            vec!["127.0.0.1:7000".parse().unwrap()]
        );
    }

    #[test]
    fn run_refuses_what_the_command_line_would() {
        let ok = parse(&["--addr", "127.0.0.1:1"]).unwrap();
        let with = |f: fn(&mut BenchArgs)| {
            let mut a = ok.clone();
            f(&mut a);
            run(&a).unwrap_err()
        };
        let err = with(|a| {
            a.rate = Some(1000.0);
            a.depth = 16;
        });
        assert!(
            err.contains("--depth 16 cannot be used with --rate"),
            "{err}"
        );
        let err = with(|a| a.duration = Duration::ZERO);
        assert!(err.contains("--duration"), "{err}");
        let err = with(|a| a.size = 0);
        assert!(err.contains("--size 0"), "{err}");
        // Checked before any connection is tried (nothing listens on port 1).
        let err = with(|a| a.server_pid = Some(i32::MAX as u32));
        assert!(err.starts_with("--server-pid 2147483647"), "{err}");
    }

    #[test]
    fn server_pid_must_name_a_process() {
        #[cfg(target_os = "linux")]
        {
            assert_eq!(check_server_pid(std::process::id()), Ok(()));
            let err = check_server_pid(i32::MAX as u32).unwrap_err();
            assert_eq!(err, "--server-pid 2147483647: no such process");
        }
        // Elsewhere the server's CPU cannot be read: the option is refused, saying so.
        #[cfg(not(target_os = "linux"))]
        assert_eq!(
            check_server_pid(std::process::id()).unwrap_err(),
            format!(
                "--server-pid {}: the server's CPU use can only be measured on Linux",
                std::process::id()
            )
        );
    }

    /// A report of `msgs` messages answered in `elapsed` (zero: the window never opened).
    fn report(msgs: u64, elapsed: Duration, threads: usize) -> Report {
        let mut latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).unwrap();
        for i in 0..msgs {
            latency.record(10_000 + i).unwrap();
        }
        let measured = !elapsed.is_zero();
        Report {
            addr: "127.0.0.1:7000".parse().unwrap(),
            connections: 2,
            size: 64,
            depth: 1,
            rate: None,
            threads,
            measured,
            elapsed,
            msgs,
            lag: latency.clone(),
            latency,
            errors: 0,
            error_messages: Vec::new(),
            verify: false,
            verified_bytes: 0,
            cpu_elapsed: if measured {
                elapsed
            } else {
                Duration::from_millis(300)
            },
            load_cpu: Some(Duration::from_millis(154)),
            server_pid: None,
            server_cpu: None,
        }
    }

    #[test]
    fn a_run_stopped_in_warm_up_prints_only_what_it_measured() {
        let mut r = report(0, Duration::ZERO, 1);
        r.errors = 1;
        r.error_messages
            .push("connection 0: the server closed the connection".into());
        r.server_pid = Some(42);
        r.server_cpu = Some((42, Duration::from_millis(30)));
        let text = r.to_string();
        assert!(
            text.contains("stopped during warm-up after 0.30 s, nothing measured"),
            "{text}"
        );
        assert!(!text.contains("latency"), "{text}");
        assert!(!text.contains("throughput"), "{text}");
        assert!(!text.contains("unknown"), "{text}");
        assert!(
            text.contains("load CPU    51% of one core over 0.30 s of warm-up (1 thread)"),
            "{text}"
        );
        assert!(
            text.contains("server CPU  10% of one core over 0.30 s of warm-up (pid 42)"),
            "{text}"
        );
        let v = r.to_json();
        assert!(v.contains("\"measured\":false"), "{v}");
        assert!(v.contains("\"msgs_per_s\":null"), "{v}");
        assert!(v.contains("\"p50\":null"), "{v}");
        assert!(v.contains("\"load_cpu_percent\":51.333"), "{v}");
    }

    #[test]
    fn a_run_stopped_while_measuring_keeps_its_throughput_but_no_empty_latency() {
        let mut r = report(0, Duration::from_millis(500), 1);
        r.errors = 1;
        let text = r.to_string();
        assert!(text.contains("stopped after 0.50 s measured"), "{text}");
        assert!(text.contains("throughput  0 msgs/s"), "{text}");
        assert!(!text.contains("latency"), "{text}");
        assert!(!text.contains("p50"), "{text}");
        let r = report(10, Duration::from_millis(500), 1);
        assert!(r.to_string().contains("latency     p50 10.0 µs"), "{r}");
    }

    #[test]
    fn cpu_is_in_percent_of_one_core_with_the_thread_count() {
        let r = report(100, Duration::from_secs(1), 2);
        let text = r.to_string();
        assert!(
            text.contains("load CPU    15% of one core (2 threads)"),
            "{text}"
        );
        let mut r = report(100, Duration::from_secs(1), 2);
        r.load_cpu = Some(Duration::from_millis(1950));
        let text = r.to_string();
        assert!(
            text.contains(
                "load CPU    195% of one core (2 threads, the load generator is the limit)"
            ),
            "{text}"
        );
    }

    #[test]
    fn verification_shows_in_text_and_json() {
        let mut r = report(100, Duration::from_secs(1), 1);
        assert!(!r.to_string().contains("verified"));
        assert!(r
            .to_json()
            .contains("\"verify\":false,\"verified_bytes\":null"));
        r.verify = true;
        r.verified_bytes = 6400;
        let text = r.to_string();
        assert!(
            text.contains("verified    every byte: 6400 bytes came back as sent"),
            "{text}"
        );
        assert!(r
            .to_json()
            .contains("\"verify\":true,\"verified_bytes\":6400"));
        r.errors = 1;
        let text = r.to_string();
        assert!(!text.contains("every byte"), "{text}");
        assert!(
            text.contains("6400 bytes came back as sent before the run stopped"),
            "{text}"
        );
    }

    #[test]
    fn verified_bytes_are_counted_as_they_are_checked() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let shared = Shared::default();
        let mut lp = Loop::new(vec![(0, s)], plan(10), &shared, Instant::now()).unwrap();
        lp.conns[0].queue(0);
        lp.conns[0].queue(0);
        lp.conns[0].bytes_written = 20;
        let sent = lp.conns[0].out.clone();
        lp.buf[..15].copy_from_slice(&sent[..15]);
        lp.take(0, 15).unwrap();
        assert_eq!(lp.tally.verified, 15);
        lp.buf[..5].copy_from_slice(&sent[15..]);
        lp.take(0, 5).unwrap();
        assert_eq!(lp.tally.verified, 20);
        assert_eq!(lp.tally.msgs, 2);
    }

    #[test]
    fn json_escapes_messages() {
        let mut s = String::new();
        json_string(&mut s, "a \"b\"\n\\");
        assert_eq!(s, r#""a \"b\"\n\\""#);
    }
}
