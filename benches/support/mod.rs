//! Helpers for the side-by-side benchmarks: pinned processes, CPU and memory from /proc,
//! medians, the machine's description.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A process stopped (and reaped) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    /// SIGTERM first, so that a master process (nginx) stops its workers: a SIGKILL would
    /// leave them running, orphaned, taking CPU from every later measurement. SIGKILL if
    /// the process is still there after 5 s.
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill takes no pointers; `pid` is our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when processes can be pinned: 2+ cores and `taskset`.
pub fn can_pin() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores >= 2
        && Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// `program` run on cores `first..first + count` (through `taskset`) when `pin`, else as
/// is.
pub fn pinned(pin: bool, first: usize, count: usize, program: &Path) -> Command {
    if pin {
        let last = first + count.max(1) - 1;
        let mut c = Command::new("taskset");
        c.arg("-c").arg(format!("{first}-{last}")).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// True when `program` runs (`program -v` or `-V` exits).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The `ringport` binary next to this bench's executable (cargo builds it for benches).
pub fn ringport_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // target/<profile>/deps/NAME-HASH → target/<profile>/ringport
    let dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or("this program is not under target/<profile>/deps")?;
    let bin = dir.join(format!("ringport{}", std::env::consts::EXE_SUFFIX));
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: run this through `cargo bench`, which builds it",
            bin.display()
        ))
    }
}

/// Fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU time (user + system) of a process, in clock ticks; readable until it is reaped.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid).map_or(0, |f| {
        f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
    })
}

/// The process and its children (nginx's master and workers).
pub fn family(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if stat_fields(p).is_some_and(|f| f[1] == pid.to_string()) {
                all.push(p);
            }
        }
    }
    all
}

/// CPU seconds a process has used: the scheduler's run time of each of its threads
/// (`/proc/PID/task/*/schedstat`, nanoseconds), which a process that sleeps and wakes often
/// gets exactly, where the tick-sampled user + system times of `/proc/PID/stat` are coarse.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let dir = format!("/proc/{pid}/task");
    let mut ns = 0u64;
    for t in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let path = t.map_err(|e| e.to_string())?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        if let Ok(s) = std::fs::read_to_string(&path) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("bad {}", path.display()))?;
        }
    }
    Ok(ns as f64 / 1e9)
}

/// CPU seconds of a process and its children ([`cpu_seconds`] of each). None at all means
/// the kernel keeps no scheduler statistics (`schedstat` reads `0 0 0`): an error, not a
/// free server.
pub fn family_cpu_seconds(pids: &[u32]) -> Result<f64, String> {
    let total = pids
        .iter()
        .map(|&p| cpu_seconds(p))
        .sum::<Result<f64, String>>()?;
    if total > 0.0 {
        Ok(total)
    } else {
        Err(format!(
            "no CPU time in /proc/PID/task/*/schedstat of {pids:?}"
        ))
    }
}

/// Resident memory of processes, in bytes.
pub fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

/// Clock ticks per second.
pub fn ticks_per_second() -> f64 {
    // getconf is in every libc install; 100 is the Linux default.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The order in which `n` contenders take their turns in round `round`: rotated by one
/// each round, so that none always runs first, or always right after the same one.
pub fn turn_order(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + round) % n.max(1))
}

/// The median over rounds of `a`'s figure over `b`'s in the same round (rounds where either
/// is missing or not positive left out): drift of the machine between rounds cancels out.
pub fn paired_ratio(a: &[Option<f64>], b: &[Option<f64>]) -> Option<f64> {
    median(
        a.iter()
            .zip(b)
            .filter_map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) if *y > 0.0 => Some(x / y),
                _ => None,
            })
            .collect(),
    )
}

pub fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// What a benchmark ran on.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    /// The kernel's default TCP congestion control (`bbr` paces every sender: where its
    /// pacing timers run shapes the big-body figures).
    pub congestion: String,
    pub date: String,
}

/// CPU model, core count, kernel and date of this machine.
pub fn machine_info() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::consts::OS.to_string());
    let congestion = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Machine {
        cpu,
        cores,
        kernel,
        congestion,
        date,
    }
}

/// CPU model, core count, kernel, TCP congestion control and date, for the table's caption.
pub fn machine() -> String {
    let m = machine_info();
    format!(
        "{} · {} cores · Linux {} · TCP {} · {}",
        m.cpu, m.cores, m.kernel, m.congestion, m.date
    )
}
