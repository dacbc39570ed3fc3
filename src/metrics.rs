//! Prometheus text exposition on an address of its own (never the service's port).
//!
//! The drivers already keep their counters as relaxed atomics ([`Stats`], one set per I/O
//! thread); a scrape reads them on the metrics thread and writes text. Nothing on the data
//! path waits for a scrape or takes a lock for it. Services add their own metrics through
//! [`Service::metrics`](crate::Service::metrics), which writes into an [`Exposition`]: a
//! service keeps relaxed atomic counters (and a [`Histogram`]) and renders them on demand.
//!
//! The listener is served by a thread with a blocking `std` listener that hands each
//! connection to a short-lived thread of its own (64 at once; past that, the connection
//! that has waited longest for its request head is shut down to make room, up to 128
//! threads while those end, and when all are past their heads a new one is closed), so
//! connections that send nothing hold up no scrape, however many come. Each answers one request
//! and closes: `GET` or `HEAD /metrics`; any other path is 404, any other method 405, a
//! request line that is not HTTP/1.0 or 1.1 400; a head not in within 3 s, or an answer not
//! taken within 10 s, closes.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringport_fallback::errno::Disposition;
use ringport_fallback::event::Stats;

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets, with `_bucket`, `_sum` and `_count` samples.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape being written: families (`# HELP`, `# TYPE`), each followed by its samples.
///
/// ```
/// use ringport::metrics::{Exposition, Kind};
///
/// let mut out = Exposition::new();
/// out.family("demo_commands_total", Kind::Counter, "Commands served, by name.");
/// out.sample("demo_commands_total", &[("command", "get")], 3);
/// assert!(out.text().contains("demo_commands_total{command=\"get\"} 3\n"));
/// ```
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty scrape.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Start a family: write its help and type. Every sample of a family follows its
    /// `family` call, before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    /// One sample: `name{labels} value`. Label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '"' => self.text.push_str("\\\""),
                        '\n' => self.text.push_str("\\n"),
                        c => self.text.push(c),
                    }
                }
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// The text written so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Upper bounds of the latency buckets, in seconds (plus `+Inf`).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`]): relaxed atomic counters,
/// written from any thread without a lock and read at scrape time.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Count one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Write the `_bucket`, `_sum` and `_count` samples of `name` (after its `family`).
    pub fn render(&self, out: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |v| v.to_string());
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            out.sample(&bucket, &with_le, cumulative);
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        out.sample(&format!("{name}_sum"), labels, sum);
        out.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// A counter family of [`Stats`]: name, help, field.
type Counter = (&'static str, &'static str, fn(&Stats) -> &AtomicU64);

/// Write the engine's counters, per I/O thread and backend.
pub(crate) fn render_engine(out: &mut Exposition, backend: &str, all: &[Arc<Stats>]) {
    out.family(
        "ringport_info",
        Kind::Gauge,
        "Always 1; the labels say which version and backend run.",
    );
    out.sample(
        "ringport_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("backend", backend)],
        1,
    );
    let threads: Vec<String> = (0..all.len()).map(|i| i.to_string()).collect();
    let each =
        |out: &mut Exposition, name: &str, kind: Kind, help: &str, f: &dyn Fn(&Stats) -> u64| {
            out.family(name, kind, help);
            for (i, s) in all.iter().enumerate() {
                out.sample(name, &[("thread", &threads[i]), ("backend", backend)], f(s));
            }
        };
    let get = Stats::get;
    each(
        out,
        "ringport_connections_open",
        Kind::Gauge,
        "Connections open now.",
        &|s| get(&s.accepted).saturating_sub(get(&s.closed)),
    );
    let counters: [Counter; 12] = [
        (
            "ringport_connections_accepted_total",
            "Connections accepted and admitted.",
            |s| &s.accepted,
        ),
        (
            "ringport_connections_closed_total",
            "Connections closed, for any reason.",
            |s| &s.closed,
        ),
        (
            "ringport_connections_refused_total",
            "Connections refused over the --max-connections cap.",
            |s| &s.refused,
        ),
        (
            "ringport_connections_timed_out_total",
            "Connections closed by the idle or the send timeout.",
            |s| &s.timed_out,
        ),
        (
            "ringport_bytes_in_total",
            "Bytes read from peers and handed to the service.",
            |s| &s.bytes_in,
        ),
        (
            "ringport_bytes_out_total",
            "Bytes of the service's output written to peers.",
            |s| &s.bytes_out,
        ),
        (
            "ringport_output_discarded_bytes_total",
            "Bytes of output never written: their connection closed first.",
            |s| &s.discarded,
        ),
        (
            "ringport_file_bytes_total",
            "File bytes sent without a copy through user space (part of bytes_out).",
            |s| &s.file_bytes,
        ),
        (
            "ringport_accept_pauses_total",
            "Times accepting paused because a resource ran out (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
            |s| &s.accept_pauses,
        ),
        (
            "ringport_enobufs_total",
            "io_uring receives that found the provided-buffer ring empty.",
            |s| &s.enobufs,
        ),
        (
            "ringport_read_pauses_total",
            "Times reading from a connection paused (output over the limit, or its worker behind).",
            |s| &s.read_pauses,
        ),
        (
            "ringport_service_panics_total",
            "Service callbacks that panicked (each closed its connection).",
            |s| &s.service_panics,
        ),
    ];
    for (name, help, field) in counters {
        each(out, name, Kind::Counter, help, &|s| get(field(s)));
    }
    let name = "ringport_failed_calls_total";
    out.family(
        name,
        Kind::Counter,
        "Failed system calls, by what the errno classifier made of them (peer_gone is normal traffic).",
    );
    for (i, s) in all.iter().enumerate() {
        for d in Disposition::ALL {
            let n = get(&s.errors[d.index()]);
            out.sample(
                name,
                &[
                    ("thread", &threads[i]),
                    ("backend", backend),
                    ("disposition", d.name()),
                ],
                n,
            );
        }
    }
}

/// Renders one scrape.
pub(crate) type Render = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// The metrics listener's thread.
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serve scrapes on `listener` from a thread of its own.
    pub(crate) fn start(listener: TcpListener, render: Render) -> io::Result<MetricsServer> {
        listener.set_nonblocking(false)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringport-metrics".into())
            .spawn(move || {
                let scrapes = Arc::new(Scrapes::default());
                for conn in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    match conn {
                        Ok(c) => scrape(c, &scrapes, &render),
                        // Out of descriptors and the like: do not spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address scrapes go to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own; if that fails the thread
        // is left to end with the process.
        let mut to = self.addr;
        if to.ip().is_unspecified() {
            to.set_ip(match to {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Longest request head a scrape may send.
const MAX_REQUEST: usize = 8 * 1024;

/// Scrape connections served at once (see [`scrape`] for what happens past it).
const MAX_SCRAPES: usize = 64;

/// How long a scrape connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a scrape connection may take to take its whole answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections being answered, and those of them still waiting for their request head.
#[derive(Default)]
struct Scrapes {
    active: AtomicUsize,
    /// Waiting for their head: a number (in the order they came) and a handle to shut
    /// each down.
    waiting: Mutex<Vec<(u64, TcpStream)>>,
    next: AtomicU64,
}

/// A place among the connections answered at once, given back when dropped.
struct Place(Arc<Scrapes>);

impl Place {
    /// A place while fewer than `cap` are taken.
    fn take(scrapes: &Arc<Scrapes>, cap: usize) -> Option<Place> {
        scrapes
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(scrapes.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Scrapes {
    /// Shut down the reading side of the connection that has waited longest for its head,
    /// if any: its thread's read sees the end (on Linux at once; where the system does not
    /// wake a blocked read so, at its head timeout), and it gives its place back. Only the
    /// reading side, so a request that arrived just now is still answered.
    fn evict_oldest_waiting(&self) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let Some(oldest) = (0..waiting.len()).min_by_key(|&i| waiting[i].0) else {
            return false;
        };
        let (_, stream) = waiting.swap_remove(oldest);
        let _ = stream.shutdown(std::net::Shutdown::Read);
        true
    }

    /// Note that `c` waits for its head; the number to pass to [`Scrapes::done_waiting`].
    fn waiting(&self, c: &TcpStream) -> Option<u64> {
        let handle = c.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.push((id, handle));
        Some(id)
    }

    fn done_waiting(&self, id: Option<u64>) {
        let Some(id) = id else { return };
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = waiting.iter().position(|w| w.0 == id) {
            waiting.swap_remove(i);
        }
    }
}

/// Answer `c` on a thread of its own. When [`MAX_SCRAPES`] are being answered, the one
/// that has waited longest for its request head is shut down to make room (so connections
/// that send nothing cannot keep a scraper out, however many come), up to twice as many
/// threads while those end; when all of them are past their head, or no thread can be
/// started, `c` is closed.
fn scrape(c: TcpStream, scrapes: &Arc<Scrapes>, render: &Render) {
    let place = match Place::take(scrapes, MAX_SCRAPES) {
        Some(place) => Some(place),
        // Room is made only where a place for this one is sure.
        None => Place::take(scrapes, 2 * MAX_SCRAPES).filter(|_| scrapes.evict_oldest_waiting()),
    };
    let Some(place) = place else {
        tracing::debug!("metrics connection closed: {MAX_SCRAPES} scrapes in progress");
        return;
    };
    // Noted as waiting here, before its thread runs: a burst of connections finds the
    // earlier ones of the burst to make room from.
    let waiting = scrapes.waiting(&c);
    let render = render.clone();
    let thread_scrapes = scrapes.clone();
    // The default stack: a service's own metrics code runs here.
    let started = std::thread::Builder::new()
        .name("ringport-scrape".into())
        .spawn(move || {
            let _place = place;
            if let Err(e) = answer(c, waiting, &thread_scrapes, &render) {
                tracing::debug!("metrics scrape failed: {e}");
            }
        });
    if let Err(e) = started {
        scrapes.done_waiting(waiting);
        tracing::debug!("metrics connection closed: no thread for it: {e}");
    }
}

/// Read one request head and answer it; the connection then closes.
fn answer(
    mut c: TcpStream,
    waiting: Option<u64>,
    scrapes: &Scrapes,
    render: &Render,
) -> io::Result<()> {
    let head = read_head(&mut c);
    scrapes.done_waiting(waiting);
    let Some(head) = head? else {
        return Ok(());
    };
    respond_to(&mut c, &head, render)
}

/// Read a request head within [`HEAD_TIMEOUT`]; `None` when the peer ends first. Answers
/// 431 itself (and returns `None`) when the head is too long.
fn read_head(c: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        c.set_read_timeout(Some(left))?;
        let n = match c.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            respond(
                c,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
                "too large\n",
                false,
            )?;
            return Ok(None);
        }
    }
    Ok(Some(head))
}

/// Answer the request in `head`.
fn respond_to(c: &mut TcpStream, head: &[u8], render: &Render) -> io::Result<()> {
    // Empty lines before the request line are skipped (RFC 9112, section 2.2).
    let line = head
        .split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method.is_empty() || target.is_empty() || !matches!(version, b"HTTP/1.0" | b"HTTP/1.1") {
        return respond(
            c,
            "400 Bad Request",
            "text/plain",
            "",
            "bad request\n",
            false,
        );
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    if method != b"GET" && !head_only {
        return respond(
            c,
            "405 Method Not Allowed",
            "text/plain",
            "Allow: GET, HEAD\r\n",
            "GET only\n",
            false,
        );
    }
    if path != b"/metrics" {
        return respond(
            c,
            "404 Not Found",
            "text/plain",
            "",
            "try /metrics\n",
            head_only,
        );
    }
    let mut out = Exposition::new();
    render(&mut out);
    let ty = "text/plain; version=0.0.4; charset=utf-8";
    respond(c, "200 OK", ty, "", out.text(), head_only)
}

/// An answer of type `ty` with `body`; `fields` are extra header lines, each ending in CRLF.
fn respond(
    c: &mut TcpStream,
    status: &str,
    ty: &str,
    fields: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let mut msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ty}\r\n{fields}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        msg.push_str(body);
    }
    // One deadline for the whole answer: a reader that takes a few bytes now and then does
    // not keep its place.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut rest = msg.as_bytes();
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        c.set_write_timeout(Some(left))?;
        match c.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = Exposition::new();
        out.family("t_seconds", Kind::Histogram, "Test.");
        h.render(&mut out, "t_seconds", &[("k", "v")]);
        let text = out.text();
        assert!(
            text.contains("t_seconds_bucket{k=\"v\",le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{k=\"v\",le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{k=\"v\",le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{k=\"v\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_count{k=\"v\"} 3\n"), "{text}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::new();
        out.sample("m", &[("a", "x\"y\\z\n")], 1);
        assert_eq!(out.text(), "m{a=\"x\\\"y\\\\z\\n\"} 1\n");
    }
}
