//! `cargo bench --bench echo`: ringport's echo server against tokio and mio echo servers,
//! measured side by side in one run by `ringport bench`.
//!
//! Every measurement starts the server as its own process (pinned to core 0 when the
//! machine has 2+ cores and `taskset` exists) and runs `ringport bench` against it (pinned
//! to core 1). Contenders take turns for every scenario, the order rotated each round (A B C,
//! B C A, ..), and each figure is the median over the rounds; each ratio to tokio
//! current_thread the median of the rounds' ratios (a round's figure over tokio's in it).
//! Server CPU is read by `ringport bench --server-pid` from `/proc/PID/stat` over the
//! measured window.
//!
//! The peers are built into this program: run with `RINGPORT_PEER=tokio-ct|tokio-mt|mio-et`
//! it serves echo on 127.0.0.1:0 and prints `ringport-peer: listening on ADDR, ...`.
//!
//! Knobs (environment):
//! - `RINGPORT_BENCH_SECS`: seconds measured per run (default 2; quick: 1);
//! - `RINGPORT_BENCH_WARMUP`: seconds of warm-up per run (default 0.5; quick: 0.3);
//! - `RINGPORT_BENCH_ROUNDS`: rounds per scenario, at least 3 (default 3);
//! - `RINGPORT_BENCH_QUICK=1` or `cargo bench --bench echo -- --quick`: the quick figures;
//! - `RINGPORT_BENCH_ONLY=tokio-ct,poll-inline`: only the contenders whose name contains one
//!   of these (tokio current_thread always runs: it is the reference).
//!
//! Output: markdown tables on stdout, and every sample and median in
//! `target/ringport-bench/echo.json`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{env_f64, median};

const PEER_ENV: &str = "RINGPORT_PEER";
const REFERENCE: &str = "tokio-ct";
const CONNECTIONS: u32 = 50;
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Load CPU at or above this percentage means the client, not the server, was the limit.
const CLIENT_CEILING: f64 = 95.0;

mod support;

fn main() {
    if let Ok(peer) = std::env::var(PEER_ENV) {
        peers::run(&peer);
        return;
    }
    if let Err(e) = compare() {
        eprintln!("echo bench: {e}");
        std::process::exit(1);
    }
}

/// A server under test.
#[derive(Debug, Clone)]
struct Contender {
    name: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Ringport { backend: &'static str, workers: u32 },
    Peer(&'static str),
}

fn contenders() -> Vec<Contender> {
    let mut v = Vec::new();
    for backend in ["uring", "poll"] {
        for (mode, workers) in [("inline", 0), ("pool", 1)] {
            v.push(Contender {
                name: format!("ringport {backend} {mode}"),
                kind: Kind::Ringport { backend, workers },
            });
        }
    }
    for peer in ["tokio-ct", "tokio-mt", "mio-et"] {
        v.push(Contender {
            name: peer.to_string(),
            kind: Kind::Peer(peer),
        });
    }
    v
}

/// How a measurement loads the server.
#[derive(Debug, Clone)]
struct Scenario {
    key: &'static str,
    title: String,
    size: u32,
    depth: u32,
    rate: Option<f64>,
}

/// Where programs are and how to pin them.
struct Setup {
    ringport: PathBuf,
    peer: PathBuf,
    pin: bool,
    secs: f64,
    warmup: f64,
    rounds: usize,
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Start a contender; `Err` says why it did not start.
fn start(setup: &Setup, c: &Contender) -> Result<Server, String> {
    let mut cmd = match &c.kind {
        Kind::Ringport { backend, workers } => {
            let mut cmd = pinned(setup, 0, &setup.ringport);
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--io-threads", "1"])
                .args(["--backend", backend, "--workers", &workers.to_string()]);
            cmd
        }
        Kind::Peer(name) => {
            let mut cmd = pinned(setup, 0, &setup.peer);
            cmd.env(PEER_ENV, name);
            cmd
        }
    };
    let mut child = cmd
        .env_remove("RINGPORT_BACKEND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", c.name))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // Drain stderr so the server never blocks on it; keep its first line for a failure note.
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = etx.send(first);
        for _ in lines {}
    });
    let mut server = Server {
        child,
        addr: "0.0.0.0:0".parse().expect("an address"),
    };
    let line = rx
        .recv_timeout(START_DEADLINE)
        .map_err(|_| format!("{} printed no banner within {START_DEADLINE:?}", c.name))?;
    if let Kind::Ringport { backend, .. } = c.kind {
        if !line.contains(&format!("backend {backend},")) {
            let why = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
            let why = if why.is_empty() {
                line.trim().to_string()
            } else {
                why
            };
            return Err(format!(
                "`ringport serve --backend {backend}` did not start: {why}"
            ));
        }
    }
    server.addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("no address in the banner of {}: {line:?}", c.name))?;
    Ok(server)
}

/// One measurement's figures, as `ringport bench --json` reported them.
fn measure(setup: &Setup, c: &Contender, s: &Scenario) -> Result<Value, String> {
    let server = start(setup, c)?;
    let mut cmd = pinned(setup, 1, &setup.ringport);
    cmd.arg("bench")
        .args(["--addr", &server.addr.to_string()])
        .args(["--connections", &CONNECTIONS.to_string()])
        .args([
            "--size",
            &s.size.to_string(),
            "--depth",
            &s.depth.to_string(),
        ])
        .args(["--duration", &setup.secs.to_string()])
        .args(["--warmup", &setup.warmup.to_string()])
        .args(["--threads", "1", "--json"])
        .args(["--server-pid", &server.child.id().to_string()]);
    if let Some(r) = s.rate {
        cmd.args(["--rate", &format!("{r:.0}")]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ringport bench: {e}"))?;
    drop(server);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ringport bench failed against {}: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_str(stdout.trim()).map_err(|e| format!("bad JSON from ringport bench: {e}"))
}

/// Medians of the figures of one contender in one scenario.
#[derive(Debug, Clone, Default)]
struct Figures {
    msgs_per_s: Option<f64>,
    load_cpu: Option<f64>,
    server_cpu: Option<f64>,
    server_ns: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    lag_p99: Option<f64>,
}

impl Figures {
    fn of(samples: &[Value]) -> Figures {
        let pick =
            |f: &dyn Fn(&Value) -> Option<f64>| median(samples.iter().filter_map(f).collect());
        Figures {
            msgs_per_s: pick(&|v| v["msgs_per_s"].as_f64()),
            load_cpu: pick(&|v| v["load_cpu_percent"].as_f64()),
            server_cpu: pick(&|v| v["server_cpu_percent"].as_f64()),
            server_ns: pick(&|v| v["server_cpu_ns_per_msg"].as_f64()),
            p50: pick(&|v| v["latency_us"]["p50"].as_f64()),
            p99: pick(&|v| v["latency_us"]["p99"].as_f64()),
            lag_p99: pick(&|v| v["send_lag_us"]["p99"].as_f64()),
        }
    }

    fn json(&self) -> Value {
        json!({
            "msgs_per_s": self.msgs_per_s,
            "load_cpu_percent": self.load_cpu,
            "server_cpu_percent": self.server_cpu,
            "server_cpu_ns_per_msg": self.server_ns,
            "p50_us": self.p50,
            "p99_us": self.p99,
            "send_lag_p99_us": self.lag_p99,
        })
    }
}

fn setup() -> Result<Setup, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // target/<profile>/deps/echo-HASH → target/<profile>/ringport
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or("this program is not under target/<profile>/deps")?;
    let ringport = profile_dir.join(format!("ringport{}", std::env::consts::EXE_SUFFIX));
    if !ringport.exists() {
        return Err(format!(
            "{} is missing: run this through `cargo bench --bench echo`, which builds it",
            ringport.display()
        ));
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("RINGPORT_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    Ok(Setup {
        ringport,
        peer: me,
        pin: cores >= 2 && taskset,
        secs: env_f64("RINGPORT_BENCH_SECS").unwrap_or(if quick { 1.0 } else { 2.0 }),
        warmup: env_f64("RINGPORT_BENCH_WARMUP").unwrap_or(if quick { 0.3 } else { 0.5 }),
        rounds: env_f64("RINGPORT_BENCH_ROUNDS")
            .map_or(3, |r| r as usize)
            .max(3),
    })
}

fn machine() -> Value {
    let m = support::machine_info();
    json!({
        "cpu": m.cpu,
        "cores": m.cores,
        "kernel": m.kernel,
        "date": m.date,
    })
}

fn compare() -> Result<(), String> {
    let setup = setup()?;
    let machine = machine();
    let only: Vec<String> = std::env::var("RINGPORT_BENCH_ONLY")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut notes = Vec::new();
    let mut running = Vec::new();
    for c in contenders() {
        let wanted = c.name == REFERENCE
            || only.is_empty()
            || only
                .iter()
                .any(|o| c.name.replace(' ', "-").contains(o.as_str()));
        if !wanted {
            continue;
        }
        // Probe once: a backend that does not start here (not built yet, not allowed) is
        // skipped with a note, and picked up by itself once it starts.
        match start(&setup, &c) {
            Ok(_) => running.push(c),
            Err(e) => notes.push(format!("{} skipped: {e}", c.name)),
        }
    }
    if !running.iter().any(|c| c.name == REFERENCE) {
        return Err("the tokio current_thread reference did not start".into());
    }
    eprintln!(
        "echo bench: {} contenders, {} rounds, {} s + {} s warm-up per run, {} connections, {}",
        running.len(),
        setup.rounds,
        setup.secs,
        setup.warmup,
        CONNECTIONS,
        if setup.pin {
            "server on core 0, load on core 1"
        } else {
            "not pinned (needs 2+ cores and taskset)"
        }
    );
    for n in &notes {
        eprintln!("echo bench: {n}");
    }

    let mut scenarios = vec![
        Scenario {
            key: "ping_pong",
            title: "closed loop, 64 B, depth 1 (ping-pong)".into(),
            size: 64,
            depth: 1,
            rate: None,
        },
        Scenario {
            key: "pipelined",
            title: "closed loop, 64 B, depth 16 (pipelined)".into(),
            size: 64,
            depth: 16,
            rate: None,
        },
        Scenario {
            key: "4kib",
            title: "closed loop, 4 KiB, depth 1".into(),
            size: 4096,
            depth: 1,
            rate: None,
        },
    ];
    let mut results = Vec::new();
    let mut tables = String::new();
    let mut i = 0;
    while i < scenarios.len() {
        let s = scenarios[i].clone();
        eprintln!("echo bench: {}", s.title);
        // One entry per contender and round (None: that run failed), so rounds pair up.
        let mut rounds: Vec<Vec<Option<Value>>> = vec![Vec::new(); running.len()];
        let mut failures: Vec<Vec<String>> = vec![Vec::new(); running.len()];
        for round in 0..setup.rounds {
            for k in support::turn_order(round, running.len()) {
                match measure(&setup, &running[k], &s) {
                    Ok(v) => rounds[k].push(Some(v)),
                    Err(e) => {
                        eprintln!("echo bench:   {e}");
                        failures[k].push(e);
                        rounds[k].push(None);
                    }
                }
            }
        }
        let samples: Vec<Vec<Value>> = rounds
            .iter()
            .map(|r| r.iter().flatten().cloned().collect())
            .collect();
        let figures: Vec<Figures> = samples.iter().map(|v| Figures::of(v)).collect();
        let reference = running.iter().position(|c| c.name == REFERENCE);
        let paired: Vec<Paired> = (0..running.len())
            .map(|k| Paired::of(&rounds, k, reference))
            .collect();
        tables.push_str(&table(&s, &running, &figures, &paired));
        results.push(json!({
            "scenario": s.key,
            "title": s.title,
            "size": s.size,
            "depth": s.depth,
            "rate": s.rate,
            "contenders": running.iter().enumerate().map(|(k, c)| json!({
                "name": c.name,
                "median": figures[k].json(),
                "samples": samples[k],
                "failures": failures[k],
            })).collect::<Vec<_>>(),
        }));
        if s.key == "ping_pong" {
            // One fixed rate for all, that every contender sustains: 30% of the slowest
            // contender's closed-loop median.
            let slowest = figures
                .iter()
                .filter_map(|f| f.msgs_per_s)
                .fold(f64::INFINITY, f64::min);
            if slowest.is_finite() && slowest > 0.0 {
                let rate = (slowest * 0.3 / 1000.0).round().max(1.0) * 1000.0;
                scenarios.push(Scenario {
                    key: "fixed_30",
                    title: format!(
                        "open loop, 64 B at {rate:.0} msgs/s (30% of the slowest closed loop)"
                    ),
                    size: 64,
                    depth: 1,
                    rate: Some(rate),
                });
            }
            scenarios.push(Scenario {
                key: "fixed_100k",
                title: "open loop, 64 B at 100000 msgs/s".into(),
                size: 64,
                depth: 1,
                rate: Some(100_000.0),
            });
        }
        i += 1;
    }

    println!(
        "\n## Echo, side by side\n\n{} · {} cores · Linux {} · {}\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["date"].as_str().unwrap_or("?"),
    );
    println!(
        "{} connections, `--io-threads 1` for ringport; {}; median of {} rounds of {} s \
         (after {} s warm-up), contenders taking turns (order rotated each round). ×ct = ratio \
         to tokio current_thread in the same round, median over the rounds (msgs/s: higher \
         is better; ns/msg: lower is better). † = load generator at ≥{CLIENT_CEILING:.0}% \
         CPU: a closed-loop figure is the client's ceiling, not the server's; an open-loop row \
         may have slipped its schedule (see send lag, which counts in the latency).\n",
        CONNECTIONS,
        if setup.pin {
            "server pinned to core 0, `ringport bench` to core 1"
        } else {
            "not pinned"
        },
        setup.rounds,
        setup.secs,
        setup.warmup,
    );
    print!("{tables}");
    for n in &notes {
        println!("- {n}");
    }

    let report = json!({
        "machine": machine,
        "config": {
            "connections": CONNECTIONS,
            "secs": setup.secs,
            "warmup": setup.warmup,
            "rounds": setup.rounds,
            "pinned": setup.pin,
        },
        "notes": notes,
        "scenarios": results,
    });
    let dir = setup
        .ringport
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("ringport-bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("echo.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("\nAll samples: {}", path.display());
    Ok(())
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

/// A contender's ratios to the reference: per round, then the median over the rounds.
struct Paired {
    msgs_per_s: Option<f64>,
    server_ns: Option<f64>,
}

impl Paired {
    fn of(rounds: &[Vec<Option<Value>>], k: usize, reference: Option<usize>) -> Paired {
        let Some(r) = reference else {
            return Paired {
                msgs_per_s: None,
                server_ns: None,
            };
        };
        let field = |i: usize, name: &str| -> Vec<Option<f64>> {
            rounds[i]
                .iter()
                .map(|v| v.as_ref().and_then(|v| v[name].as_f64()))
                .collect()
        };
        let ratio = |name: &str| support::paired_ratio(&field(k, name), &field(r, name));
        Paired {
            msgs_per_s: ratio("msgs_per_s"),
            server_ns: ratio("server_cpu_ns_per_msg"),
        }
    }
}

fn table(s: &Scenario, running: &[Contender], figures: &[Figures], paired: &[Paired]) -> String {
    let mut t = format!("### {}\n\n", s.title);
    let open = s.rate.is_some();
    t.push_str("| contender | msgs/s | ×ct | load CPU % | server CPU % | server ns/msg | ×ct | p50 µs | p99 µs |");
    t.push_str(if open { " send lag p99 µs |\n" } else { "\n" });
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    t.push_str(if open { "---:|\n" } else { "\n" });
    for ((c, f), x) in running.iter().zip(figures).zip(paired) {
        let ceiling = if f.load_cpu.is_some_and(|l| l >= CLIENT_CEILING) {
            " †"
        } else {
            ""
        };
        t.push_str(&format!(
            "| {} | {}{ceiling} | {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            fmt(f.msgs_per_s, 0),
            fmt(x.msgs_per_s, 2),
            fmt(f.load_cpu, 0),
            fmt(f.server_cpu, 0),
            fmt(f.server_ns, 0),
            fmt(x.server_ns, 2),
            fmt(f.p50, 1),
            fmt(f.p99, 1),
        ));
        if open {
            t.push_str(&format!(" {} |", fmt(f.lag_p99, 1)));
        }
        t.push('\n');
    }
    t.push('\n');
    t
}

/// The peer echo servers.
mod peers {
    use std::io::{self, Read, Write};

    /// Bytes read per call, as ringport's default receive buffer.
    const BUF: usize = 16 * 1024;

    pub fn run(name: &str) {
        match name {
            "tokio-ct" => tokio_echo(false),
            "tokio-mt" => tokio_echo(true),
            "mio-et" => mio_echo().expect("mio echo server"),
            other => {
                eprintln!("unknown peer '{other}' (tokio-ct, tokio-mt, mio-et)");
                std::process::exit(2);
            }
        }
    }

    fn banner(addr: std::net::SocketAddr, name: &str) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "ringport-peer: listening on {addr}, peer {name}");
        let _ = out.flush();
    }

    /// One task per connection: read, write it all back (the usual tokio echo).
    fn tokio_echo(multi_thread: bool) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = if multi_thread {
            // Worker count follows the CPUs this process may use (one when pinned).
            tokio::runtime::Builder::new_multi_thread()
                .enable_io()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
        }
        .expect("tokio runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            banner(
                l.local_addr().expect("local address"),
                if multi_thread { "tokio-mt" } else { "tokio-ct" },
            );
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; BUF];
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    /// One thread, edge-triggered mio: read until drained (a short read is drained), write
    /// back at once, keep what did not fit until the socket is writable.
    fn mio_echo() -> io::Result<()> {
        use mio::net::{TcpListener, TcpStream};
        use mio::{Events, Interest, Poll, Token};

        struct Conn {
            s: TcpStream,
            out: Vec<u8>,
        }
        const LISTENER: Token = Token(usize::MAX - 1);
        let mut poll = Poll::new()?;
        let mut events = Events::with_capacity(1024);
        let mut l = TcpListener::bind("127.0.0.1:0".parse().expect("address"))?;
        poll.registry()
            .register(&mut l, LISTENER, Interest::READABLE)?;
        banner(l.local_addr()?, "mio-et");
        let mut conns: Vec<Option<Conn>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut buf = vec![0u8; BUF];
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    loop {
                        match l.accept() {
                            Ok((mut s, _)) => {
                                let _ = s.set_nodelay(true);
                                let k = free.pop().unwrap_or_else(|| {
                                    conns.push(None);
                                    conns.len() - 1
                                });
                                poll.registry().register(
                                    &mut s,
                                    Token(k),
                                    Interest::READABLE | Interest::WRITABLE,
                                )?;
                                conns[k] = Some(Conn { s, out: Vec::new() });
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => break,
                        }
                    }
                    continue;
                }
                let k = ev.token().0;
                let Some(c) = conns.get_mut(k).and_then(Option::as_mut) else {
                    continue;
                };
                let mut alive = true;
                if ev.is_writable() && !c.out.is_empty() {
                    alive = flush(&mut c.s, &mut c.out);
                }
                if alive && ev.is_readable() {
                    loop {
                        match c.s.read(&mut buf) {
                            Ok(0) => {
                                alive = false;
                                break;
                            }
                            Ok(n) => {
                                if c.out.is_empty() {
                                    match c.s.write(&buf[..n]) {
                                        Ok(w) => c.out.extend_from_slice(&buf[w..n]),
                                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                            c.out.extend_from_slice(&buf[..n])
                                        }
                                        Err(_) => {
                                            alive = false;
                                            break;
                                        }
                                    }
                                } else {
                                    c.out.extend_from_slice(&buf[..n]);
                                    alive = flush(&mut c.s, &mut c.out);
                                }
                                if n < buf.len() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                alive = false;
                                break;
                            }
                        }
                    }
                }
                if !alive {
                    if let Some(mut c) = conns[k].take() {
                        let _ = poll.registry().deregister(&mut c.s);
                    }
                    free.push(k);
                }
            }
        }
    }

    /// Write queued bytes; false when the connection failed.
    fn flush(s: &mut mio::net::TcpStream, out: &mut Vec<u8>) -> bool {
        let mut done = 0;
        while done < out.len() {
            match s.write(&out[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        out.drain(..done);
        true
    }
}
