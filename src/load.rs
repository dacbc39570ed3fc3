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
//! over the measured window, on Linux only.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
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

/// Options of `ringport bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  ringport bench --addr 127.0.0.1:7000 --connections 50 --duration 10\n  ringport bench --depth 16 --size 4096 --verify\n  ringport bench --rate 100000 --json"
)]
pub struct BenchArgs {
    /// Address of the echo server to load.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: std::net::SocketAddr,
    /// Connections to open, spread over the threads.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// Bytes per message.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub size: u32,
    /// Closed loop: messages in flight per connection (1 = ping-pong).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub depth: u32,
    /// How long to measure, in seconds (2, 0.5) or with a unit (500ms).
    #[arg(long, default_value = "5", value_parser = parse_secs)]
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
    /// Check that every byte comes back as it was sent.
    #[arg(long)]
    pub verify: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also report the CPU use of this process (the server) during the measurement, and its
    /// CPU time per message (Linux).
    #[arg(long, value_name = "PID")]
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
    /// The server's address.
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
    /// CPU time of the load generator in the window, if known.
    pub load_cpu: Option<Duration>,
    /// The server's process id and its CPU time in the window, if asked for and known.
    pub server_cpu: Option<(u32, Duration)>,
}

impl Report {
    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answered messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.secs()
    }

    /// Payload megabytes (10^6) per second, one direction.
    pub fn mb_per_sec(&self) -> f64 {
        self.msgs as f64 * self.size as f64 / 1e6 / self.secs()
    }

    /// Latency at quantile `q` in microseconds (0 when nothing was measured).
    pub fn latency_us(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.value_at_quantile(q) as f64 / 1e3
    }

    /// Open loop: how late messages left, at quantile `q`, in microseconds.
    pub fn lag_us(&self, q: f64) -> Option<f64> {
        if self.rate.is_none() || self.lag.is_empty() {
            return None;
        }
        Some(self.lag.value_at_quantile(q) as f64 / 1e3)
    }

    /// Largest latency in microseconds.
    pub fn max_us(&self) -> f64 {
        if self.latency.is_empty() {
            return 0.0;
        }
        self.latency.max() as f64 / 1e3
    }

    /// CPU use of the load generator in percent of one core.
    pub fn load_cpu_percent(&self) -> Option<f64> {
        self.load_cpu.map(|c| c.as_secs_f64() * 100.0 / self.secs())
    }

    /// CPU use of the server in percent of one core.
    pub fn server_cpu_percent(&self) -> Option<f64> {
        self.server_cpu
            .map(|(_, c)| c.as_secs_f64() * 100.0 / self.secs())
    }

    /// Server CPU time per answered message, in nanoseconds.
    pub fn server_ns_per_msg(&self) -> Option<f64> {
        match self.server_cpu {
            Some((_, c)) if self.msgs > 0 => Some(c.as_nanos() as f64 / self.msgs as f64),
            _ => None,
        }
    }

    fn mode(&self) -> String {
        match self.rate {
            Some(r) => format!("open loop at {r:.0} msgs/s"),
            None => format!("closed loop, depth {}", self.depth),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(512);
        let num = |v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("{v:.3}"),
            _ => "null".to_string(),
        };
        let _ = write!(
            s,
            "{{\"addr\":\"{}\",\"mode\":\"{}\",\"connections\":{},\"size\":{},\"depth\":{},\"rate\":{},\"threads\":{},\"duration_s\":{:.3},\"msgs\":{},\"msgs_per_s\":{:.1},\"mb_per_s\":{:.3}",
            self.addr,
            if self.rate.is_some() { "open" } else { "closed" },
            self.connections,
            self.size,
            self.depth,
            num(self.rate),
            self.threads,
            self.secs(),
            self.msgs,
            self.msgs_per_sec(),
            self.mb_per_sec(),
        );
        let _ = write!(
            s,
            ",\"latency_us\":{{\"p50\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3},\"mean\":{:.3}}}",
            self.latency_us(0.5),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.max_us(),
            if self.latency.is_empty() { 0.0 } else { self.latency.mean() / 1e3 },
        );
        let _ = write!(
            s,
            ",\"send_lag_us\":{{\"p50\":{},\"p99\":{}}}",
            num(self.lag_us(0.5)),
            num(self.lag_us(0.99)),
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
            "],\"load_cpu_percent\":{},\"server_pid\":{},\"server_cpu_percent\":{},\"server_cpu_ns_per_msg\":{}}}",
            num(self.load_cpu_percent()),
            self.server_cpu
                .map_or_else(|| "null".to_string(), |(p, _)| p.to_string()),
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

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ringport bench: {}, {} connections, {} B messages, {}, {} thread{}, {:.1} s measured",
            self.addr,
            self.connections,
            self.size,
            self.mode(),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.secs(),
        )?;
        writeln!(
            f,
            "  throughput  {:.0} msgs/s, {:.2} MB/s each way ({} msgs)",
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.msgs
        )?;
        writeln!(
            f,
            "  latency     p50 {}, p99 {}, p99.9 {}, max {}",
            fmt_us(self.latency_us(0.5)),
            fmt_us(self.latency_us(0.99)),
            fmt_us(self.latency_us(0.999)),
            fmt_us(self.max_us()),
        )?;
        if let (Some(p50), Some(p99)) = (self.lag_us(0.5), self.lag_us(0.99)) {
            writeln!(
                f,
                "  send lag    p50 {}, p99 {} behind schedule (counted in latency)",
                fmt_us(p50),
                fmt_us(p99)
            )?;
        }
        writeln!(f, "  errors      {}", self.errors)?;
        match self.load_cpu_percent() {
            Some(p) => {
                let ceiling = if p >= 95.0 * self.threads as f64 {
                    " (the load generator is the limit)"
                } else {
                    ""
                };
                writeln!(f, "  load CPU    {p:.0}% of a core{ceiling}")?;
            }
            None => writeln!(f, "  load CPU    unknown on this OS")?,
        }
        if let (Some((pid, _)), Some(p)) = (self.server_cpu, self.server_cpu_percent()) {
            let per = self
                .server_ns_per_msg()
                .map_or_else(|| "n/a".to_string(), |ns| format!("{ns:.0} ns"));
            writeln!(
                f,
                "  server CPU  {p:.0}% of a core, {per} per message (pid {pid})"
            )?;
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

/// Connect, load, measure.
///
/// # Errors
/// A message when the run cannot start: no connection, no event loop, no thread.
pub fn run(args: &BenchArgs) -> Result<Report, String> {
    let connections = args.connections as usize;
    let threads = (args.threads as usize).min(connections).max(1);
    let plan_interval = args
        .rate
        .map(|r| ((connections as f64 * 1e9 / r).round() as u64).max(1));
    let mut streams = Vec::with_capacity(connections);
    for i in 0..connections {
        let s = TcpStream::connect(args.addr).map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::ConnectionRefused => {
                    "connection refused (is an echo server listening there?)".to_string()
                }
                _ => e.to_string(),
            };
            format!("cannot connect to {} (connection {i}): {why}", args.addr)
        })?;
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
    let mut cpu_marks = (None, None, None, None);
    let mut window = Duration::ZERO;
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
                cpu_marks.0 = process_cpu(None);
                cpu_marks.1 = args.server_pid.and_then(|p| process_cpu(Some(p)));
            }
            if now >= end || shared.stop.load(Ordering::Relaxed) {
                cpu_marks.2 = process_cpu(None);
                cpu_marks.3 = args.server_pid.and_then(|p| process_cpu(Some(p)));
                window = now.saturating_duration_since(window_start.unwrap_or(now));
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
    for t in &tallies {
        latency.add(&t.latency).map_err(|e| e.to_string())?;
        lag.add(&t.lag).map_err(|e| e.to_string())?;
        msgs += t.msgs;
    }
    let error_messages = shared.errors.into_inner().unwrap_or_default();
    let delta = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let server_cpu = match (args.server_pid, delta(cpu_marks.1, cpu_marks.3)) {
        (Some(pid), Some(c)) => Some((pid, c)),
        _ => None,
    };
    Ok(Report {
        addr: args.addr,
        connections,
        size: plan.size,
        depth: plan.depth,
        rate: args.rate,
        threads,
        elapsed: window,
        msgs,
        latency,
        lag,
        errors: error_messages.len() as u64,
        error_messages,
        load_cpu: delta(cpu_marks.0, cpu_marks.2),
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
    fn json_escapes_messages() {
        let mut s = String::new();
        json_string(&mut s, "a \"b\"\n\\");
        assert_eq!(s, r#""a \"b\"\n\\""#);
    }
}
