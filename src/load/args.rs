//! The options of `ringport bench`, their parsers, and the checks made before a run.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::process_cpu;

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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

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

    #[cfg(target_os = "linux")]
    #[test]
    fn server_pid_must_name_a_process() {
        assert_eq!(check_server_pid(std::process::id()), Ok(()));
        let err = check_server_pid(i32::MAX as u32).unwrap_err();
        assert_eq!(err, "--server-pid 2147483647: no such process");
    }
}
