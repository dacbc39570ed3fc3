//! What a run measured, as text and as JSON.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::conn::Failure;
use crate::units::{fmt_duration, fmt_size};

/// Bytes in a MiB: throughput is given in MiB/s, as sizes are in KiB and MiB.
const MIB: f64 = (1u64 << 20) as f64;

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
    /// `--threads` as asked (more than `threads` when there were fewer connections).
    pub threads_asked: usize,
    /// The warm-up asked for.
    pub warmup: Duration,
    /// Whether the measured window opened (`false`: the run stopped in warm-up).
    pub measured: bool,
    /// Whether Ctrl-C (SIGINT or SIGTERM) stopped the run.
    pub interrupted: bool,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Messages answered in the window.
    pub msgs: u64,
    /// Latencies of those messages, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Open loop: how late messages left against their schedule, in nanoseconds (the load
    /// generator's own delay, included in `latency`).
    pub lag: Histogram<u64>,
    /// Open loop: messages the schedule had due in the measured window.
    pub planned: Option<u64>,
    /// Open loop: how many of those were sent (the rest were missed: the load generator
    /// could not keep the rate).
    pub sent: Option<u64>,
    /// Failures (each stops the run).
    pub errors: u64,
    /// What went wrong, per connection.
    pub failures: Vec<Failure>,
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

    /// Payload MiB per second, one direction.
    pub fn mib_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64 / MIB
    }

    /// Open loop: messages due in the window that were never sent.
    pub fn missed(&self) -> Option<u64> {
        Some(self.planned?.saturating_sub(self.sent?))
    }

    /// Open loop: whether the load generator failed to send every message on schedule.
    pub fn rate_missed(&self) -> bool {
        self.missed().is_some_and(|m| m > 0)
    }

    /// What went wrong, one line per reason: connections that failed the same way share
    /// one line that counts them and names the first.
    pub fn failure_lines(&self) -> Vec<String> {
        let mut groups: Vec<(&Failure, usize)> = Vec::new();
        for f in &self.failures {
            match groups.iter_mut().find(|(g, _)| g.reason == f.reason) {
                Some((_, n)) => *n += 1,
                None => groups.push((f, 1)),
            }
        }
        groups
            .into_iter()
            .map(|(f, n)| {
                if n == 1 {
                    f.detail.clone()
                } else {
                    format!("{n} connections: {} (first: {})", f.reason, f.detail)
                }
            })
            .collect()
    }

    /// Why the run did not succeed (`None` when it did): the first failure, an interrupt,
    /// or a window in which no message was answered.
    pub fn why_not_ok(&self) -> Option<String> {
        if let Some(first) = self.failure_lines().into_iter().next() {
            return Some(first);
        }
        if self.interrupted {
            return Some("interrupted".to_string());
        }
        if !self.measured {
            return Some("the measured window never opened".to_string());
        }
        if self.msgs == 0 {
            return Some(
                "no message was answered in the measured window (is an echo server answering \
                 there?)"
                    .to_string(),
            );
        }
        None
    }

    /// Where a run that stopped early stopped: `"warmup"` or `"measurement"`.
    pub fn stopped_during(&self) -> Option<&'static str> {
        if self.errors == 0 && !self.interrupted {
            return None;
        }
        Some(if self.measured {
            "measurement"
        } else {
            "warmup"
        })
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

    /// The report as one line of JSON. Values that mean nothing for this run (latency when
    /// no message was answered, throughput when nothing was measured) are `null`.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(640);
        let num = |v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("{v:.3}"),
            _ => "null".to_string(),
        };
        let measured = |v: f64| self.measured.then_some(v);
        let _ = write!(s, "{{\"ok\":{},\"why\":", self.why_not_ok().is_none());
        match self.why_not_ok() {
            Some(why) => json_string(&mut s, &why),
            None => s.push_str("null"),
        }
        let count = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
        let _ = write!(
            s,
            ",\"interrupted\":{},\"stopped_during\":{},\"addr\":\"{}\",\"mode\":\"{}\",\"connections\":{},\"size\":{},\"depth\":{},\"rate\":{},\"rate_missed\":{},\"planned\":{},\"sent\":{},\"missed\":{},\"threads\":{},\"threads_asked\":{},\"warmup_s\":{:.3},\"measured\":{},\"duration_s\":{:.3},\"msgs\":{},\"msgs_per_s\":{},\"mib_per_s\":{}",
            self.interrupted,
            self.stopped_during()
                .map_or_else(|| "null".to_string(), |p| format!("\"{p}\"")),
            self.addr,
            if self.rate.is_some() { "open" } else { "closed" },
            self.connections,
            self.size,
            self.depth,
            num(self.rate),
            self.rate_missed(),
            count(self.planned),
            count(self.sent),
            count(self.missed()),
            self.threads,
            self.threads_asked,
            self.warmup.as_secs_f64(),
            self.measured,
            self.elapsed.as_secs_f64(),
            self.msgs,
            num(measured(self.msgs_per_sec())),
            num(measured(self.mib_per_sec())),
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
        for (i, e) in self.failure_lines().iter().enumerate() {
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

/// A rate as people write it: `100000`, `2500`, `0.5`, `12.25` (no `0` for half a message a
/// second).
pub fn fmt_rate(r: f64) -> String {
    if r >= 100.0 || r == 0.0 {
        format!("{r:.0}")
    } else {
        let t = format!("{r:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `closed loop, depth 16` or `open loop at 0.5 msgs/s`.
pub fn mode_text(rate: Option<f64>, depth: usize) -> String {
    match rate {
        Some(r) => format!("open loop at {} msgs/s", fmt_rate(r)),
        None => format!("closed loop, depth {depth}"),
    }
}

/// What runs, printed when it starts.
pub fn header_line(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    mode: &str,
    threads: usize,
    warmup: Duration,
    duration: Duration,
) -> String {
    let warm = if warmup.is_zero() {
        "no warm-up".to_string()
    } else {
        format!("{} warm-up", fmt_duration(warmup))
    };
    format!(
        "ringport bench: {addr}, {connections} connection{}, {} messages, {mode}, {}; {warm}, \
         then {} measured",
        if connections == 1 { "" } else { "s" },
        fmt_size(size as u64),
        threads_text(threads),
        fmt_duration(duration),
    )
}

/// The live progress line for the second that ended `t` seconds after the start: `msgs`
/// answered in it. It is labelled warm-up when that second lay within the warm-up.
pub fn progress_line(t: u64, warmup: Duration, msgs: u64, size: usize) -> String {
    let (from, to) = (
        Duration::from_secs(t.saturating_sub(1)),
        Duration::from_secs(t),
    );
    let phase = if to <= warmup {
        " (warm-up)"
    } else if from < warmup {
        " (warm-up until {})"
    } else {
        ""
    };
    let phase = phase.replace("{}", &fmt_duration(warmup));
    format!(
        "[{t:>3} s] {msgs} msgs/s, {:.2} MiB/s{phase}",
        msgs as f64 * size as f64 / MIB
    )
}

/// The JSON printed when the run could not start (no connection, no thread).
pub fn json_error(why: &str) -> String {
    let mut s = String::from("{\"ok\":false,\"why\":");
    json_string(&mut s, why);
    s.push('}');
    s
}

/// The summary after the header: one labelled line per figure.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stopped = self.errors > 0 || self.interrupted;
        let how = if self.interrupted {
            "interrupted"
        } else {
            "stopped"
        };
        let window = match (self.measured, stopped) {
            (false, _) => format!(
                "{how} during warm-up after {:.2} s, nothing measured",
                self.cpu_elapsed.as_secs_f64()
            ),
            (true, true) => format!("{how} after {:.2} s measured", self.elapsed.as_secs_f64()),
            (true, false) => format!("{:.1} s measured", self.elapsed.as_secs_f64()),
        };
        writeln!(f, "  window      {window}")?;
        if self.measured {
            writeln!(
                f,
                "  throughput  {} msgs/s, {:.2} MiB/s each way ({} msgs)",
                fmt_rate(self.msgs_per_sec()),
                self.mib_per_sec(),
                self.msgs
            )?;
        }
        if let (Some(planned), Some(sent), Some(missed)) = (self.planned, self.sent, self.missed())
        {
            if missed > 0 {
                writeln!(
                    f,
                    "  schedule    rate missed: {sent} of {planned} planned messages sent, {missed} \
                     missed ({:.1}%): the load generator could not keep this rate",
                    missed as f64 * 100.0 / planned.max(1) as f64
                )?;
            } else if self.measured {
                writeln!(f, "  schedule    all {planned} planned messages sent")?;
            }
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
            if self.why_not_ok().is_none() {
                writeln!(
                    f,
                    "  verified    every byte: {} bytes came back as sent (warm-up included)",
                    self.verified_bytes
                )?;
            } else {
                writeln!(
                    f,
                    "  verified    {} bytes came back as sent before the run ended",
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
        match self.why_not_ok() {
            Some(_) if self.interrupted && self.errors == 0 => writeln!(
                f,
                "  result      interrupted: the figures cover what was measured until then"
            )?,
            Some(why) => writeln!(f, "  result      failed: {why}")?,
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::MAX_LATENCY_NS;

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
            threads_asked: threads,
            warmup: Duration::from_secs(1),
            measured,
            interrupted: false,
            elapsed,
            msgs,
            lag: latency.clone(),
            latency,
            planned: None,
            sent: None,
            errors: 0,
            failures: Vec::new(),
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
        r.failures.push(Failure {
            reason: "the server closed the connection".into(),
            detail: "connection 0: the server closed the connection".into(),
        });
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
        assert!(
            v.starts_with(
                "{\"ok\":false,\"why\":\"connection 0: the server closed the connection\",\
                 \"interrupted\":false,\"stopped_during\":\"warmup\","
            ),
            "{v}"
        );
        assert!(v.contains("\"msgs_per_s\":null"), "{v}");
        assert!(v.contains("\"p50\":null"), "{v}");
        assert!(v.contains("\"load_cpu_percent\":51.333"), "{v}");
    }

    #[test]
    fn a_run_stopped_while_measuring_keeps_its_throughput_but_no_empty_latency() {
        let mut r = report(0, Duration::from_millis(500), 1);
        r.errors = 1;
        r.failures.push(Failure {
            reason: "the server closed the connection".into(),
            detail: "connection 1: the server closed the connection".into(),
        });
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
        r.failures.push(Failure {
            reason: "answers differ from what was sent".into(),
            detail: "verify mismatch on connection 0".into(),
        });
        let text = r.to_string();
        assert!(!text.contains("every byte"), "{text}");
        assert!(
            text.contains("6400 bytes came back as sent before the run ended"),
            "{text}"
        );
    }

    #[test]
    fn a_window_with_no_answer_fails_and_claims_nothing_verified() {
        let mut r = report(0, Duration::from_millis(500), 1);
        r.verify = true;
        let why = "no message was answered in the measured window (is an echo server \
                   answering there?)";
        assert_eq!(r.why_not_ok().as_deref(), Some(why));
        let text = r.to_string();
        assert!(!text.contains("every byte"), "{text}");
        assert!(
            text.contains(&format!("  result      failed: {why}")),
            "{text}"
        );
        let v = r.to_json();
        assert!(
            v.starts_with("{\"ok\":false,\"why\":\"no message was answered"),
            "{v}"
        );
        assert!(v.contains("\"stopped_during\":null"), "{v}");
    }

    #[test]
    fn an_interrupted_run_keeps_its_figures() {
        let mut r = report(1000, Duration::from_millis(1500), 1);
        r.interrupted = true;
        assert_eq!(r.why_not_ok().as_deref(), Some("interrupted"));
        let text = r.to_string();
        assert!(
            text.contains("  window      interrupted after 1.50 s measured"),
            "{text}"
        );
        assert!(text.contains("  throughput  667 msgs/s"), "{text}");
        assert!(
            text.contains("  result      interrupted: the figures cover what was measured"),
            "{text}"
        );
        let v = r.to_json();
        assert!(
            v.contains("\"interrupted\":true,\"stopped_during\":\"measurement\""),
            "{v}"
        );
    }

    #[test]
    fn a_missed_rate_is_counted_not_hidden() {
        let mut r = report(900, Duration::from_secs(1), 1);
        r.rate = Some(1e12);
        r.planned = Some(1_000_000);
        r.sent = Some(1000);
        assert!(r.rate_missed());
        assert_eq!(r.missed(), Some(999_000));
        assert_eq!(r.why_not_ok(), None);
        let text = r.to_string();
        assert!(
            text.contains(
                "  schedule    rate missed: 1000 of 1000000 planned messages sent, 999000 missed \
                 (99.9%): the load generator could not keep this rate"
            ),
            "{text}"
        );
        let v = r.to_json();
        assert!(
            v.contains("\"rate_missed\":true,\"planned\":1000000,\"sent\":1000,\"missed\":999000"),
            "{v}"
        );
        r.sent = Some(1_000_000);
        assert!(!r.rate_missed());
        assert!(r
            .to_string()
            .contains("  schedule    all 1000000 planned messages sent"));
    }

    #[test]
    fn connections_failing_alike_share_one_line() {
        let mut r = report(0, Duration::ZERO, 1);
        for i in 0..40 {
            r.failures.push(Failure {
                reason: "the server closed the connection".into(),
                detail: format!("connection {i}: the server closed the connection"),
            });
        }
        r.failures.push(Failure {
            reason: "answers differ from what was sent".into(),
            detail: "verify mismatch on connection 7".into(),
        });
        r.errors = r.failures.len() as u64;
        assert_eq!(
            r.failure_lines(),
            [
                "40 connections: the server closed the connection (first: connection 0: the \
                 server closed the connection)",
                "verify mismatch on connection 7",
            ]
        );
    }

    #[test]
    fn rates_sizes_and_the_header_use_one_unit_system() {
        assert_eq!(mode_text(Some(0.5), 1), "open loop at 0.5 msgs/s");
        assert_eq!(mode_text(Some(12.25), 1), "open loop at 12.25 msgs/s");
        assert_eq!(mode_text(Some(100000.0), 1), "open loop at 100000 msgs/s");
        assert_eq!(fmt_rate(0.0), "0");
        assert_eq!(
            header_line(
                "127.0.0.1:7000".parse().unwrap(),
                40,
                1 << 20,
                &mode_text(None, 4),
                2,
                Duration::from_millis(500),
                Duration::from_secs(5),
            ),
            "ringport bench: 127.0.0.1:7000, 40 connections, 1 MiB messages, closed loop, depth \
             4, 2 threads; 500ms warm-up, then 5s measured"
        );
        let r = report(1 << 14, Duration::from_secs(1), 1);
        assert!(
            r.to_string()
                .contains("  throughput  16384 msgs/s, 1.00 MiB/s each way"),
            "{r}"
        );
        assert!(r.to_json().contains("\"mib_per_s\":1.000"));
    }

    #[test]
    fn progress_labels_the_second_that_passed() {
        let w = Duration::from_secs(1);
        assert_eq!(
            progress_line(1, w, 1024, 1024),
            "[  1 s] 1024 msgs/s, 1.00 MiB/s (warm-up)"
        );
        assert_eq!(
            progress_line(2, w, 2048, 64),
            "[  2 s] 2048 msgs/s, 0.12 MiB/s"
        );
        assert_eq!(
            progress_line(2, Duration::from_millis(1500), 10, 64),
            "[  2 s] 10 msgs/s, 0.00 MiB/s (warm-up until 1.5s)"
        );
        assert_eq!(
            progress_line(1, Duration::ZERO, 0, 64),
            "[  1 s] 0 msgs/s, 0.00 MiB/s"
        );
    }

    #[test]
    fn json_escapes_messages() {
        let mut s = String::new();
        json_string(&mut s, "a \"b\"\n\\");
        assert_eq!(s, r#""a \"b\"\n\\""#);
    }
}
