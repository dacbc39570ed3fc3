//! Command line: `ringport serve`, `ringport bench`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::load::BenchArgs;
use clap::{Parser, Subcommand};
use ringport::service::resp::{EvictionPolicy, Resp};
use ringport::service::Echo;
use ringport::{Backend, Server};

#[derive(Debug, Parser)]
#[command(
    name = "ringport",
    version,
    about = "A TCP server engine: io_uring completions on Linux, a portable readiness driver everywhere else",
    after_help = "Examples:\n  ringport serve                                  echo on 127.0.0.1:7000\n  ringport serve --listen 0.0.0.0:9000 --backend poll\n  ringport bench --addr 127.0.0.1:7000 --connections 50 --duration 10"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Serve a protocol until SIGINT or SIGTERM.
    #[command(
        after_help = "Examples:\n  ringport serve\n  ringport serve --listen 127.0.0.1:0 --workers 2\n  RINGPORT_BACKEND=poll ringport serve --io-threads 2\n  ringport serve --max-connections 1000 --idle-timeout 30s --output-limit 1MiB"
    )]
    Serve(ServeArgs),
    /// Load an echo server and report throughput and latency.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (IP:PORT or HOST:PORT); port 0 picks a free port (the banner
    /// says which). Default: 127.0.0.1 on the service's port (echo 7000, resp 6379).
    #[arg(long, value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// The protocol to serve.
    #[arg(long, default_value = "echo", value_parser = ["echo", "resp"])]
    service: String,
    /// I/O driver: auto (io_uring where allowed, else poll), uring, or poll.
    #[arg(long, env = "RINGPORT_BACKEND", default_value = "auto")]
    backend: Backend,
    /// I/O threads, each with its own listener and ring or poller.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=255))]
    io_threads: u16,
    /// Worker threads running the service; 0 runs it inline on the I/O threads (cheapest
    /// for light services such as echo). Give workers to services that do real work per
    /// request, so a slow request does not hold up the I/O thread.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    workers: u16,
    /// Connections open at once, across all I/O threads; more are accepted and closed at
    /// once.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Close a connection that sends nothing for this long (e.g. 30s, 500ms; 0: never).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Close a connection whose queued output made no progress for this long: a peer that
    /// stopped reading (0: never).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    send_timeout: Duration,
    /// Queued output per connection above which reading from it pauses (e.g. 1MiB).
    #[arg(long, default_value = "1MiB", value_parser = |s: &str| parse_bytes_in(s, 1024, 1 << 30))]
    output_limit: usize,
    /// How long shutdown waits for owed output before closing anyway.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// io_uring: provided receive buffers per I/O thread (a power of two, 1 to 32768).
    #[arg(long, default_value_t = 256, value_parser = parse_ring_buffers)]
    ring_buffers: u16,
    /// io_uring: size of each provided receive buffer (e.g. 16KiB; 64 B to 1 MiB).
    #[arg(long, default_value = "16KiB", value_parser = |s: &str| parse_bytes_in(s, 64, 1 << 20))]
    buffer_size: usize,
    #[command(flatten)]
    resp: RespArgs,
}

/// Settings of `--service resp`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Service resp")]
struct RespArgs {
    /// Memory limit for keys and values (e.g. 100MiB; 0: none). Over it, writes evict keys
    /// or are refused, as --maxmemory-policy says.
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    maxmemory: usize,
    /// What writes over --maxmemory do: noeviction (refused with -OOM), allkeys-lru,
    /// volatile-lru, allkeys-random.
    #[arg(long, default_value = "noeviction")]
    maxmemory_policy: EvictionPolicy,
    /// Longest single argument a request may carry; longer is a protocol error.
    #[arg(long, default_value = "512MiB", value_parser = |s: &str| parse_bytes_in(s, 1, 1 << 32))]
    proto_max_bulk_len: usize,
    /// Snapshot file: loaded at start if it exists (a corrupt one is refused), written by
    /// SAVE, BGSAVE and on shutdown.
    #[arg(long, value_name = "FILE")]
    snapshot: Option<std::path::PathBuf>,
}

/// The port a service listens on unless --listen says otherwise.
fn default_port(service: &str) -> u16 {
    match service {
        "resp" => 6379,
        _ => 7000,
    }
}

/// An IP:PORT, or a HOST:PORT resolved now (the first address it resolves to).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("'{s}' resolves to no address")),
        Err(e) => Err(format!("'{s}' is not an address like 127.0.0.1:7000 ({e})")),
    }
}

/// A size within `lo..=hi` bytes.
fn parse_bytes_in(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let n = parse_bytes(s)?;
    if n < lo || n > hi {
        return Err(format!("{n} bytes is outside {lo}..={hi}"));
    }
    Ok(n)
}

/// A power of two from 1 to 32768.
fn parse_ring_buffers(s: &str) -> Result<u16, String> {
    let n: u16 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number from 1 to 32768"))?;
    if n == 0 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two from 1 to 32768"));
    }
    Ok(n)
}

/// Parse `500ms`, `2s`, `1m`; a bare `0` means zero.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 500ms or 2s: {e}"))
}

/// Parse `4096`, `64KiB`, `1MiB`, `1G` (K/M/G are powers of 1024).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 4096, 64KiB or 1MiB"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve(args),
        Commands::Bench(args) => crate::load::main(&args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port(&args.service))));
    let mut builder = Server::builder();
    builder
        .listen(listen)
        .backend(args.backend)
        .io_threads(usize::from(args.io_threads))
        .max_connections(usize::try_from(args.max_connections).unwrap_or(usize::MAX))
        .idle_timeout(Some(args.idle_timeout))
        .send_timeout(Some(args.send_timeout))
        .output_limit(args.output_limit)
        .shutdown_grace(args.shutdown_grace)
        .ring_buffers(args.ring_buffers)
        .buffer_size(u32::try_from(args.buffer_size).unwrap_or(u32::MAX));
    builder.workers(usize::from(args.workers));
    let mut store = None;
    let server = match args.service.as_str() {
        "echo" => builder.build(Echo),
        "resp" => {
            let mut resp = Resp::builder();
            resp.maxmemory(args.resp.maxmemory as u64)
                .maxmemory_policy(args.resp.maxmemory_policy)
                .proto_max_bulk_len(args.resp.proto_max_bulk_len);
            if let Some(path) = &args.resp.snapshot {
                resp.snapshot(path);
            }
            match resp.build() {
                Ok(r) => {
                    store = Some(r.store());
                    builder.build(r)
                }
                Err(e) => {
                    eprintln!("ringport: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        other => {
            eprintln!("ringport: unknown service '{other}'");
            return ExitCode::from(2);
        }
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringport: cannot serve on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(reason) = server.fallback_reason() {
        eprintln!("ringport: {reason}; using the poll backend");
    }
    let handle = server.shutdown_handle();
    let signals = AtomicUsize::new(0);
    let installed = ctrlc::set_handler(move || {
        if signals.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("ringport: shutting down (again to exit at once)");
            handle.shutdown();
        } else {
            std::process::exit(130);
        }
    });
    if let Err(e) = installed {
        eprintln!("ringport: cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    // After the handler is in place: whoever reads the banner may signal at once.
    println!("{}, service {}", server.banner(), args.service);
    let code = match server.wait() {
        Ok(stats) => {
            eprintln!("ringport: stopped; {stats}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringport: stopped with an error: {e}");
            ExitCode::FAILURE
        }
    };
    // Every connection is closed now: every acknowledged write is in the store.
    match store.map(|s| s.save()) {
        Some(Ok(Some(keys))) => eprintln!("ringport: snapshot written ({keys} keys)"),
        Some(Err(e)) => {
            eprintln!("ringport: cannot write the snapshot: {e}");
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert!(parse_bytes("1XB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_bytes_in("0", 1024, 1 << 30)
            .unwrap_err()
            .contains("outside"));
        assert_eq!(parse_bytes_in("4KiB", 1024, 1 << 30), Ok(4096));
        assert_eq!(parse_ring_buffers("256"), Ok(256));
        assert!(parse_ring_buffers("100")
            .unwrap_err()
            .contains("power of two"));
        assert!(parse_ring_buffers("0").is_err());
        assert_eq!(parse_listen("localhost:7000").map(|a| a.port()), Ok(7000));
        assert!(parse_listen("notanaddress").is_err());
    }

    #[test]
    fn resp_flags_and_default_port() {
        assert_eq!(default_port("resp"), 6379);
        assert_eq!(default_port("echo"), 7000);
        let cli = Cli::try_parse_from([
            "ringport",
            "serve",
            "--service",
            "resp",
            "--maxmemory",
            "1MiB",
            "--maxmemory-policy",
            "allkeys-lru",
            "--snapshot",
            "dump.rps",
        ])
        .unwrap();
        let Commands::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert!(a.listen.is_none());
        assert_eq!(a.resp.maxmemory, 1 << 20);
        assert_eq!(a.resp.maxmemory_policy, EvictionPolicy::AllKeysLru);
        assert_eq!(a.resp.proto_max_bulk_len, 512 << 20);
        let bad = Cli::try_parse_from(["ringport", "serve", "--maxmemory-policy", "lfu"]);
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown policy 'lfu'"));
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
