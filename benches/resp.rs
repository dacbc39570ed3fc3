//! `cargo bench --bench resp`: ringport's Redis-protocol store against redis-server, both
//! loaded by redis-benchmark, side by side in one run.
//!
//! Each measurement starts the server as its own process pinned to core 0
//! (`redis-server --save '' --appendonly no`, or `ringport serve --service resp
//! --io-threads 1`), and runs `redis-benchmark -c 50 -P N -t TEST` pinned to core 1. The
//! servers take turns (redis, ringport uring, ringport poll; the order rotated each round)
//! for every test and each figure is the median over the rounds; each ratio to redis the
//! median of the rounds' ratios (each round's figure over redis-server's in that round). Server CPU is the run time the scheduler
//! gave the server's threads over the redis-benchmark run (`/proc/PID/task/*/schedstat`).
//!
//! Knobs (environment):
//! - `RINGPORT_BENCH_ROUNDS`: rounds per test, at least 3 (default 3);
//! - `RINGPORT_BENCH_QUICK=1` or `-- --quick`: a fifth of the requests per run;
//! - `RINGPORT_BENCH_REQUESTS`: requests per run at `-P 16` (default 2,000,000; `-P 1` runs
//!   a tenth of that);
//! - `RINGPORT_BENCH_TESTS=set,incr`, `RINGPORT_BENCH_PIPELINES=16`: only these.
//!
//! Output: a markdown table on stdout, and every sample and median in
//! `target/ringport-bench/resp.json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

mod support;

const CONNECTIONS: &str = "50";
const TESTS: &[&str] = &["set", "get", "incr", "lpush", "hset"];
const PIPELINES: &[u32] = &[1, 16];
const START_DEADLINE: Duration = Duration::from_secs(30);

fn main() {
    if let Err(e) = run() {
        eprintln!("resp bench: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Contender {
    Redis,
    Ringport(&'static str),
}

impl Contender {
    fn name(self) -> String {
        match self {
            Contender::Redis => "redis-server".into(),
            Contender::Ringport(b) => format!("ringport {b}"),
        }
    }
}

struct Setup {
    ringport: PathBuf,
    redis_server: Option<PathBuf>,
    redis_benchmark: PathBuf,
    pin: bool,
    rounds: usize,
    requests: u64,
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn pinned(setup: &Setup, core: u32, program: &Path) -> Command {
    if setup.pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A free loopback port (bound and released: redis-server cannot report the port it got).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn start(setup: &Setup, c: Contender) -> Result<Server, String> {
    let port = free_port()?;
    let mut cmd = match c {
        Contender::Redis => {
            let bin = setup.redis_server.as_ref().ok_or("no redis-server")?;
            let mut cmd = pinned(setup, 0, bin);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"]);
            cmd
        }
        Contender::Ringport(backend) => {
            let mut cmd = pinned(setup, 0, &setup.ringport);
            cmd.args(["serve", "--service", "resp", "--io-threads", "1"])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--backend", backend]);
            cmd
        }
    };
    let mut child = cmd
        .env_remove("RINGPORT_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", c.name()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server { child, port };
    // Ready when it answers PING; its output is drained so it never blocks on a pipe.
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let start = Instant::now();
    loop {
        let ok = Command::new(which("redis-cli").ok_or("no redis-cli")?)
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
        if ok {
            return Ok(server);
        }
        if start.elapsed() > START_DEADLINE {
            return Err(format!("{} did not answer PING", c.name()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One run: requests/s and server CPU microseconds per request.
fn measure(setup: &Setup, c: Contender, test: &str, pipeline: u32) -> Result<(f64, f64), String> {
    let server = start(setup, c)?;
    let n = if pipeline == 1 {
        setup.requests / 10
    } else {
        setup.requests
    };
    let pid = server.child.id();
    let cpu0 = support::cpu_seconds(pid)?;
    let out = pinned(setup, 1, &setup.redis_benchmark)
        .args(["-p", &server.port.to_string(), "-c", CONNECTIONS])
        .args(["-P", &pipeline.to_string(), "-n", &n.to_string()])
        .args(["-t", test, "--csv"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
    let cpu = support::cpu_seconds(pid)? - cpu0;
    drop(server);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "redis-benchmark failed against {}: {}",
            c.name(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let rps: f64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .ok_or_else(|| format!("no figure in redis-benchmark output: {text}"))?;
    Ok((rps, cpu * 1e6 / n as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run() -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or("this program is not under target/<profile>/deps")?;
    let ringport = profile_dir.join("ringport");
    if !ringport.exists() {
        return Err(format!(
            "{} is missing: run this through `cargo bench --bench resp`",
            ringport.display()
        ));
    }
    let redis_benchmark = which("redis-benchmark")
        .ok_or("redis-benchmark is not installed (Debian: apt-get install redis-tools)")?;
    let redis_server = which("redis-server");
    if redis_server.is_none() {
        eprintln!(
            "note: redis-server is not installed (apt-get install redis-server): ringport only"
        );
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("RINGPORT_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let taskset = which("taskset").is_some();
    let requests = std::env::var("RINGPORT_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 400_000 } else { 2_000_000 });
    let setup = Setup {
        ringport,
        redis_server,
        redis_benchmark,
        pin: cores >= 2 && taskset,
        rounds: std::env::var("RINGPORT_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize)
            .max(3),
        requests,
    };
    if !setup.pin {
        eprintln!("note: fewer than 2 cores or no taskset: processes are not pinned");
    }
    let mut contenders = Vec::new();
    if setup.redis_server.is_some() {
        contenders.push(Contender::Redis);
    }
    contenders.push(Contender::Ringport("uring"));
    contenders.push(Contender::Ringport("poll"));
    let mut results = Vec::new();
    let reference = contenders.iter().position(|&c| c == Contender::Redis);
    // Per contender: req/s and µs CPU/req; against redis-server (when it runs) also the
    // paired ratios of both.
    let columns = |c: Contender| -> Vec<String> {
        let mut v = vec![
            format!("{} req/s", c.name()),
            format!("{} µs CPU/req", c.name()),
        ];
        if reference.is_some() && c != Contender::Redis {
            v.push(format!("{} req/s ×redis", c.name()));
            v.push(format!("{} req per CPU-s ×redis", c.name()));
        }
        v
    };
    let heads: Vec<String> = contenders.iter().flat_map(|&c| columns(c)).collect();
    println!("| test | -P | {} |", heads.join(" | "));
    println!("|---|---|{}", "---|".repeat(heads.len()));
    let only = |var: &str| -> Option<Vec<String>> {
        std::env::var(var).ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        })
    };
    let tests: Vec<String> = only("RINGPORT_BENCH_TESTS")
        .unwrap_or_else(|| TESTS.iter().map(|t| t.to_string()).collect());
    let pipelines: Vec<u32> = only("RINGPORT_BENCH_PIPELINES")
        .map(|v| v.iter().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_else(|| PIPELINES.to_vec());
    for &pipeline in &pipelines {
        for test in &tests {
            // One entry per contender and round (None: that run failed), so rounds pair up.
            let mut samples: Vec<Vec<Option<(f64, f64)>>> = vec![Vec::new(); contenders.len()];
            for round in 0..setup.rounds {
                for i in support::turn_order(round, contenders.len()) {
                    let c = contenders[i];
                    match measure(&setup, c, test, pipeline) {
                        Ok(s) => samples[i].push(Some(s)),
                        Err(e) => {
                            eprintln!("{} {test} -P {pipeline}: {e}", c.name());
                            samples[i].push(None);
                        }
                    }
                }
            }
            let rps_of = |i: usize| -> Vec<Option<f64>> {
                samples[i].iter().map(|s| s.map(|s| s.0)).collect()
            };
            // Requests per CPU-second: the inverse of µs per request.
            let per_cpu_of = |i: usize| -> Vec<Option<f64>> {
                samples[i]
                    .iter()
                    .map(|s| s.and_then(|s| (s.1 > 0.0).then(|| 1.0 / s.1)))
                    .collect()
            };
            let mut row = format!("| {} | {pipeline} |", test.to_uppercase());
            let mut entry = json!({"test": test, "pipeline": pipeline});
            for (i, &c) in contenders.iter().enumerate() {
                let ok: Vec<(f64, f64)> = samples[i].iter().flatten().copied().collect();
                let rps = median(ok.iter().map(|s| s.0).collect());
                let us = median(ok.iter().map(|s| s.1).collect());
                row.push_str(&format!(" {rps:.0} | {us:.3} |"));
                entry[c.name()] = json!({
                    "rps_median": rps,
                    "cpu_us_per_request_median": us,
                    "samples": ok.iter().map(|s| json!({"rps": s.0, "cpu_us": s.1})).collect::<Vec<_>>(),
                });
                if let Some(r) = reference.filter(|&r| r != i) {
                    let fmt =
                        |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"));
                    let x_rps = support::paired_ratio(&rps_of(i), &rps_of(r));
                    let x_cpu = support::paired_ratio(&per_cpu_of(i), &per_cpu_of(r));
                    row.push_str(&format!(" {} | {} |", fmt(x_rps), fmt(x_cpu)));
                    entry[c.name()]["x_redis_rps_paired"] = json!(x_rps);
                    entry[c.name()]["x_redis_per_cpu_paired"] = json!(x_cpu);
                }
            }
            println!("{row}");
            results.push(entry);
        }
    }
    let dir = profile_dir
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join("ringport-bench");
    let _ = std::fs::create_dir_all(&dir);
    let doc = json!({
        "connections": 50,
        "pinned": setup.pin,
        "rounds": setup.rounds,
        "requests_p16": setup.requests,
        "results": results,
    });
    let path = dir.join("resp.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("samples and medians in {}", path.display());
    Ok(())
}
