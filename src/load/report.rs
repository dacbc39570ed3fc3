//! What a run measured, as text and as JSON.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;

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
    fn json_escapes_messages() {
        let mut s = String::new();
        json_string(&mut s, "a \"b\"\n\\");
        assert_eq!(s, r#""a \"b\"\n\\""#);
    }
}
