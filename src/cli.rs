//! Command line: `ringport serve`, `ringport bench`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::load::BenchArgs;
use crate::units;
use clap::{Parser, Subcommand};
use ringport::service::resp::{EvictionPolicy, Resp};
use ringport::service::{Echo, Http};
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
    /// Serve a protocol until SIGINT, SIGTERM or SIGHUP (SIGUSR1 reopens the access log).
    #[command(
        after_help = "Examples:\n  ringport serve\n  ringport serve --service http --root ./public --access-log -\n  ringport serve --listen 127.0.0.1:0 --workers 2\n  RINGPORT_BACKEND=poll ringport serve --io-threads 2\n  ringport serve --max-connections 1000 --idle-timeout 30s --output-limit 1MiB"
    )]
    Serve(Box<ServeArgs>),
    /// Load an echo server and report throughput and latency.
    Bench(BenchArgs),
}

/// Most connections `--max-connections` takes: ten million, well beyond the descriptors
/// one process can have on a default Linux (`fs.nr_open` is 1048576).
const MAX_CONNECTIONS: u64 = 10_000_000;
/// Longest idle and send timeout: a week.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest non-zero timeout: timeouts are checked every 10 ms at best.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest shutdown grace period.
const MAX_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (IP:PORT or HOST:PORT); port 0 picks a free port (the banner
    /// says which). Default: 127.0.0.1:7000 for echo, 127.0.0.1:8080 for http,
    /// 127.0.0.1:6379 for resp.
    #[arg(long, value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// The protocol to serve.
    #[arg(long, default_value = "echo", value_parser = ["echo", "http", "resp"])]
    service: String,
    /// I/O driver: auto (io_uring where allowed, else poll), uring, or poll. Without this
    /// option, the environment variable RINGPORT_BACKEND decides, else auto.
    #[arg(long, value_name = "auto|uring|poll")]
    backend: Option<Backend>,
    /// I/O threads, each with its own listener and ring or poller (1 to 255). Default: the
    /// number of cores this process may run on.
    #[arg(long, value_name = "N", allow_hyphen_values = true,
          value_parser = |s: &str| units::count_in(s, 1, 255).map(|n| n as u16))]
    io_threads: Option<u16>,
    /// Worker threads running the service (0 to 1024); 0 runs it inline on the I/O threads
    /// (cheapest for light services such as echo). Give workers to services that do real
    /// work per request, so a slow request does not hold up the I/O thread.
    #[arg(long, default_value = "0", value_name = "N", allow_hyphen_values = true,
          value_parser = |s: &str| units::count_in(s, 0, 1024).map(|n| n as u16))]
    workers: u16,
    /// Connections open at once, across all I/O threads (1 to 10000000); more are accepted
    /// and closed at once. On Unix the soft limit of open files (ulimit -n) is raised at
    /// start to fit them, up to the hard limit; a warning says when that is short.
    #[arg(long, default_value = "100000", value_name = "N", allow_hyphen_values = true,
          value_parser = |s: &str| units::count_in(s, 1, MAX_CONNECTIONS))]
    max_connections: u64,
    /// Close a connection that sends nothing for this long (e.g. 30s, 500ms, 2m; a bare
    /// number is seconds; 0: never; at most 168h).
    #[arg(long, default_value = "0", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_TIMEOUT, MAX_TIMEOUT, true))]
    idle_timeout: Duration,
    /// Close a connection whose queued output made no progress for this long: a peer that
    /// stopped reading (0: never; at most 168h).
    #[arg(long, default_value = "60s", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_TIMEOUT, MAX_TIMEOUT, true))]
    send_timeout: Duration,
    /// Queued output per connection above which reading from it pauses (e.g. 1MiB; 1 KiB
    /// to 1 GiB).
    #[arg(long, default_value = "1MiB", value_name = "BYTES", allow_hyphen_values = true,
          value_parser = |s: &str| units::size_in(s, 1 << 10, 1 << 30).map(|n| n as usize))]
    output_limit: usize,
    /// How long shutdown waits for owed output before closing anyway (0 to 1h).
    #[arg(long, default_value = "5s", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_TIMEOUT, MAX_GRACE, true))]
    shutdown_grace: Duration,
    /// After the server closes a connection, how long it still reads (and drops) input
    /// waiting for the peer's EOF before closing anyway, so that late input does not reset
    /// the connection before the peer read the output (0 to 1h; 0: close at once).
    #[arg(long, default_value = "2s", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_TIMEOUT, MAX_GRACE, true))]
    linger: Duration,
    /// io_uring: provided receive buffers per I/O thread (a power of two, 1 to 32768).
    #[arg(long, default_value = "256", value_name = "N", allow_hyphen_values = true,
          value_parser = parse_ring_buffers)]
    ring_buffers: u16,
    /// io_uring: size of each provided receive buffer (e.g. 16KiB; 64 B to 1 MiB).
    #[arg(long, default_value = "16KiB", value_name = "BYTES", allow_hyphen_values = true,
          value_parser = |s: &str| units::size_in(s, 64, 1 << 20).map(|n| n as usize))]
    buffer_size: usize,
    /// io_uring: how long a busy I/O thread (over 60% on the CPU) may wait for a fuller
    /// batch of completions (fewer wake-ups per request; Linux 6.12+). 0: never; a
    /// request after an idle spell is never held back.
    #[arg(long, default_value = "30us", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, Duration::ZERO, Duration::from_millis(10), true))]
    batch_wait: Duration,
    #[command(flatten)]
    ops: OpsArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    resp: RespArgs,
}

/// Options for running in production: metrics, logs, sharing the port, PROXY protocol.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Operations")]
struct OpsArgs {
    /// Serve Prometheus metrics on ADDR (IP:PORT; its own listener, never the service's
    /// port), at /metrics.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    metrics: Option<SocketAddr>,
    /// Which log lines to write: error, warn, info, debug, trace or off, or directives
    /// such as warn,ringport=debug. Default: RUST_LOG when set, else info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<crate::log::LogFilter>,
    /// Share the address with other processes started with --reuse-port (SO_REUSEPORT):
    /// the kernel spreads new connections over all of them. For zero-downtime restarts:
    /// start the new instance, then stop the old one. Without it, an address another
    /// process listens on is refused ("address in use").
    #[arg(long)]
    reuse_port: bool,
    /// Expect a PROXY protocol header (v1, v2 or any) before each connection's first
    /// byte: the client address it carries is the one the service and its logs see. A
    /// connection without a valid header in time is closed.
    #[arg(long, value_name = "v1|v2|any")]
    proxy_protocol: Option<ringport::proxy::Version>,
    /// Accept PROXY headers only from these sources (comma-separated addresses or CIDR
    /// networks, e.g. 10.0.0.0/8,::1); connections from elsewhere are closed. Default: any.
    #[arg(
        long,
        value_name = "CIDR,...",
        value_delimiter = ',',
        requires = "proxy_protocol"
    )]
    proxy_protocol_from: Vec<ringport::proxy::Cidr>,
    /// How long a PROXY protocol header may take to arrive (0: no limit).
    #[arg(long, default_value = "3s", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_TIMEOUT, MAX_TIMEOUT, true))]
    proxy_protocol_timeout: Duration,
}

/// The cores this process may run on (its CPU affinity and quota), 1 to 255.
fn default_io_threads() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 255) as u16)
}

/// Options of `--service http`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "HTTP service (--service http)")]
struct HttpArgs {
    /// Serve the files under DIR. Without it, `/` answers a built-in page and `/plaintext`
    /// answers `Hello, World!`.
    #[arg(long, value_name = "DIR")]
    root: Option<std::path::PathBuf>,
    /// List a directory that has no index.html (default: 404).
    #[arg(long)]
    autoindex: bool,
    /// Write one line per request (combined log format) to FILE, or to standard output
    /// with `-`. Default: off.
    #[arg(long, value_name = "FILE|-")]
    access_log: Option<std::path::PathBuf>,
    /// Close a connection whose request head takes longer than this to arrive (slow
    /// clients); also bounds the wait between pieces of a request body (0: never).
    #[arg(long, default_value = "10s", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_TIMEOUT, MAX_TIMEOUT, true))]
    header_timeout: Duration,
    /// Close a keep-alive connection idle between requests for this long (0: never).
    #[arg(long, default_value = "75s", value_name = "DURATION", allow_hyphen_values = true,
          value_parser = |s: &str| units::duration_in(s, MIN_TIMEOUT, MAX_TIMEOUT, true))]
    keepalive_timeout: Duration,
    /// Largest request head (request line and header fields): a longer request line is
    /// answered 414, a longer head 431.
    #[arg(long, default_value = "8KiB", value_name = "BYTES", allow_hyphen_values = true,
          value_parser = |s: &str| units::size_in(s, 64, 1 << 20).map(|n| n as usize))]
    max_header_size: usize,
    /// Largest request body (read and discarded); a longer one is answered 413.
    #[arg(long, default_value = "1MiB", value_name = "BYTES", allow_hyphen_values = true,
          value_parser = |s: &str| units::size_in(s, 0, 1 << 40).map(|n| n as usize))]
    max_body_size: usize,
}

/// Options of `--service resp`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Redis-protocol store (--service resp)")]
struct RespArgs {
    /// Memory limit for keys and values (e.g. 100MiB; 0: none). Over it, writes evict keys
    /// or are refused, as --maxmemory-policy says.
    #[arg(long, default_value = "0", value_name = "BYTES",
          value_parser = |s: &str| units::size_in(s, 0, u64::MAX))]
    maxmemory: u64,
    /// What writes over --maxmemory do: noeviction (refused with -OOM), allkeys-lru,
    /// volatile-lru, allkeys-random.
    #[arg(long, default_value = "noeviction", value_name = "POLICY")]
    maxmemory_policy: EvictionPolicy,
    /// Longest single argument a request may carry; longer is a protocol error.
    #[arg(long, default_value = "512MiB", value_name = "BYTES",
          value_parser = |s: &str| units::size_in(s, 1, 1 << 32).map(|n| n as usize))]
    proto_max_bulk_len: usize,
    /// Snapshot file: loaded at start if it exists (a corrupt one is refused), written by
    /// SAVE, BGSAVE and on shutdown.
    #[arg(long, value_name = "FILE")]
    snapshot: Option<std::path::PathBuf>,
}

/// The address a service listens on when `--listen` is not given.
fn default_listen(service: &str) -> SocketAddr {
    let port = match service {
        "http" => 8080,
        "resp" => 6379,
        _ => 7000,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
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

/// A power of two from 1 to 32768.
fn parse_ring_buffers(s: &str) -> Result<u16, String> {
    let n = units::count_in(s, 1, 32768)?;
    if !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two from 1 to 32768"));
    }
    Ok(n as u16)
}

/// The backend: `--backend`, else `RINGPORT_BACKEND` when set, else auto. An unusable
/// value of the variable is named as such.
fn resolve_backend(
    flag: Option<Backend>,
    env: Option<std::ffi::OsString>,
) -> Result<Backend, String> {
    if let Some(b) = flag {
        return Ok(b);
    }
    let Some(value) = env else {
        return Ok(Backend::Auto);
    };
    let value = value.to_string_lossy();
    if value.trim().is_empty() {
        return Err(
            "RINGPORT_BACKEND is set but empty: set it to auto, uring or poll, or unset it"
                .to_string(),
        );
    }
    value
        .parse()
        .map_err(|e| format!("RINGPORT_BACKEND='{value}': {e}"))
}

pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Commands::Serve(args) => {
            if let Some(serve) = matches.subcommand_matches("serve") {
                misplaced_options(&args.service, serve);
            }
            serve(*args)
        }
        Commands::Bench(args) => crate::load::main(&args),
    }
}

/// Refuse (as a usage error) an option given on the command line for a service other than
/// the one it belongs to, which would otherwise be ignored without a word.
fn misplaced_options(service: &str, matches: &clap::ArgMatches) {
    use clap::{Args, CommandFactory};
    let groups = [
        ("http", HttpArgs::augment_args(clap::Command::new("http"))),
        ("resp", RespArgs::augment_args(clap::Command::new("resp"))),
    ];
    for (owner, group) in groups {
        if owner == service {
            continue;
        }
        for arg in group.get_arguments() {
            let given = matches.value_source(arg.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine);
            if given {
                let long = arg.get_long().unwrap_or_else(|| arg.get_id().as_str());
                let mut cli = Cli::command().bin_name("ringport");
                cli.build();
                let serve = cli
                    .find_subcommand_mut("serve")
                    .expect("the serve subcommand");
                serve
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--{long} applies to --service {owner} only (this is --service {service})"),
                    )
                    .exit();
            }
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let filter = crate::log::resolve(args.ops.log_level.clone(), std::env::var_os("RUST_LOG"));
    let backend = resolve_backend(args.backend, std::env::var_os("RINGPORT_BACKEND"));
    let (filter, backend) = match (filter, backend) {
        (Ok(f), Ok(b)) => (f, b),
        (Err(e), _) | (_, Err(e)) => {
            use clap::CommandFactory;
            Cli::command()
                .error(clap::error::ErrorKind::InvalidValue, e)
                .exit();
        }
    };
    crate::log::init(filter);
    // Before anything slow (a snapshot to load): log rotation may signal at any time.
    #[cfg(unix)]
    if let Err(e) = reopen_logs_on_sigusr1() {
        tracing::error!("cannot install the SIGUSR1 handler: {e}");
        return ExitCode::FAILURE;
    }
    let listen = args.listen.unwrap_or_else(|| default_listen(&args.service));
    let io_threads = args.io_threads.unwrap_or_else(default_io_threads);
    let mut builder = Server::builder();
    builder
        .listen(listen)
        .backend(backend)
        .io_threads(usize::from(io_threads))
        .max_connections(usize::try_from(args.max_connections).unwrap_or(usize::MAX))
        .idle_timeout(Some(args.idle_timeout))
        .send_timeout(Some(args.send_timeout))
        .output_limit(args.output_limit)
        .shutdown_grace(args.shutdown_grace)
        .linger(args.linger)
        .ring_buffers(args.ring_buffers)
        .buffer_size(u32::try_from(args.buffer_size).unwrap_or(u32::MAX))
        .batch_wait(args.batch_wait)
        .reuse_port(args.ops.reuse_port);
    builder.workers(usize::from(args.workers));
    let mut serves_metrics = false;
    if let Some(addr) = args.ops.metrics {
        builder.metrics(addr);
        serves_metrics = true;
    }
    match ringport::activation::take() {
        Ok(None) => {}
        Ok(Some(passed)) => {
            if let Some(l) = passed.service {
                let at = l
                    .local_addr()
                    .map_or_else(|e| e.to_string(), |a| a.to_string());
                tracing::info!("socket activation: serving on the passed listener {at}");
                if let Some(flag) = args.listen {
                    tracing::warn!("socket activation: --listen {flag} is not used");
                }
                builder.listener(l);
            }
            if let Some(l) = passed.metrics {
                serves_metrics = true;
                if let Some(flag) = args.ops.metrics {
                    tracing::warn!("socket activation: --metrics {flag} is not used");
                }
                builder.metrics_listener(l);
            }
        }
        Err(e) => {
            tracing::error!("socket activation: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Descriptors to make room for before the server opens its listeners and rings (see
    // `build`): one per connection, two for HTTP with files to send (the socket and a file).
    let open_files = crate::nofile::Need {
        connections: args.max_connections,
        per_connection: if args.service == "http" && args.http.root.is_some() {
            2
        } else {
            1
        },
        io_threads,
        metrics: serves_metrics,
    };
    let proxy = args.ops.proxy_protocol.map(|v| {
        let mut cfg = ringport::proxy::ProxyConfig::new(v);
        cfg.timeout = args.ops.proxy_protocol_timeout;
        cfg.trusted = args.ops.proxy_protocol_from.clone();
        cfg
    });
    let mut store = None;
    let server = match args.service.as_str() {
        "echo" => build(&builder, Echo, proxy, &open_files),
        "resp" => {
            let a = &args.resp;
            let mut resp = Resp::builder();
            resp.maxmemory(a.maxmemory)
                .maxmemory_policy(a.maxmemory_policy)
                .proto_max_bulk_len(a.proto_max_bulk_len);
            if let Some(path) = &a.snapshot {
                resp.snapshot(path);
            }
            match resp.build() {
                Ok(service) => {
                    store = Some(service.store());
                    build(&builder, service, proxy, &open_files)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        "http" => {
            let a = &args.http;
            let mut http = Http::builder();
            http.autoindex(a.autoindex)
                .header_timeout(a.header_timeout)
                .keepalive_timeout(a.keepalive_timeout)
                .max_header_size(a.max_header_size)
                .max_body_size(a.max_body_size as u64);
            if let Some(root) = &a.root {
                http.root(root);
            }
            if let Some(log) = &a.access_log {
                http.access_log(log);
            }
            match http.build() {
                Ok(service) => build(&builder, service, proxy, &open_files),
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            }
        }
        other => {
            tracing::error!("unknown service '{other}'");
            return ExitCode::from(2);
        }
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot serve on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(reason) = server.fallback_reason() {
        tracing::warn!("{reason}; using the poll backend");
    }
    let handle = server.shutdown_handle();
    let mut presses = Presses::default();
    let installed = ctrlc::set_handler(move || match presses.press() {
        Press::First => {
            tracing::info!("shutting down (a signal again to exit at once)");
            handle.shutdown();
        }
        Press::Same => {}
        Press::Again => {
            tracing::warn!("a second signal: exiting at once, dropping what was still to send");
            std::process::exit(130);
        }
    });
    if let Err(e) = installed {
        tracing::error!("cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    // After the handler is in place: whoever reads the banner may signal at once. Whoever
    // starts the server learns its address from the banner: when it cannot be written
    // (stdout full or closed), the server stops with one line saying so.
    let mut banner = format!("{}, service {}", server.banner(), args.service);
    if let Some(m) = server.metrics_addr() {
        banner.push_str(&format!(", metrics http://{m}/metrics"));
    }
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{banner}").and_then(|()| out.flush()) {
        drop(out);
        tracing::error!("cannot write the banner to stdout ({e}); stopping");
        server.shutdown();
        let _ = server.wait();
        return ExitCode::FAILURE;
    }
    drop(out);
    let code = match server.wait() {
        Ok(stats) => {
            // One log line per counter, values in one column.
            tracing::info!("stopped; counters:");
            for line in stats.to_string().lines() {
                tracing::info!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("stopped with an error: {e}");
            ExitCode::FAILURE
        }
    };
    // Every connection is closed now: every acknowledged write is in the store.
    match store.map(|s| s.save()) {
        Some(Ok(Some(keys))) => tracing::info!("snapshot written ({keys} keys)"),
        Some(Err(e)) => {
            tracing::error!("cannot write the snapshot: {e}");
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    code
}

/// SIGUSR1 makes the HTTP access log open its file again (after log rotation renamed it)
/// instead of ending the process, as the signal's default would.
#[cfg(unix)]
fn reopen_logs_on_sigusr1() -> io::Result<()> {
    extern "C" fn on_usr1(_: libc::c_int) {
        ringport::service::http::reopen_access_logs();
    }
    // SAFETY: `sa` is fully initialised before use (zeroed, then the handler, flags and an
    // empty mask); the handler only adds to an atomic counter, which is async-signal-safe.
    let rc = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Build the server for `service`, behind the PROXY protocol when `proxy` says so, once the
/// limit of open files makes room for `open_files`. The limit is raised here, after the
/// service has opened its own files and refused what it cannot use (a root, a snapshot),
/// and before the listeners, rings and pollers are opened.
fn build<S: ringport::Service>(
    builder: &ringport::ServerBuilder,
    service: S,
    proxy: Option<ringport::proxy::ProxyConfig>,
    open_files: &crate::nofile::Need,
) -> io::Result<Server> {
    crate::nofile::raise(open_files);
    match proxy {
        Some(cfg) => builder.build(ringport::proxy::ProxyProtocol::new(service, cfg)),
        None => builder.build(service),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_and_ring_buffers_parse() {
        assert_eq!(parse_ring_buffers("256"), Ok(256));
        assert!(parse_ring_buffers("100")
            .unwrap_err()
            .contains("power of two"));
        assert!(parse_ring_buffers("0")
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_ring_buffers("-1")
            .unwrap_err()
            .contains("out of range"));
        assert_eq!(parse_listen("localhost:7000").map(|a| a.port()), Ok(7000));
        assert!(parse_listen("notanaddress").is_err());
    }

    #[test]
    fn backend_comes_from_the_option_then_the_environment() {
        let env = |v: &str| Some(std::ffi::OsString::from(v));
        assert_eq!(resolve_backend(None, None), Ok(Backend::Auto));
        assert_eq!(resolve_backend(None, env("poll")), Ok(Backend::Poll));
        assert_eq!(
            resolve_backend(Some(Backend::Uring), env("poll")),
            Ok(Backend::Uring)
        );
        assert_eq!(
            resolve_backend(None, env("")).unwrap_err(),
            "RINGPORT_BACKEND is set but empty: set it to auto, uring or poll, or unset it"
        );
        assert_eq!(
            resolve_backend(None, env("pigeon")).unwrap_err(),
            "RINGPORT_BACKEND='pigeon': unknown backend 'pigeon' (expected auto, uring or poll)"
        );
    }

    #[test]
    fn resp_flags_and_default_address() {
        assert_eq!(default_listen("resp").port(), 6379);
        assert_eq!(default_listen("echo").port(), 7000);
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

/// What a stop signal (SIGINT, SIGTERM, SIGHUP; Ctrl+C) means, by when it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Press {
    /// The first: stop gracefully.
    First,
    /// Within half a second of the first: the same request delivered twice (`timeout`
    /// signals the process and its group; so does a terminal's Ctrl+C), not a second one.
    Same,
    /// Later: stop at once.
    Again,
}

/// The stop signals seen so far.
#[derive(Debug, Default)]
pub(crate) struct Presses {
    first: Option<Instant>,
}

impl Presses {
    /// How long after the first a signal is still the same request.
    const REPEAT: Duration = Duration::from_millis(500);

    /// A stop signal came: what it means.
    pub(crate) fn press(&mut self) -> Press {
        match self.first {
            None => {
                self.first = Some(Instant::now());
                Press::First
            }
            Some(t) if t.elapsed() < Self::REPEAT => Press::Same,
            Some(_) => Press::Again,
        }
    }
}
