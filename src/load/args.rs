//! The options of `ringport bench`, their parsers, and the checks made before a run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::units;

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

/// Most memory the message buffers of all connections may take together.
pub(super) const MEMORY_BUDGET: u64 = 2 << 30;

/// Bytes of message buffers a run needs: per connection, its pattern and what it queues
/// (`--depth` messages in the closed loop, at least one in the open loop).
pub(super) fn buffer_bytes(args: &BenchArgs) -> u64 {
    let per_message = u64::from(args.size);
    let queued = if args.rate.is_some() {
        1
    } else {
        u64::from(args.depth)
    };
    u64::from(args.connections).saturating_mul(per_message.saturating_mul(queued + 1))
}

/// Shortest and longest `--duration`.
const MIN_DURATION: Duration = Duration::from_millis(10);
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Shortest non-zero and longest `--warmup`.
const MIN_WARMUP: Duration = Duration::from_millis(1);
const MAX_WARMUP: Duration = Duration::from_secs(3600);

/// Options of `ringport bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  ringport bench --addr 127.0.0.1:7000 --connections 50 --duration 10\n  ringport bench --depth 16 --size 4KiB --verify\n  ringport bench --rate 100000 --json"
)]
pub struct BenchArgs {
    /// Address of the echo server to load: IP:PORT or HOST:PORT (resolved at start; the
    /// first address that accepts a connection is used).
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_target)]
    pub addr: Target,
    /// Connections to open, spread over the threads (1 to 1000000).
    #[arg(long, default_value = "50", value_name = "N", allow_hyphen_values = true,
          value_parser = |s: &str| units::count_in(s, 1, 1_000_000).map(|n| n as u32))]
    pub connections: u32,
    /// Bytes per message (e.g. 64, 4KiB, 1.5MiB; 1 B to 64 MiB).
    #[arg(long, default_value = "64", value_name = "BYTES", allow_hyphen_values = true,
          value_parser = |s: &str| units::size_in(s, MIN_SIZE, MAX_SIZE).map(|n| n as u32))]
    pub size: u32,
    /// Closed loop: messages in flight per connection (1 = ping-pong; at most 65536). With
    /// --rate only 1 is accepted: the schedule decides what is in flight.
    #[arg(long, default_value = "1", value_name = "K", allow_hyphen_values = true,
          value_parser = |s: &str| units::count_in(s, 1, 65_536).map(|n| n as u32))]
    pub depth: u32,
    /// How long to measure (e.g. 5, 0.5, 500ms, 2m; a bare number is seconds; 10ms to 24h).
    #[arg(long, default_value = "5", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_DURATION, MAX_DURATION, false))]
    pub duration: Duration,
    /// How long to run before measuring (0 to 1h).
    #[arg(long, default_value = "1", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_WARMUP, MAX_WARMUP, true))]
    pub warmup: Duration,
    /// Open loop: send this many messages per second in all (0.5, 1000, 1e6), on a fixed
    /// schedule; latency counts from the scheduled send time. Messages the load generator
    /// cannot send on time are counted as missed, not queued without bound.
    #[arg(long, value_name = "MSGS_PER_SEC", allow_hyphen_values = true, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Event loops (threads) of the load generator (1 to 1024; at most one per connection).
    #[arg(long, default_value = "1", value_name = "N", allow_hyphen_values = true,
          value_parser = |s: &str| units::count_in(s, 1, 1024).map(|n| n as u32))]
    pub threads: u32,
    /// Check that every byte comes back as it was sent (the summary says how many were).
    #[arg(long)]
    pub verify: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also report the CPU use of this process (the server) during the measurement, and its
    /// CPU time per message (Linux only; a PID that does not exist is an error).
    #[arg(long, value_name = "PID", allow_hyphen_values = true,
          value_parser = |s: &str| units::count_in(s, 1, i32::MAX as u64).map(|n| n as u32))]
    pub server_pid: Option<u32>,
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

/// Messages per second: any positive number (`0.5`, `1000`, `1e6`).
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(r) if r.is_finite() || r == f64::NEG_INFINITY => Err(format!(
            "'{s}' is out of range: give a positive number of messages per second"
        )),
        _ => Err(format!(
            "'{s}' is not a number of messages per second like 0.5, 1000 or 1e6"
        )),
    }
}

/// Check that `--server-pid` names a process whose CPU time can be read.
#[cfg(target_os = "linux")]
fn check_server_pid(pid: u32) -> Result<(), String> {
    use super::process_cpu;
    use std::io;

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

/// Refuse options that cannot be honoured: `--depth` above 1 with `--rate` (explicit
/// `--depth 1` stays allowed: it is what the open loop does), and what the value parsers
/// refuse already, for callers of [`run`] that build [`BenchArgs`] themselves; and a
/// `--server-pid` whose process does not exist.
pub(super) fn validate(args: &BenchArgs) -> Result<(), String> {
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
        return Err(format!(
            "--size {} is out of range: give a size from 1 B to 64 MiB",
            args.size
        ));
    }
    let buffers = buffer_bytes(args);
    if buffers > MEMORY_BUDGET {
        return Err(format!(
            "--size {} x --connections {} x {} needs about {} of message buffers, more than \
             the {} the load generator allows itself: use fewer connections, smaller messages \
             {}",
            units::fmt_size(u64::from(args.size)),
            args.connections,
            if args.rate.is_some() {
                "(1 queued + 1 pattern)".to_string()
            } else {
                format!("(--depth {} + 1 pattern)", args.depth)
            },
            units::fmt_size(buffers),
            units::fmt_size(MEMORY_BUDGET),
            if args.rate.is_some() {
                "or a lower rate"
            } else {
                "or a lower depth"
            },
        ));
    }
    if args.addr.addrs.is_empty() {
        return Err(format!("'{}' resolves to no address", args.addr));
    }
    if let Some(pid) = args.server_pid {
        check_server_pid(pid)?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The error clap gives for `args`, as printed.
    fn refusal(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    #[test]
    fn durations_are_seconds_or_take_a_unit_and_stay_in_range() {
        let a = parse(&["--duration", "2", "--warmup", "300ms"]).unwrap();
        assert_eq!(a.duration, Duration::from_secs(2));
        assert_eq!(a.warmup, Duration::from_millis(300));
        let a = parse(&["--duration", "0.5", "--warmup", "0"]).unwrap();
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::ZERO);
        for zero in ["0", "0.0", "0s", "0ms"] {
            let err = refusal(&["--duration", zero]);
            assert!(
                err.contains(&format!(
                    "'{zero}' is out of range: give a duration from 10ms to 24h"
                )),
                "{zero}: {err}"
            );
        }
        let err = refusal(&["--warmup", "1000000000"]);
        assert!(
            err.contains("is out of range: give 0 (off) or a duration from 1ms to 1h"),
            "{err}"
        );
        let err = refusal(&["--warmup", "-1"]);
        assert!(err.contains("'-1' is out of range"), "{err}");
    }

    #[test]
    fn rates_are_positive_and_may_be_fractional() {
        assert_eq!(parse(&["--rate", "0.5"]).unwrap().rate, Some(0.5));
        assert_eq!(parse(&["--rate", "1e6"]).unwrap().rate, Some(1e6));
        for bad in ["-5", "0", "-inf"] {
            let err = refusal(&["--rate", bad]);
            assert!(
                err.contains(&format!(
                    "'{bad}' is out of range: give a positive number of messages per second"
                )),
                "{bad}: {err}"
            );
        }
        assert!(refusal(&["--rate", "lots"]).contains("is not a number of messages"));
    }

    #[test]
    fn sizes_take_units_and_stay_within_bounds() {
        let size = |s: &str| parse(&["--size", s]).map(|a| a.size);
        assert_eq!(size("64").unwrap(), 64);
        assert_eq!(size("100B").unwrap(), 100);
        assert_eq!(size("4KiB").unwrap(), 4096);
        assert_eq!(size("4 kib").unwrap(), 4096);
        assert_eq!(size("1.5MiB").unwrap(), 3 << 19);
        assert_eq!(size("64MiB").unwrap(), 64 << 20);
        for (bad, why) in [
            ("0", "'0' is out of range: give a size from 1 B to 64 MiB"),
            (
                "65MiB",
                "'65MiB' is out of range: give a size from 1 B to 64 MiB",
            ),
            ("1GiB", "'1GiB' is out of range"),
            (
                "1XB",
                "unknown unit 'XB' (use B, KiB, MiB or GiB (K, M, G for short))",
            ),
            ("-1", "'-1' is out of range"),
            ("big", "'big' is not a size like 4096, 64KiB or 1.5MiB"),
        ] {
            let err = refusal(&["--size", bad]);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn counts_say_their_range() {
        for (arg, bad, why) in [
            (
                "--connections",
                "-1",
                "'-1' is out of range: give a whole number from 1 to 1000000",
            ),
            ("--connections", "0", "'0' is out of range"),
            (
                "--threads",
                "-2",
                "'-2' is out of range: give a whole number from 1 to 1024",
            ),
            (
                "--depth",
                "65537",
                "'65537' is out of range: give a whole number from 1 to 65536",
            ),
            ("--server-pid", "0", "'0' is out of range"),
        ] {
            let err = refusal(&[arg, bad]);
            assert!(err.contains(why), "{arg} {bad}: {err}");
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
    pub(crate) struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    pub(crate) fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
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
        let a = parse(&["--size", "1MiB", "--addr", "localhost:7000"]).unwrap();
        assert_eq!(a.size, 1 << 20);
        assert_eq!(a.addr.name, "localhost:7000");
        assert_eq!(
            parse(&[]).unwrap().addr.addrs,
            vec!["127.0.0.1:7000".parse().unwrap()]
        );
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
}
