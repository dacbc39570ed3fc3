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

mod args;
mod conn;
mod report;

use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use args::validate;
pub use args::{BenchArgs, Target};
use conn::{Loop, Plan, Shared};
pub use report::Report;

/// An open-loop event loop wakes to send at most this often.
pub const OPEN_LOOP_TICK: Duration = Duration::from_micros(50);

/// Longest a loop sleeps before it looks at the stop flag again.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Largest latency the histogram holds exactly (larger ones are recorded as this).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Smallest and largest `--size`.
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

    fn parse(args: &[&str]) -> BenchArgs {
        args::tests::parse(args).unwrap()
    }

    #[test]
    fn run_refuses_what_the_command_line_would() {
        let ok = parse(&["--addr", "127.0.0.1:1"]);
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
}
