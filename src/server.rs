//! Bind, choose the backend, start the threads, shut down.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringport_fallback::errno::{classify, Disposition, Site};
use ringport_fallback::event::{DriverConfig, Shared, Stats, Waker};
use ringport_fallback::{net, Dispatch, PollDriver};

use crate::metrics;
use crate::pool::{DriverLink, Inline, Pool};
use crate::service::{Mailbox, Service};

/// The longest linger and shutdown grace a builder takes (deadlines are `Instant`s).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Which I/O driver a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring where the kernel allows it, else the readiness driver.
    #[default]
    Auto,
    /// The io_uring completion driver (Linux); an error if it cannot start.
    Uring,
    /// The portable readiness driver on `polling`.
    Poll,
}

impl Backend {
    /// The name used on the command line and in the banner.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Uring => "uring",
            Backend::Poll => "poll",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "poll" | "polling" | "readiness" => Ok(Backend::Poll),
            other => Err(format!(
                "unknown backend '{other}' (expected auto, uring or poll)"
            )),
        }
    }
}

/// Configures and starts a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    listen: SocketAddr,
    backend: Backend,
    io_threads: usize,
    workers: usize,
    driver: DriverConfig,
    reuse_port: bool,
    inherited: Option<Arc<TcpListener>>,
    metrics: Option<MetricsAt>,
}

/// Where the metrics listener comes from.
#[derive(Debug, Clone)]
enum MetricsAt {
    Bind(SocketAddr),
    Inherited(Arc<TcpListener>),
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            backend: Backend::Auto,
            io_threads: 1,
            // Inline: for cheap services (echo) the hop to a worker thread costs more than
            // the service itself (see the README's Performance section).
            workers: 0,
            driver: DriverConfig::default(),
            reuse_port: false,
            inherited: None,
            metrics: None,
        }
    }
}

impl ServerBuilder {
    /// Defaults: 127.0.0.1:7000, backend auto, one I/O thread, the service inline on it.
    pub fn new() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Address to listen on (port 0 picks a free port).
    pub fn listen(&mut self, addr: SocketAddr) -> &mut Self {
        self.listen = addr;
        self
    }

    /// Share the address with other processes (`SO_REUSEPORT` on every listener, one I/O
    /// thread included), so a new instance can listen while an old one drains. Off by
    /// default: binding an address another process listens on fails with "address in use",
    /// whatever the number of I/O threads.
    pub fn reuse_port(&mut self, on: bool) -> &mut Self {
        self.reuse_port = on;
        self
    }

    /// Accept from this already listening socket (socket activation) instead of binding
    /// [`ServerBuilder::listen`]'s address. Every I/O thread accepts from it (a duplicate
    /// descriptor each).
    pub fn listener(&mut self, listener: TcpListener) -> &mut Self {
        self.inherited = Some(Arc::new(listener));
        self
    }

    /// Serve Prometheus metrics on `addr` (its own listener, never the service's).
    pub fn metrics(&mut self, addr: SocketAddr) -> &mut Self {
        self.metrics = Some(MetricsAt::Bind(addr));
        self
    }

    /// Serve Prometheus metrics on this already listening socket (socket activation).
    pub fn metrics_listener(&mut self, listener: TcpListener) -> &mut Self {
        self.metrics = Some(MetricsAt::Inherited(Arc::new(listener)));
        self
    }

    /// Which driver to run.
    pub fn backend(&mut self, backend: Backend) -> &mut Self {
        self.backend = backend;
        self
    }

    /// I/O threads (each with its own listener, ring or poller). At least 1, at most 255.
    pub fn io_threads(&mut self, n: usize) -> &mut Self {
        self.io_threads = n.clamp(1, 255);
        self
    }

    /// Worker threads running the service; 0 (the default) runs it inline on the I/O
    /// threads, which is cheapest for services that do little work per message.
    pub fn workers(&mut self, n: usize) -> &mut Self {
        self.workers = n;
        self
    }

    /// Connections admitted at once (across all I/O threads); more are accepted and
    /// closed at once.
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.driver.max_connections = n.max(1);
        self
    }

    /// Queued output per connection above which reading from it pauses (it resumes below
    /// a quarter of that).
    pub fn output_limit(&mut self, bytes: usize) -> &mut Self {
        self.driver.output_high = bytes.max(1);
        self.driver.output_low = bytes / 4;
        self
    }

    /// Close connections that sent nothing for this long (`None` or zero: never).
    pub fn idle_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.driver.idle_timeout = t.filter(|d| !d.is_zero());
        self
    }

    /// Close connections whose queued output made no progress for this long (`None` or
    /// zero: never). Default 60 s.
    pub fn send_timeout(&mut self, t: Option<Duration>) -> &mut Self {
        self.driver.send_timeout = t.filter(|d| !d.is_zero());
        self
    }

    /// How long shutdown waits for owed output before closing anyway (at most an hour: a
    /// longer value is taken as an hour).
    pub fn shutdown_grace(&mut self, t: Duration) -> &mut Self {
        self.driver.shutdown_grace = t.min(MAX_WAIT);
        self
    }

    /// After an orderly close (output written, write side shut down), how long input is
    /// still read and discarded while waiting for the peer's EOF, so that unread input at
    /// close does not reset the connection and destroy output the peer has not read yet.
    /// The connection closes as soon as the EOF arrives. Default 2 s; zero: close at once; at
    /// most an hour (a longer value is taken as an hour).
    pub fn linger(&mut self, t: Duration) -> &mut Self {
        self.driver.linger = t.min(MAX_WAIT);
        self
    }

    /// io_uring: provided buffers per ring (rounded up to a power of two).
    pub fn ring_buffers(&mut self, n: u16) -> &mut Self {
        self.driver.ring_buffers = n.max(1).checked_next_power_of_two().unwrap_or(1 << 15);
        self
    }

    /// io_uring: size of each provided buffer.
    pub fn buffer_size(&mut self, bytes: u32) -> &mut Self {
        self.driver.buffer_size = bytes.max(64);
        self
    }

    /// io_uring: how long a busy I/O thread's wait may hold out for a fuller batch (zero:
    /// never; see [`DriverConfig::batch_wait`]).
    ///
    /// [`DriverConfig::batch_wait`]: ringport_fallback::event::DriverConfig::batch_wait
    pub fn batch_wait(&mut self, t: Duration) -> &mut Self {
        self.driver.batch_wait = t;
        self
    }

    /// io_uring: slots per ring whose connections have their sockets entered in the ring's
    /// table of registered descriptors (default 16,384; also capped by the open-files limit
    /// and [`max_connections`](Self::max_connections); zero: none). A connection past them
    /// works the same, with one descriptor lookup per request more. Only on Linux 6.13 and
    /// later: before, a socket taken out of the table stays open until requests on other
    /// sockets (every connection's long-lived receive) end, so a closed connection would
    /// not reach its peer; older kernels get no table.
    pub fn registered_files(&mut self, n: u32) -> &mut Self {
        self.driver.registered_files = n;
        self
    }

    /// Scripted syscall failures at the drivers' choke points (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn faults(&mut self, plan: Arc<ringport_fallback::fault::FaultPlan>) -> &mut Self {
        self.driver.faults = Some(plan);
        self
    }

    /// Bind, pick the backend, start the I/O threads and the workers.
    ///
    /// # Errors
    /// Fails when the address cannot be bound, when `Backend::Uring` was asked for and
    /// io_uring cannot start (the error names the reason), or when threads cannot start.
    pub fn build<S: Service>(&self, service: S) -> io::Result<Server> {
        let io_threads = self.io_threads.clamp(1, 255);
        let listeners = match &self.inherited {
            Some(l) => (0..io_threads)
                .map(|_| l.try_clone())
                .collect::<io::Result<Vec<_>>>()?,
            None => net::listeners_with(self.listen, io_threads, self.reuse_port)?,
        };
        let local_addr = listeners[0].local_addr()?;
        let metrics_listener =
            match &self.metrics {
                None => None,
                Some(MetricsAt::Bind(addr)) => Some(TcpListener::bind(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("metrics address {addr}: {e}"))
                })?),
                Some(MetricsAt::Inherited(l)) => Some(l.try_clone()?),
            };
        let shared = Arc::new(Shared::default());
        let mut cfg = self.driver.clone();
        cfg.shared_listener = self.inherited.is_some() && io_threads > 1;

        let (backend, fallback_reason) = choose_backend(self.backend, &cfg)?;
        let wakers: Vec<Arc<Waker>> = (0..io_threads).map(|_| Waker::new()).collect();
        let stats: Vec<Arc<Stats>> = (0..io_threads)
            .map(|_| Arc::new(Stats::default()))
            .collect();
        let service = Arc::new(service);
        let metrics = match metrics_listener {
            Some(l) => {
                let (svc, all) = (service.clone(), stats.clone());
                let render: metrics::Render = Arc::new(move |out| {
                    metrics::render_engine(out, backend.name(), &all);
                    svc.metrics(out);
                });
                Some(metrics::MetricsServer::start(l, render)?)
            }
            None => None,
        };
        // Handle output waiting for one I/O thread: a few times the output limit, within
        // sane bounds.
        let mail_cap = cfg.output_high.saturating_mul(16).clamp(1 << 20, 64 << 20);
        let drivers: Vec<DriverLink> = (0..io_threads)
            .map(|i| DriverLink {
                waker: wakers[i].clone(),
                mailbox: Mailbox::new(wakers[i].clone(), mail_cap),
                stats: stats[i].clone(),
            })
            .collect();

        let mut starting = Vec::with_capacity(io_threads);
        let pool = if self.workers == 0 {
            for (i, l) in listeners.into_iter().enumerate() {
                let d = &drivers[i];
                let dispatch = Inline::new(service.clone(), d.mailbox.clone(), d.stats.clone());
                let parts = DriverParts::new(i, backend, l, &cfg, &stats, &shared, &wakers);
                starting.push(spawn_driver(parts, dispatch)?);
            }
            None
        } else {
            let (pool, links) = Pool::start(service, self.workers, &drivers)?;
            for (i, (l, link)) in listeners.into_iter().zip(links).enumerate() {
                let parts = DriverParts::new(i, backend, l, &cfg, &stats, &shared, &wakers);
                starting.push(spawn_driver(parts, link)?);
            }
            Some(pool)
        };
        let mut threads = Vec::with_capacity(starting.len());
        let mut failure = None;
        for (handle, ready) in starting {
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => {
                    failure = failure.or(Some(io::Error::other("an I/O thread died at start")))
                }
            }
            threads.push(handle);
        }
        let server = Server {
            local_addr,
            backend,
            fallback_reason,
            io_threads,
            workers: self.workers,
            shared,
            wakers,
            stats,
            threads,
            pool,
            metrics,
        };
        match failure {
            // Dropping the server stops the threads that did start.
            Some(e) => Err(e),
            None => Ok(server),
        }
    }
}

/// The two drivers, dispatched by enum. Built once per thread, so size does not matter.
#[allow(clippy::large_enum_variant)]
enum Driver {
    Poll(PollDriver),
    #[cfg(target_os = "linux")]
    Uring(crate::uring::UringDriver),
}

impl Driver {
    fn run<D: Dispatch>(self, dispatch: &mut D) -> io::Result<()> {
        match self {
            Driver::Poll(d) => d.run(dispatch),
            #[cfg(target_os = "linux")]
            Driver::Uring(d) => d.run(dispatch),
        }
    }
}

/// Decide the backend before any thread starts. `auto` builds a real ring with the real
/// flags and falls back to poll when setup is classified `Unsupported`.
fn choose_backend(wanted: Backend, cfg: &DriverConfig) -> io::Result<(Backend, Option<String>)> {
    match wanted {
        Backend::Poll => Ok((Backend::Poll, None)),
        Backend::Uring | Backend::Auto => match probe_uring(cfg) {
            Ok(()) => Ok((Backend::Uring, None)),
            Err(e) => {
                let reason = uring_unavailable_reason(&e, cfg);
                if wanted == Backend::Auto
                    && classify(Site::RingSetup, &e) == Disposition::Unsupported
                {
                    Ok((Backend::Poll, Some(reason)))
                } else {
                    Err(io::Error::new(e.kind(), reason))
                }
            }
        },
    }
}

/// The backends that can run on this machine, strongest first: `Uring` when io_uring
/// starts here with the default settings, and always `Poll`.
pub fn available_backends() -> Vec<Backend> {
    let mut out = Vec::with_capacity(2);
    if probe_uring(&DriverConfig::default()).is_ok() {
        out.push(Backend::Uring);
    }
    out.push(Backend::Poll);
    out
}

#[cfg(target_os = "linux")]
fn probe_uring(cfg: &DriverConfig) -> io::Result<()> {
    // On a thread of its own: the kernel tears a ring down after it is closed, and may then
    // interrupt the thread that set it up (task work). A caller's blocking socket call with a
    // timeout would see that as a spurious EINTR; a probe thread that has exited sees nothing.
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("ringport-probe".into())
            .spawn_scoped(s, || crate::uring::UringDriver::probe(cfg))?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the io_uring probe panicked")))
    })
}

#[cfg(not(target_os = "linux"))]
fn probe_uring(_cfg: &DriverConfig) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "io_uring exists only on Linux",
    ))
}

/// What one I/O thread needs to build its driver.
struct DriverParts {
    backend: Backend,
    listener: TcpListener,
    cfg: DriverConfig,
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
}

impl DriverParts {
    fn new(
        index: usize,
        backend: Backend,
        listener: TcpListener,
        cfg: &DriverConfig,
        stats: &[Arc<Stats>],
        shared: &Arc<Shared>,
        wakers: &[Arc<Waker>],
    ) -> DriverParts {
        DriverParts {
            backend,
            listener,
            cfg: DriverConfig {
                index,
                ..cfg.clone()
            },
            stats: stats[index].clone(),
            shared: shared.clone(),
            waker: wakers[index].clone(),
        }
    }

    fn build(self) -> io::Result<Driver> {
        let DriverParts {
            backend,
            listener,
            cfg,
            stats,
            shared,
            waker,
        } = self;
        match backend {
            #[cfg(target_os = "linux")]
            Backend::Uring => {
                let asked = cfg.clone();
                crate::uring::UringDriver::new(listener, cfg, stats, shared, waker)
                    .map(Driver::Uring)
                    .map_err(|e| io::Error::new(e.kind(), uring_unavailable_reason(&e, &asked)))
            }
            _ => PollDriver::new(listener, cfg, stats, shared, waker).map(Driver::Poll),
        }
    }
}

type Starting = (
    JoinHandle<io::Result<()>>,
    crossbeam_channel::Receiver<io::Result<()>>,
);

/// Start an I/O thread. The driver is built on that thread (an io_uring ring set up with
/// SINGLE_ISSUER must be driven by the thread that created it); whether that worked comes
/// back on the returned channel.
fn spawn_driver<D: Dispatch + Send + 'static>(
    parts: DriverParts,
    mut dispatch: D,
) -> io::Result<Starting> {
    let index = parts.cfg.index;
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let handle = std::thread::Builder::new()
        .name(format!("ringport-io-{index}"))
        .spawn(move || match parts.build() {
            Ok(driver) => {
                let _ = ready_tx.send(Ok(()));
                driver.run(&mut dispatch)
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                Ok(())
            }
        })?;
    Ok((handle, ready_rx))
}

/// One line saying why io_uring cannot run and what to do about it. Refused memory says how
/// much the ring asked for.
fn uring_unavailable_reason(e: &io::Error, cfg: &DriverConfig) -> String {
    if cfg!(not(target_os = "linux")) {
        // The probe's error says it all ("io_uring exists only on Linux"); no kernel hint.
        return format!("io_uring unavailable: {e}");
    }
    if e.kind() == io::ErrorKind::OutOfMemory {
        let buffers = u64::from(cfg.ring_buffers) * u64::from(cfg.buffer_size);
        return format!(
            "io_uring unavailable: the ring asked for {} per I/O thread for its receive buffers \
             ({} of {}) and the kernel refused it ({e}); use fewer --ring-buffers or a smaller \
             --buffer-size",
            binary_size(buffers),
            cfg.ring_buffers,
            binary_size(u64::from(cfg.buffer_size)),
        );
    }
    format!(
        "io_uring unavailable: {e}: {}",
        ringport_fallback::errno::ring_setup_hint(e)
    )
}

/// `32 GiB`, `1.5 MiB`, `64 B`: bytes in the largest binary unit that keeps the number at 1
/// or more, as the command line writes sizes.
fn binary_size(bytes: u64) -> String {
    let (unit, factor) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .into_iter()
        .find(|&(_, f)| bytes >= f)
        .unwrap_or(("B", 1));
    if bytes % factor == 0 {
        format!("{} {unit}", bytes / factor)
    } else {
        format!("{:.1} {unit}", bytes as f64 / factor as f64)
    }
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    backend: Backend,
    fallback_reason: Option<String>,
    io_threads: usize,
    workers: usize,
    shared: Arc<Shared>,
    wakers: Vec<Arc<Waker>>,
    stats: Vec<Arc<Stats>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    pool: Option<Pool>,
    metrics: Option<metrics::MetricsServer>,
}

impl Server {
    /// Start building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where Prometheus metrics are served, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(metrics::MetricsServer::addr)
    }

    /// The backend that runs (`Uring` or `Poll`, never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why `auto` fell back to the readiness driver, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The one-line banner printed at start.
    pub fn banner(&self) -> String {
        format!(
            "ringport: listening on {}, backend {}, io-threads {}, workers {}",
            self.local_addr,
            self.backend,
            self.io_threads,
            if self.workers == 0 {
                "0 (inline)".to_string()
            } else {
                self.workers.to_string()
            }
        )
    }

    /// A handle that can stop the server from another thread (or a signal handler thread).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
            wakers: self.wakers.clone(),
        }
    }

    /// Counters summed over every I/O thread.
    pub fn stats(&self) -> ServerStats {
        ServerStats::collect(self.backend, &self.stats)
    }

    /// Ask the server to stop: stop accepting, flush what is owed, close.
    pub fn shutdown(&self) {
        self.shutdown_handle().shutdown();
    }

    /// Wait until every thread has exited (after [`Server::shutdown`]).
    ///
    /// # Errors
    /// The first error an I/O thread exited with.
    pub fn wait(mut self) -> io::Result<ServerStats> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("an I/O thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        if let Some(pool) = self.pool.take() {
            pool.join();
        }
        self.shared.log_unlogged_refusals();
        result.map(|()| self.stats())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
            if let Some(pool) = self.pool.take() {
                pool.join();
            }
        }
    }
}

/// Stops a server from another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
    wakers: Vec<Arc<Waker>>,
}

impl ShutdownHandle {
    /// Stop accepting, flush what is owed, close every connection, let the threads exit.
    pub fn shutdown(&self) {
        self.shared
            .shutdown
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for w in &self.wakers {
            w.force_wake();
        }
    }
}

/// A snapshot of a server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// `"uring"` or `"poll"`.
    pub backend: &'static str,
    /// Connections admitted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed.
    pub closed: u64,
    /// Connections refused by the connection cap.
    pub refused: u64,
    /// Connections closed by the idle or the send timeout.
    pub timed_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Owed output dropped because its connection closed first.
    pub discarded: u64,
    /// Accept pauses after resource exhaustion.
    pub accept_pauses: u64,
    /// io_uring buffer-ring exhaustion (ENOBUFS) events.
    pub enobufs: u64,
    /// Read pauses (output over the limit, or worker behind).
    pub read_pauses: u64,
    /// File-range bytes sent without a copy through user space (part of `bytes_out`).
    pub file_bytes: u64,
    /// Service callbacks that panicked (each closed its own connection).
    pub service_panics: u64,
    /// io_uring: connections whose sockets were entered in the ring's table of registered
    /// descriptors (none on kernels before 6.13, see [`ServerBuilder::registered_files`]).
    pub registered: u64,
    /// Failed calls by disposition name (only non-zero ones). `peer_gone` is normal traffic:
    /// clients that reset or vanish.
    pub errors: Vec<(&'static str, u64)>,
}

impl ServerStats {
    fn collect(backend: Backend, all: &[Arc<Stats>]) -> ServerStats {
        let sum = |f: fn(&Stats) -> &std::sync::atomic::AtomicU64| -> u64 {
            all.iter().map(|s| Stats::get(f(s))).sum()
        };
        let accepted = sum(|s| &s.accepted);
        let closed = sum(|s| &s.closed);
        let errors = Disposition::ALL
            .iter()
            .map(|d| {
                let n: u64 = all.iter().map(|s| Stats::get(&s.errors[d.index()])).sum();
                (d.name(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        ServerStats {
            backend: backend.name(),
            accepted,
            open: accepted.saturating_sub(closed),
            closed,
            refused: sum(|s| &s.refused),
            timed_out: sum(|s| &s.timed_out),
            bytes_in: sum(|s| &s.bytes_in),
            bytes_out: sum(|s| &s.bytes_out),
            discarded: sum(|s| &s.discarded),
            accept_pauses: sum(|s| &s.accept_pauses),
            enobufs: sum(|s| &s.enobufs),
            read_pauses: sum(|s| &s.read_pauses),
            file_bytes: sum(|s| &s.file_bytes),
            service_panics: sum(|s| &s.service_panics),
            registered: sum(|s| &s.registered),
            errors,
        }
    }

    /// The error count for a disposition.
    pub fn errors_of(&self, d: Disposition) -> u64 {
        self.errors
            .iter()
            .find(|(n, _)| *n == d.name())
            .map_or(0, |(_, c)| *c)
    }
}

impl ServerStats {
    /// Every counter as `(name, value)`, in the order printed: `failed_calls` is the total
    /// of failed calls, followed by `failed_calls.NAME` for each disposition that occurred.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = [
            ("backend", self.backend.to_string()),
            ("accepted", self.accepted.to_string()),
            ("open", self.open.to_string()),
            ("closed", self.closed.to_string()),
            ("refused", self.refused.to_string()),
            ("timed_out", self.timed_out.to_string()),
            ("bytes_in", self.bytes_in.to_string()),
            ("bytes_out", self.bytes_out.to_string()),
            ("discarded", self.discarded.to_string()),
            ("accept_pauses", self.accept_pauses.to_string()),
            ("enobufs", self.enobufs.to_string()),
            ("read_pauses", self.read_pauses.to_string()),
            ("file_bytes", self.file_bytes.to_string()),
            ("service_panics", self.service_panics.to_string()),
            ("registered", self.registered.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let failed: u64 = self.errors.iter().map(|(_, n)| n).sum();
        rows.push(("failed_calls".to_string(), failed.to_string()));
        for (name, n) in &self.errors {
            rows.push((format!("failed_calls.{name}"), n.to_string()));
        }
        rows
    }
}

/// One `name value` line per counter ([`ServerStats::rows`]), values aligned in one
/// column, no trailing newline.
impl fmt::Display for ServerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (i, (name, value)) in rows.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{name:<width$}  {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_as_aligned_name_value_lines() {
        let st = ServerStats {
            backend: "poll",
            accepted: 3,
            closed: 2,
            open: 1,
            bytes_in: 1000,
            bytes_out: 900,
            discarded: 100,
            errors: vec![("peer_gone", 2), ("exhausted", 1)],
            ..ServerStats::default()
        };
        let text = st.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 18, "{text}");
        assert_eq!(lines[0], "backend                 poll");
        assert_eq!(lines[1], "accepted                3");
        assert_eq!(lines[8], "discarded               100");
        assert_eq!(lines[14], "registered              0");
        assert_eq!(lines[15], "failed_calls            3");
        assert_eq!(lines[16], "failed_calls.peer_gone  2");
        assert_eq!(lines[17], "failed_calls.exhausted  1");
        assert!(!text.ends_with('\n'));
        let quiet = ServerStats::default().to_string();
        assert!(quiet.ends_with("\nfailed_calls    0"), "{quiet}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn refused_ring_memory_says_how_much_was_asked() {
        let cfg = DriverConfig {
            ring_buffers: 32768,
            buffer_size: 1 << 20,
            ..DriverConfig::default()
        };
        let e = io::Error::from(io::ErrorKind::OutOfMemory);
        let reason = uring_unavailable_reason(&e, &cfg);
        assert!(
            reason.starts_with(
                "io_uring unavailable: the ring asked for 32 GiB per I/O thread for its \
                 receive buffers (32768 of 1 MiB) and the kernel refused it ("
            ),
            "{reason}"
        );
        assert!(!reason.contains("MEMLOCK"), "{reason}");
        assert_eq!(binary_size(3 << 19), "1.5 MiB");
        assert_eq!(binary_size(64), "64 B");
    }

    #[test]
    #[cfg(not(target_os = "linux"))]
    fn without_io_uring_the_reason_is_one_line() {
        let e = probe_uring(&DriverConfig::default()).unwrap_err();
        assert_eq!(
            uring_unavailable_reason(&e, &DriverConfig::default()),
            "io_uring unavailable: io_uring exists only on Linux"
        );
    }
}
