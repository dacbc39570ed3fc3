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
//!   counts in their latency. A connection keeps at most `OPEN_LOOP_BACKLOG` messages
//!   unanswered and a bounded send queue: messages due beyond that are missed (counted,
//!   never sent), so a rate the load generator cannot keep costs bounded memory and time and
//!   is reported as planned vs sent.
//!
//! Connections and every buffer are set up before the clock starts; the measured window is
//! `--duration` after `--warmup`, cut short by a failure or Ctrl-C (which still reports what
//! was measured, and exits 130).
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
//! wrong bytes) stops the run, is printed (one line for connections that failed alike), and
//! makes the exit code non-zero; so does a window in which no message was answered.
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
use std::sync::atomic::{AtomicBool, Ordering};
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
/// Set by the Ctrl-C (SIGINT or SIGTERM) handler: the run stops and reports what it
/// measured so far.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Exit code of a run stopped by Ctrl-C, as a shell reports SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

/// Run `ringport bench` and return the process exit code: 0 when messages were measured
/// without failure, 1 when the run failed or measured nothing, 2 for options that cannot
/// be honoured, 130 when Ctrl-C stopped it (after printing what was measured).
pub fn main(args: &BenchArgs) -> std::process::ExitCode {
    // Options that cannot be honoured are a usage error (exit 2), as clap's own are.
    if let Err(e) = validate(args) {
        say(&e);
        return ExitCode::from(2);
    }
    let mut presses = crate::cli::Presses::default();
    let installed = ctrlc::set_handler(move || match presses.press() {
        crate::cli::Press::First => INTERRUPTED.store(true, Ordering::SeqCst),
        crate::cli::Press::Same => {}
        crate::cli::Press::Again => std::process::exit(i32::from(EXIT_INTERRUPTED)),
    });
    if let Err(e) = installed {
        say(&format!(
            "cannot install the Ctrl-C handler ({e}): Ctrl-C will end the run without a summary"
        ));
    }
    let threads = threads_for(args);
    if threads < args.threads as usize {
        say(&format!(
            "--threads {} reduced to {threads}: at most one thread per connection",
            args.threads
        ));
    }
    // A descriptor per connection: a shell's soft limit (often 1024) would stop the run at
    // about a thousand.
    let loops = u16::try_from(threads).unwrap_or(u16::MAX);
    match crate::nofile::raise_for_clients(u64::from(args.connections), loops) {
        crate::nofile::ClientRoom::Enough => {}
        crate::nofile::ClientRoom::Short(warning) => say(&warning),
        crate::nofile::ClientRoom::Impossible(why) => {
            // Fewer descriptors than connections: refused before connecting, as options
            // that cannot be honoured are.
            say(&why);
            return ExitCode::from(2);
        }
    }
    let json = args.json;
    let report = run(args, &mut |header| {
        if !json {
            // What runs, first; the figures follow when it is over.
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{header}").and_then(|()| out.flush());
        }
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            say(&e);
            if json {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{}", report::json_error(&e)).and_then(|()| out.flush());
            }
            return ExitCode::FAILURE;
        }
    };
    let mut out = io::stdout().lock();
    // A closed stdout (a pipe whose reader left) must not turn a good run into a panic.
    let _ = if json {
        writeln!(out, "{}", report.to_json())
    } else {
        write!(out, "{report}")
    };
    let _ = out.flush();
    drop(out);
    let failures = report.failure_lines();
    for line in &failures {
        say(line);
    }
    let why = report.why_not_ok();
    if let (Some(why), true) = (&why, failures.is_empty()) {
        say(why);
    }
    if report.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if why.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One line on stderr, prefixed `ringport bench: `; dropped if stderr cannot take it.
fn say(line: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "ringport bench: {line}");
}

/// Event loops to run: `--threads`, but no more than there are connections.
fn threads_for(args: &BenchArgs) -> usize {
    (args.threads as usize)
        .min(args.connections as usize)
        .max(1)
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

/// Connect, build every event loop and its buffers, then load and measure: `announce` gets
/// the header line once setup is done, just before the clock starts.
///
/// # Errors
/// A message when the run cannot start: bad options, no such `--server-pid`, no
/// connection, no event loop, no thread.
pub fn run(args: &BenchArgs, announce: &mut dyn FnMut(&str)) -> Result<Report, String> {
    validate(args)?;
    let connections = args.connections as usize;
    let threads = threads_for(args);
    // Nanoseconds between two messages of one connection.
    let interval = args.rate.map(|r| connections as f64 * 1e9 / r);
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
    let plan = Plan {
        size: args.size as usize,
        depth: args.depth as usize,
        verify: args.verify,
        interval,
        // Half the memory budget at most for what the open loop may queue, in all.
        queue_bytes: usize::try_from(args::MEMORY_BUDGET / 2 / connections as u64)
            .unwrap_or(usize::MAX)
            .min(conn::OPEN_LOOP_QUEUE_BYTES),
        connections,
        warmup_end: args.warmup.as_nanos() as u64,
        end: (args.warmup + args.duration).as_nanos() as u64,
    };
    // Setup, before the clock starts: every loop with its connections' buffers.
    let mut loops = Vec::with_capacity(threads);
    for (t, conns) in per_thread.into_iter().enumerate() {
        loops.push(
            Loop::new(conns, plan, &shared)
                .map_err(|e| format!("cannot start event loop {t}: {e}"))?,
        );
    }
    announce(&report::header_line(
        addr,
        connections,
        plan.size,
        &report::mode_text(args.rate, plan.depth),
        threads,
        args.warmup,
        args.duration,
    ));
    let server_cpu_now = || args.server_pid.and_then(|p| process_cpu(Some(p)));
    let progress = io::stderr().is_terminal();
    let mut tallies = Vec::with_capacity(threads);
    // CPU is measured from the start until the window opens, then from the window's start.
    let mut cpu_from = (process_cpu(None), server_cpu_now());
    let mut cpu_to = (None, None);
    let start = Instant::now();
    let mut cpu_mark = start;
    let warmup_end = start + args.warmup;
    let end = warmup_end + args.duration;
    let mut stopped_at = end;
    let mut interrupted = false;
    let spawned: Result<(), String> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for (t, lp) in loops.into_iter().enumerate() {
            let h = std::thread::Builder::new()
                .name(format!("ringport-bench-{t}"))
                .spawn_scoped(scope, move || lp.run(start))
                .map_err(|e| format!("cannot start thread {t}: {e}"));
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        // The main thread samples CPU at the window's edges, watches for Ctrl-C and shows
        // progress.
        let mut next_tick = start + Duration::from_secs(1);
        let mut last_answered = 0u64;
        let mut window_seen = false;
        loop {
            let now = Instant::now();
            if !window_seen && now >= warmup_end {
                window_seen = true;
                cpu_mark = now;
                cpu_from = (process_cpu(None), server_cpu_now());
            }
            interrupted = INTERRUPTED.load(Ordering::SeqCst);
            if now >= end || interrupted || shared.stop.load(Ordering::Relaxed) {
                cpu_to = (process_cpu(None), server_cpu_now());
                stopped_at = now.min(end);
                break;
            }
            if now >= next_tick {
                let answered = shared.answered.load(Ordering::Relaxed);
                if progress {
                    let t = next_tick.duration_since(start).as_secs();
                    let line =
                        report::progress_line(t, args.warmup, answered - last_answered, plan.size);
                    let _ = writeln!(io::stderr().lock(), "{line}");
                }
                last_answered = answered;
                next_tick += Duration::from_secs(1);
            }
            let mut until = next_tick.min(end);
            if !window_seen {
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
                Err(_) => {
                    let what = "an event loop panicked".to_string();
                    shared.fail(what.clone(), what);
                }
            }
        }
        Ok(())
    });
    spawned?;
    let mut latency =
        Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).map_err(|e| e.to_string())?;
    let mut lag = latency.clone();
    let (mut msgs, mut verified_bytes, mut planned, mut sent) = (0, 0, 0, 0);
    for t in &tallies {
        latency.add(&t.latency).map_err(|e| e.to_string())?;
        lag.add(&t.lag).map_err(|e| e.to_string())?;
        msgs += t.msgs;
        verified_bytes += t.verified;
        planned += t.planned;
        sent += t.sent;
    }
    let failures = shared.errors.into_inner().unwrap_or_default();
    let delta = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let server_cpu = match (args.server_pid, delta(cpu_from.1, cpu_to.1)) {
        (Some(pid), Some(c)) => Some((pid, c)),
        _ => None,
    };
    let measured = stopped_at > warmup_end;
    Ok(Report {
        addr,
        connections,
        size: plan.size,
        depth: plan.depth,
        rate: args.rate,
        threads,
        threads_asked: args.threads as usize,
        warmup: args.warmup,
        measured,
        interrupted,
        elapsed: stopped_at.saturating_duration_since(warmup_end),
        msgs,
        latency,
        lag,
        planned: args.rate.map(|_| planned),
        sent: args.rate.map(|_| sent),
        errors: failures.len() as u64,
        failures,
        verify: args.verify,
        verified_bytes,
        cpu_elapsed: stopped_at.max(cpu_mark).duration_since(cpu_mark),
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
            run(&a, &mut |_| {}).unwrap_err()
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
