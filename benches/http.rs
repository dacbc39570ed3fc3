//! `cargo bench --bench http`: ringport's HTTP service against nginx, measured side by side
//! by wrk in one run.
//!
//! For each scenario every contender is started once, each as its own process pinned to
//! core 0 (when the machine has 2+ cores and `taskset` exists), side by side on their own
//! ports, and warmed up with wrk; then wrk, pinned to core 1 (`-t1 -c100`), loads one at a
//! time for the measured window while the others sit idle. For a multi-core run, the
//! servers get the first N cores (nginx N workers, ringport N I/O threads) and wrk M
//! threads on the M cores after them. Contenders take turns every round, in an order
//! rotated each round, so a contender's window and nginx's in the same round lie seconds
//! apart and a drift of the machine (a busy neighbour on a shared host) touches both; each
//! figure is the median over the rounds, and each ratio to nginx the median of the rounds'
//! ratios (each round's figure over nginx's in that round).
//! Server CPU is the scheduler's run time of the server's threads (nginx: master and
//! worker) over the window (`/proc/PID/task/*/schedstat`: exact, where the tick-sampled
//! times of `/proc/PID/stat` count a whole tick to whoever runs when it fires); wrk's own
//! CPU, from `/proc/PID/stat`, only says whether wrk was the limit.
//!
//! Contenders: nginx from the distribution (one worker, `access_log off`, `sendfile on`,
//! the same root, `/plaintext` as a fixed-body `return 200`), and ringport
//! (`--service http --io-threads 1`, inline) on io_uring and on poll.
//!
//! Scenarios: `/plaintext` (13 B), a 612 B file, a 1 MiB file. Afterwards, the resident
//! memory of each server holding 10,000 idle keep-alive connections.
//!
//! Knobs (environment): `RINGPORT_BENCH_SECS` (measured seconds per run, default 3),
//! `RINGPORT_BENCH_ROUNDS` (default 5), `RINGPORT_BENCH_IDLE` (idle connections, default
//! 10000; 0 skips that part), `RINGPORT_BENCH_THREADS` (N, the server's cores, default 1),
//! `RINGPORT_BENCH_WRK_THREADS` (M, default N), `RINGPORT_BENCH_CONNECTIONS` (default 100 ×
//! N), `RINGPORT_BENCH_ONLY` (a comma-separated list of `plaintext`, `small`, `big`: those
//! scenarios alone; default all).

mod support;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{family, family_cpu_seconds, median, pinned, rss_bytes, ticks_per_second, Proc};

const START_DEADLINE: Duration = Duration::from_secs(30);

fn main() {
    if let Err(e) = run() {
        eprintln!("http bench: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Nginx,
    Ringport(&'static str),
}

impl Contender {
    fn name(self) -> String {
        match self {
            Contender::Nginx => "nginx".to_string(),
            Contender::Ringport(b) => format!("ringport {b}"),
        }
    }
}

struct Scenario {
    /// Its name in `RINGPORT_BENCH_ONLY`.
    key: &'static str,
    name: &'static str,
    path: &'static str,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        key: "plaintext",
        name: "/plaintext (13 B, fixed body)",
        path: "/plaintext",
    },
    Scenario {
        key: "small",
        name: "612 B file",
        path: "/small.html",
    },
    Scenario {
        key: "big",
        name: "1 MiB file",
        path: "/big.bin",
    },
];

struct Bench {
    ringport: PathBuf,
    work: PathBuf,
    root: PathBuf,
    pin: bool,
    /// The server's cores (from core 0), nginx workers and ringport I/O threads.
    threads: usize,
    /// wrk's threads and cores (after the server's).
    load_threads: usize,
    connections: usize,
    secs: u32,
    rounds: usize,
    tck: f64,
}

/// A running server (killed when dropped): its processes and address.
struct Running {
    _proc: Proc,
    addr: SocketAddr,
    pids: Vec<u32>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rps: f64,
    bytes_per_sec: f64,
    p99_ms: f64,
    server_cpu: f64,
    load_cpu: f64,
    errors: u64,
}

impl Sample {
    /// Requests per server CPU-second.
    fn per_cpu(&self) -> f64 {
        self.rps / self.server_cpu
    }
}

fn run() -> Result<(), String> {
    if !support::have("wrk") {
        return Err("wrk is not installed (apt-get install wrk)".into());
    }
    let nginx = support::have("nginx");
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ringport-bench/http");
    let root = work.join("root");
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut small = b"<!DOCTYPE html>\n<title>612 bytes</title>\n".to_vec();
    small.resize(611, b'.');
    small.push(b'\n');
    let big: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("small.html"), &small).map_err(|e| e.to_string())?;
    std::fs::write(root.join("big.bin"), &big).map_err(|e| e.to_string())?;
    let threads = support::env_f64("RINGPORT_BENCH_THREADS").map_or(1, |n| n.max(1.0) as usize);
    let load_threads =
        support::env_f64("RINGPORT_BENCH_WRK_THREADS").map_or(threads, |n| n.max(1.0) as usize);
    let connections = support::env_f64("RINGPORT_BENCH_CONNECTIONS")
        .map_or(100 * threads, |n| n as usize)
        .max(load_threads);
    let pin = support::can_pin();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if pin && threads + load_threads > cores {
        return Err(format!(
            "{threads} server and {load_threads} wrk threads need {} cores; this machine has {cores}",
            threads + load_threads
        ));
    }
    let bench = Bench {
        ringport: support::ringport_binary()?,
        root,
        work,
        pin,
        threads,
        load_threads,
        connections,
        secs: support::env_f64("RINGPORT_BENCH_SECS").map_or(3, |s| s.max(1.0) as u32),
        rounds: support::env_f64("RINGPORT_BENCH_ROUNDS").map_or(5, |r| r.max(1.0) as usize),
        tck: ticks_per_second(),
    };
    let mut contenders = Vec::new();
    if nginx {
        contenders.push(Contender::Nginx);
    } else {
        eprintln!("note: nginx is not installed (apt-get install nginx); ringport alone");
    }
    contenders.push(Contender::Ringport("uring"));
    contenders.push(Contender::Ringport("poll"));
    // Drop a backend this machine cannot run.
    contenders.retain(|&c| match start(&bench, c, "/") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("note: {} skipped: {e}", c.name());
            false
        }
    });

    let only = std::env::var("RINGPORT_BENCH_ONLY").unwrap_or_default();
    let wanted = |s: &Scenario| only.is_empty() || only.split(',').any(|k| k.trim() == s.key);
    let unknown = only
        .split(',')
        .map(str::trim)
        .find(|k| !k.is_empty() && !SCENARIOS.iter().any(|s| s.key == *k));
    if let Some(k) = unknown {
        return Err(format!(
            "RINGPORT_BENCH_ONLY: no scenario {k:?} (plaintext, small, big)"
        ));
    }
    if !SCENARIOS.iter().any(wanted) {
        return Err(format!(
            "RINGPORT_BENCH_ONLY={only:?} names no scenario (plaintext, small, big)"
        ));
    }
    let mut samples: Vec<Vec<Vec<Sample>>> =
        vec![vec![Vec::new(); contenders.len()]; SCENARIOS.len()];
    for (si, s) in SCENARIOS.iter().enumerate().filter(|(_, s)| wanted(s)) {
        // Every contender up at once, each warmed up; they take turns at the load.
        let servers = contenders
            .iter()
            .map(|&c| start(&bench, c, s.path))
            .collect::<Result<Vec<_>, _>>()?;
        for server in &servers {
            wrk(&bench, &server.url(s.path), 1)?;
        }
        for round in 0..bench.rounds {
            for ci in support::turn_order(round, contenders.len()) {
                let c = contenders[ci];
                let sample = measure(&bench, &servers[ci], s.path)?;
                eprintln!(
                    "round {} {:<28} {:<16} {:>9.0} req/s  server {:>3.0}%  wrk {:>3.0}%  p99 {:.2} ms",
                    round + 1,
                    s.name,
                    c.name(),
                    sample.rps,
                    sample.server_cpu * 100.0,
                    sample.load_cpu * 100.0,
                    sample.p99_ms
                );
                samples[si][ci].push(sample);
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(out, "{}\n", support::machine());
    let cores = |first: usize, n: usize| match n {
        1 => format!("core {first}"),
        _ => format!("cores {first}–{}", first + n - 1),
    };
    let _ = writeln!(
        out,
        "{} connections, wrk -t{} for {} s per run (each server warmed up once per scenario, 1 s); server ({}) pinned to {}{}, wrk to {}; median of {} rounds, the servers side by side, taking turns at the load (the order rotated each round). ×nginx: the median over the rounds of the ratio to nginx in the same round (higher is better for every column but p99).\n",
        bench.connections,
        bench.load_threads,
        bench.secs,
        match bench.threads {
            1 => "nginx 1 worker, ringport 1 I/O thread".to_string(),
            n => format!("nginx {n} workers, ringport {n} I/O threads"),
        },
        cores(0, bench.threads),
        if bench.pin { "" } else { " (not pinned: needs 2+ cores and taskset)" },
        cores(bench.threads, bench.load_threads),
        bench.rounds
    );
    for (si, s) in SCENARIOS.iter().enumerate().filter(|(_, s)| wanted(s)) {
        let _ = writeln!(out, "#### {}\n", s.name);
        let _ = writeln!(
            out,
            "| server | req/s | ×nginx | MB/s | server CPU % | req per server CPU-s | ×nginx | µs CPU/req | wrk CPU % | p99 ms | errors |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let med = |ci: usize, f: fn(&Sample) -> f64| -> f64 {
            median(samples[si][ci].iter().map(f).collect()).unwrap_or(f64::NAN)
        };
        let reference = contenders.iter().position(|&c| c == Contender::Nginx);
        for (ci, c) in contenders.iter().enumerate() {
            let rps = med(ci, |x| x.rps);
            let per_cpu = med(ci, Sample::per_cpu);
            // Paired by round: each round's figure over nginx's in the same round, then the
            // median, so that drift of the machine between rounds cancels out.
            let ratio = |f: fn(&Sample) -> f64| match reference {
                Some(r) => {
                    let of = |k: usize| -> Vec<Option<f64>> {
                        samples[si][k].iter().map(|x| Some(f(x))).collect()
                    };
                    let paired = support::paired_ratio(&of(ci), &of(r));
                    format!("{:.2}", paired.unwrap_or(f64::NAN))
                }
                None => "–".into(),
            };
            let errors: u64 = samples[si][ci].iter().map(|x| x.errors).sum();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.0} | {:.2} | {} |",
                c.name(),
                rps,
                ratio(|x| x.rps),
                med(ci, |x| x.bytes_per_sec) / 1e6,
                med(ci, |x| x.server_cpu) * 100.0,
                per_cpu,
                ratio(Sample::per_cpu),
                1e6 / per_cpu,
                med(ci, |x| x.load_cpu) * 100.0,
                med(ci, |x| x.p99_ms),
                errors
            );
        }
        let _ = writeln!(out);
    }

    let idle = support::env_f64("RINGPORT_BENCH_IDLE").map_or(10_000, |n| n as usize);
    if idle > 0 {
        let _ = writeln!(out, "#### {idle} idle keep-alive connections\n");
        let _ = writeln!(
            out,
            "| server | RSS before | RSS with connections | per connection |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for &c in &contenders {
            match idle_rss(&bench, c, idle) {
                Ok((before, after)) => {
                    let _ = writeln!(
                        out,
                        "| {} | {:.1} MiB | {:.1} MiB | {:.0} B |",
                        c.name(),
                        before as f64 / 1048576.0,
                        after as f64 / 1048576.0,
                        after.saturating_sub(before) as f64 / idle as f64
                    );
                }
                Err(e) => eprintln!("note: idle connections on {}: {e}", c.name()),
            }
        }
    }
    println!("{out}");
    let _ = std::fs::write(bench.work.join("http.md"), &out);
    Ok(())
}

/// A free loopback port (for nginx, which cannot report a port it picked).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn nginx_conf(bench: &Bench, port: u16) -> String {
    let dir = bench.work.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
user root;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 19000; }}
http {{
    types {{ text/html html; application/octet-stream bin; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /plaintext {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
"#,
        root = bench.root.display(),
        workers = bench.threads
    )
}

/// Start a server pinned to its cores and wait until it accepts. ringport serves `path`
/// from the root, except `/plaintext`, which it answers itself when it has no root.
fn start(bench: &Bench, c: Contender, path: &str) -> Result<Running, String> {
    match c {
        Contender::Nginx => {
            let port = free_port()?;
            let conf = bench.work.join("nginx.conf");
            std::fs::write(&conf, nginx_conf(bench, port)).map_err(|e| e.to_string())?;
            let child = pinned(bench.pin, 0, bench.threads, Path::new("nginx"))
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(bench.work.join("nginx-error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start nginx: {e}"))?;
            let mut proc = Proc { child };
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let began = Instant::now();
            while TcpStream::connect(addr).is_err() {
                if began.elapsed() > START_DEADLINE
                    || proc.child.try_wait().ok().flatten().is_some()
                {
                    return Err(
                        "nginx did not start (see target/ringport-bench/http/nginx-error.log)"
                            .into(),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // The workers are forked by the master: wait for them to show up.
            let master = proc.child.id();
            let mut pids = family(master);
            while pids.len() <= bench.threads && began.elapsed() < START_DEADLINE {
                std::thread::sleep(Duration::from_millis(20));
                pids = family(master);
            }
            Ok(Running {
                _proc: proc,
                addr,
                pids,
            })
        }
        Contender::Ringport(backend) => {
            let mut cmd = pinned(bench.pin, 0, bench.threads, &bench.ringport);
            cmd.args(["serve", "--service", "http", "--listen", "127.0.0.1:0"])
                .arg("--io-threads")
                .arg(bench.threads.to_string())
                .args(["--backend", backend]);
            if path != "/plaintext" {
                cmd.arg("--root").arg(&bench.root);
            }
            let mut child = cmd
                .env_remove("RINGPORT_BACKEND")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start ringport: {e}"))?;
            let stdout = child.stdout.take().expect("piped stdout");
            let proc = Proc { child };
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            let line = rx
                .recv_timeout(START_DEADLINE)
                .map_err(|_| "no banner".to_string())?;
            if !line.contains(&format!("backend {backend},")) {
                return Err(format!("backend {backend} did not start: {}", line.trim()));
            }
            let addr = line
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|a| a.trim().parse().ok())
                .ok_or_else(|| format!("no address in {line:?}"))?;
            let pids = vec![proc.child.id()];
            Ok(Running {
                _proc: proc,
                addr,
                pids,
            })
        }
    }
}

/// Run wrk for `secs` against `url`; its report and its CPU ticks.
fn wrk(bench: &Bench, url: &str, secs: u32) -> Result<(String, u64), String> {
    let child = pinned(
        bench.pin,
        bench.threads,
        bench.load_threads,
        Path::new("wrk"),
    )
    .arg(format!("-t{}", bench.load_threads))
    .arg(format!("-c{}", bench.connections))
    .arg(format!("-d{secs}s"))
    .args(["--timeout", "10s", "--latency", url])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .map_err(|e| format!("cannot run wrk: {e}"))?;
    let mut proc = Proc { child };
    let mut report = String::new();
    proc.child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut report)
        .map_err(|e| e.to_string())?;
    // Once stdout closed wrk is exiting; its CPU stays readable until it is reaped. With
    // taskset in front, wrk is the same process (taskset execs it).
    let mut ticks = support::cpu_ticks(proc.child.id());
    let status = proc.child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("wrk failed: {status}: {report}"));
    }
    if ticks == 0 {
        ticks = u64::MAX;
    }
    Ok((report, ticks))
}

/// A duration in wrk's units (`812.00us`, `1.23ms`, `2.00s`) in milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// A size in wrk's units (`8.24MB`) in bytes.
fn wrk_bytes(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult = match unit {
        "B" | "" => 1.0,
        "KB" => 1024.0,
        "MB" => 1048576.0,
        "GB" => 1073741824.0,
        _ => return None,
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// One measured window of wrk against a running (and warmed up) server.
fn measure(bench: &Bench, server: &Running, path: &str) -> Result<Sample, String> {
    let url = server.url(path);
    let before = family_cpu_seconds(&server.pids)?;
    let began = Instant::now();
    let (report, load_ticks) = wrk(bench, &url, bench.secs)?;
    let elapsed = began.elapsed().as_secs_f64();
    let server_secs = family_cpu_seconds(&server.pids)? - before;
    let field = |prefix: &str| -> Option<&str> {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's report: {report}"))?;
    let p99 = field("99%").and_then(wrk_ms).unwrap_or(f64::NAN);
    let transfer = field("Transfer/sec:")
        .and_then(wrk_bytes)
        .unwrap_or(f64::NAN);
    let mut errors = 0;
    if let Some(e) = field("Socket errors:") {
        errors += e
            .split(',')
            .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    if let Some(n) = field("Non-2xx or 3xx responses:") {
        errors += n.parse::<u64>().unwrap_or(1);
    }
    Ok(Sample {
        rps,
        bytes_per_sec: transfer,
        p99_ms: p99,
        server_cpu: server_secs / elapsed,
        load_cpu: load_ticks as f64 / bench.tck / elapsed,
        errors,
    })
}

/// Requests on one connection before the idle measurement: more than io_uring's provided
/// receive buffers per I/O thread (256 by default).
const WARM_REQUESTS: usize = 1000;

/// Read one response with a `Content-Length` body (small: it fits `buf`).
fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> Result<(), String> {
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF before the whole response".into());
        }
        have += n;
        let got = &buf[..have];
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no Content-Length")?;
            if have >= end + 4 + len {
                return Ok(());
            }
        }
        if have == buf.len() {
            return Err("response larger than the buffer".into());
        }
    }
}

/// Resident memory of a server before and while it holds `n` idle keep-alive connections
/// (each served one request first).
fn idle_rss(bench: &Bench, c: Contender, n: usize) -> Result<(u64, u64), String> {
    let server = start(bench, c, "/plaintext")?;
    let request = b"GET /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n";
    // Warm the server so that lazily touched fixed state counts in "before", not per
    // connection: io_uring's provided receive buffers (256 of them, taken in turn) become
    // resident as requests land in them.
    let mut warm = TcpStream::connect(server.addr).map_err(|e| e.to_string())?;
    warm.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1024];
    for i in 0..WARM_REQUESTS {
        warm.write_all(request).map_err(|e| e.to_string())?;
        read_response(&mut warm, &mut buf).map_err(|e| format!("warm-up request {i}: {e}"))?;
    }
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes(&server.pids);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(server.addr).map_err(|e| format!("connection {i}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.write_all(request).map_err(|e| e.to_string())?;
        let got = s
            .read(&mut buf)
            .map_err(|e| format!("connection {i}: {e}"))?;
        if got == 0 || !buf.starts_with(b"HTTP/1.1 200") {
            return Err(format!("connection {i}: no 200"));
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_bytes(&server.pids);
    drop(conns);
    drop(server);
    Ok((before, after))
}
