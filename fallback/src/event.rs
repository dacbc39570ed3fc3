//! The contract between the I/O drivers and the worker pool.
//!
//! A driver (readiness on `polling`, or completion on io_uring) owns its sockets and their
//! write queues. It reports what happens on a connection to a [`Dispatch`], which either
//! runs the service inline or hands the events to a worker thread in batches. What a
//! service answers comes back to the driver as [`Command`]s, applied in order.
//!
//! Rules every driver follows:
//! - per connection, events are reported in order: [`Dispatch::open`], then any number of
//!   [`Dispatch::data`], [`Dispatch::drained`] and [`Dispatch::backlog`], then at most one
//!   [`Dispatch::eof`], then exactly one [`Dispatch::closed`];
//! - output is applied in command order: bytes ([`Command::Send`]) and file ranges
//!   ([`Command::SendFile`]) leave in the order they were queued;
//! - [`Dispatch::backlog`] is called with `true` when a connection's queued output goes above
//!   `output_high` while it is being read from (not while the service holds reading paused)
//!   and with `false` when it is back at or below `output_low`;
//! - after [`Command::NotifyDrained`], [`Dispatch::drained`] is called once, as soon as the
//!   connection's queued output is at or below `output_low` (at once if it already is);
//!   after [`Command::PauseUntilDrained`] too, and the connection is not read from from
//!   then until [`Command::ResumeReading`] (without a [`Dispatch::backlog`] call: its output
//!   is not over the limit); reading then resumes once queued output is at or below
//!   `output_low`;
//! - before blocking, the driver waits no longer than [`Dispatch::next_deadline`], and calls
//!   [`Dispatch::expire`] every turn;
//! - [`Dispatch::flush`] once per loop turn, after the I/O of that turn, then
//!   [`Dispatch::commands`];
//! - before blocking, [`Waker::prepare_sleep`] then [`Dispatch::ready`]: if it says work is
//!   waiting, do not block;
//! - a command whose [`ConnId`] generation does not match the live connection in that slot
//!   is dropped: a recycled slot never receives another connection's bytes.

use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::errno::Disposition;

/// Identifies one connection for its whole life: driver index, slot and generation.
///
/// Packed into 64 bits: driver (8) | generation (24) | slot (32). The generation changes
/// every time a slot is reused, so a late command for a closed connection never reaches
/// the connection that took its slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// Largest generation before it wraps.
    pub const GENERATION_MASK: u32 = (1 << 24) - 1;

    /// Builds an id. `generation` is taken modulo 2^24; `driver` must be below 256.
    pub fn new(driver: usize, slot: u32, generation: u32) -> ConnId {
        debug_assert!(driver < 256);
        ConnId(
            ((driver as u64 & 0xff) << 56)
                | ((u64::from(generation & Self::GENERATION_MASK)) << 32)
                | u64::from(slot),
        )
    }

    /// The I/O thread that owns the connection.
    pub fn driver(self) -> usize {
        (self.0 >> 56) as usize
    }

    /// The slot in that driver's connection table.
    pub fn slot(self) -> u32 {
        self.0 as u32
    }

    /// How many times the slot was used before.
    pub fn generation(self) -> u32 {
        ((self.0 >> 32) as u32) & Self::GENERATION_MASK
    }

    /// The packed value (for io_uring user data, hashing).
    pub fn raw(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from [`ConnId::raw`].
    pub fn from_raw(raw: u64) -> ConnId {
        ConnId(raw)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnId({}:{}#{})",
            self.driver(),
            self.slot(),
            self.generation()
        )
    }
}

/// Who is on the line: the addresses of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The local address the connection arrived on.
    pub local: SocketAddr,
}

impl ConnInfo {
    /// Addresses of a connection.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> ConnInfo {
        ConnInfo { peer, local }
    }

    /// What a driver reports when the socket cannot tell its addresses (the peer reset the
    /// connection between accept and the query): the unspecified IPv4 address, port 0.
    pub fn unknown() -> ConnInfo {
        let none = SocketAddr::from(([0, 0, 0, 0], 0));
        ConnInfo {
            peer: none,
            local: none,
        }
    }
}

/// A range of a file to send as a connection's output, without holding it in memory.
#[derive(Debug, Clone)]
pub struct FileRange {
    /// The open file (shared: a service may keep it open for many responses).
    pub file: Arc<File>,
    /// First byte to send.
    pub offset: u64,
    /// Bytes to send. If the file turns out shorter, the connection is closed once what
    /// there is was sent (the peer was promised more bytes than exist).
    pub len: u64,
}

/// What a service asks the driver to do with a connection. Every driver handles every
/// command (not `#[non_exhaustive]`: a new one must fail to compile until drivers know it).
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// Write these bytes after everything queued before them.
    Send(&'a [u8]),
    /// Write a file range after everything queued before it.
    SendFile(&'a FileRange),
    /// Call [`Dispatch::drained`] once queued output is at or below the low-water mark.
    NotifyDrained,
    /// As [`Command::NotifyDrained`], and read no more from the connection until
    /// [`Command::ResumeReading`] (the service holds input it will not consume before its
    /// output drains, and says when it has taken what it holds).
    PauseUntilDrained,
    /// End a pause of [`Command::PauseUntilDrained`]: read again once queued output is at
    /// or below `output_low` (nothing to do when reading was not paused so).
    ResumeReading,
    /// Exempt the connection from the idle timeout (`true`), or no longer (`false`): for a
    /// connection that waits on the server by design (a Pub/Sub subscriber), where silence
    /// is not idleness. The send timeout still applies.
    IdleExempt(bool),
    /// Write everything queued, then close the connection.
    Close,
}

/// Where a driver reports connection events and collects the answers.
///
/// Implemented by the root crate's pool (worker threads) and inline mode (services run on
/// the I/O thread).
pub trait Dispatch {
    /// A new connection was accepted.
    fn open(&mut self, conn: ConnId, info: &ConnInfo);
    /// Bytes arrived on `conn`. The slice is only valid during the call.
    fn data(&mut self, conn: ConnId, bytes: &[u8]);
    /// The peer stopped sending (read returned 0). The service may still answer.
    fn eof(&mut self, conn: ConnId);
    /// The connection is closed; no more commands for it will be applied.
    fn closed(&mut self, conn: ConnId);
    /// The output of `conn` drained to the low-water mark after [`Command::NotifyDrained`].
    fn drained(&mut self, conn: ConnId);
    /// The queued output of `conn` went above the high-water mark (`true`) or came back to
    /// the low-water mark (`false`).
    fn backlog(&mut self, conn: ConnId, over: bool);
    /// The earliest deadline the dispatch keeps (services' per-connection deadlines run on
    /// the driver's wait): the driver does not sleep past it.
    fn next_deadline(&self) -> Option<Instant>;
    /// Run what fell due by `now` (called once per driver turn).
    fn expire(&mut self, now: Instant);
    /// True while events for `conn` cannot be handed off (its worker is behind): the
    /// driver stops reading from `conn` until this turns false.
    fn congested(&self, conn: ConnId) -> bool;
    /// End of a driver turn: hand off what was buffered.
    fn flush(&mut self);
    /// Apply every command that is ready, in order, through `apply`.
    fn commands(&mut self, apply: &mut dyn FnMut(ConnId, Command<'_>));
    /// True if commands are waiting or congestion may have cleared (checked before sleep).
    fn ready(&self) -> bool;
    /// True when nothing handed off is still being worked on (used at shutdown).
    fn settled(&self) -> bool;
}

/// Wakes a driver that sleeps in its poll / ring wait.
///
/// The driver sets [`Waker::prepare_sleep`] before it blocks and [`Waker::awake`] after.
/// Other threads call [`Waker::wake`] after they queue work for it: the system call that
/// interrupts the wait is made only when the driver really sleeps.
pub struct Waker {
    sleeping: AtomicBool,
    notify: OnceLock<Box<dyn Fn() + Send + Sync>>,
    wakeups: AtomicU64,
}

impl Waker {
    /// A waker with no way to notify yet: the driver installs one with
    /// [`Waker::set_notify`] once it has built its poller or ring (on its own thread).
    /// Until then [`Waker::wake`] does nothing, which is right: the driver is not asleep.
    pub fn new() -> Arc<Waker> {
        Arc::new(Waker {
            sleeping: AtomicBool::new(false),
            notify: OnceLock::new(),
            wakeups: AtomicU64::new(0),
        })
    }

    /// A waker whose `notify` interrupts the driver's wait (`Poller::notify`, an eventfd
    /// write, ...).
    pub fn with_notify(notify: Box<dyn Fn() + Send + Sync>) -> Arc<Waker> {
        let w = Waker::new();
        w.set_notify(notify);
        w
    }

    /// Install the call that interrupts the driver's wait. Only the first call counts.
    pub fn set_notify(&self, notify: Box<dyn Fn() + Send + Sync>) {
        let _ = self.notify.set(notify);
    }

    fn notify(&self) {
        if let Some(n) = self.notify.get() {
            n();
        }
    }

    /// Called by the driver before it checks for work one last time and blocks.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Called by the driver after its wait returns (or when it decides not to block).
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Called by other threads after queueing work for the driver.
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            self.notify();
        }
    }

    /// Interrupt the wait whether or not the driver looks asleep (shutdown).
    pub fn force_wake(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        self.notify();
    }

    /// How many times the wait was interrupted.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker")
            .field("sleeping", &self.sleeping.load(Ordering::Relaxed))
            .finish()
    }
}

/// Counters kept by one driver, readable from any thread.
///
/// Both drivers keep every counter the same way. The byte counters follow what the service
/// sees: `bytes_in` is what it was handed, `bytes_out` and `discarded` split what it
/// answered into written and dropped. For a service that answers every byte it is handed
/// (echo), once the server has stopped, `bytes_in == bytes_out + discarded`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted and admitted.
    pub accepted: AtomicU64,
    /// Connections closed (any reason).
    pub closed: AtomicU64,
    /// Connections refused at once because of the connection cap.
    pub refused: AtomicU64,
    /// Connections closed by the idle or the send timeout.
    pub timed_out: AtomicU64,
    /// Bytes read from peers and handed to the service. Input read and dropped after the
    /// service asked to close, or while a connection lingers before its close, is not
    /// counted; nor is input read but not handed over before the connection closed.
    pub bytes_in: AtomicU64,
    /// Bytes of the service's output written to peers.
    pub bytes_out: AtomicU64,
    /// Bytes of the service's output never written: owed when its connection closed (peer
    /// gone, timeout, shutdown deadline; on io_uring including the unwritten rest of a send
    /// in flight), or answered after its connection was closed or asked to close.
    pub discarded: AtomicU64,
    /// Times the accept loop paused because it was out of a resource.
    pub accept_pauses: AtomicU64,
    /// io_uring receives that found the provided-buffer ring empty (ENOBUFS).
    pub enobufs: AtomicU64,
    /// Times reading from a connection was paused (output over the high-water mark or
    /// its worker behind).
    pub read_pauses: AtomicU64,
    /// File-range bytes sent without a copy through user space (`sendfile`);
    /// included in `bytes_out`.
    pub file_bytes: AtomicU64,
    /// Service callbacks that panicked (each closed its connection).
    pub service_panics: AtomicU64,
    /// io_uring: connections whose sockets were entered in the ring's table of registered
    /// descriptors.
    pub registered: AtomicU64,
    /// Failed calls, by [`Disposition::index`].
    pub errors: [AtomicU64; Disposition::ALL.len()],
}

impl Stats {
    /// Count one failed call.
    pub fn error(&self, d: Disposition) {
        self.errors[d.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Limits and sizes a driver works with. Both drivers read the same fields.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Index of this driver (goes into every [`ConnId`]).
    pub index: usize,
    /// Size of the buffer one read goes into.
    pub read_buffer: usize,
    /// Bytes read from one connection per wake before others get a turn.
    pub read_budget: usize,
    /// Connections beyond this (across the server, see [`Shared::admit`]) are accepted and
    /// closed at once.
    pub max_connections: usize,
    /// Per-connection queued output above which reading pauses.
    pub output_high: usize,
    /// Queued output below which a paused connection reads again.
    pub output_low: usize,
    /// Close a connection that sent nothing for this long while the server was ready to
    /// read from it (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose queued output made no progress for this long: a peer that
    /// stopped reading (`None`: never).
    pub send_timeout: Option<Duration>,
    /// First pause of the accept loop when out of descriptors or memory.
    pub accept_backoff_min: Duration,
    /// Longest pause of the accept loop.
    pub accept_backoff_max: Duration,
    /// How long shutdown waits for owed output before closing anyway.
    pub shutdown_grace: Duration,
    /// After an orderly close (output written, write side shut down), how long input is
    /// still read and discarded waiting for the peer's EOF, so that closing with unread
    /// input does not reset the connection and destroy output the peer has not read yet.
    pub linger: Duration,
    /// io_uring: provided buffers per ring (a power of two).
    pub ring_buffers: u16,
    /// io_uring: size of each provided buffer.
    pub buffer_size: u32,
    /// io_uring: submission queue entries.
    pub ring_entries: u32,
    /// io_uring: while an I/O thread is busy (over 60% of the last 10 ms on the CPU), its
    /// waits hold out this long for a fuller batch of completions before returning with
    /// what they have (`min_wait`, Linux 6.12 and later; zero: return at the first
    /// completion). A request after an idle spell is never held back.
    pub batch_wait: Duration,
    /// io_uring: slots of the ring's table of registered descriptors (at most the
    /// open-files limit and `max_connections`; none before Linux 6.13): a connection in a
    /// slot below it has its socket entered there, and its receives and sends name the
    /// slot, which spares the kernel a descriptor lookup per request. Connections past it
    /// use their descriptors.
    pub registered_files: u32,
    /// The listener is one socket shared by every I/O thread (passed in by socket
    /// activation), not one per thread: io_uring then asks for one connection at a time, so
    /// that the threads' rings take turns at it (a multishot accept would leave every
    /// connection to the ring that armed first).
    pub shared_listener: bool,
    /// Scripted failures at the drivers' choke points (tests only).
    #[cfg(feature = "fault-injection")]
    pub faults: Option<Arc<crate::fault::FaultPlan>>,
}

impl DriverConfig {
    /// How often connections are checked against the idle and send timeouts (`None` when
    /// both are off): a quarter of the shorter one, between 10 ms and 1 s.
    pub fn scan_period(&self) -> Option<Duration> {
        [self.idle_timeout, self.send_timeout]
            .into_iter()
            .flatten()
            .map(|t| (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)))
            .min()
    }
}

/// Log a failed call that the classifier calls a bug, at most as often as `limit` allows.
pub fn log_fatal(limit: &mut LogLimit, what: &str, id: ConnId, e: &std::io::Error) {
    if let Some(suppressed) = limit.allow() {
        tracing::error!(
            "BUG: {what} on {id:?} failed: {e}; closing that connection \
             ({suppressed} similar lines suppressed)"
        );
    }
}

impl DriverConfig {
    /// The fault plan, if one is set (always `None` without the `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    pub fn fault_plan(&self) -> Option<&crate::fault::FaultPlan> {
        self.faults.as_deref()
    }
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            index: 0,
            read_buffer: 64 * 1024,
            read_budget: 256 * 1024,
            max_connections: 100_000,
            output_high: 1024 * 1024,
            output_low: 256 * 1024,
            idle_timeout: None,
            send_timeout: Some(Duration::from_secs(60)),
            accept_backoff_min: Duration::from_millis(10),
            accept_backoff_max: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            linger: Duration::from_secs(2),
            ring_buffers: 256,
            buffer_size: 16 * 1024,
            ring_entries: 1024,
            batch_wait: Duration::from_micros(30),
            registered_files: 16_384,
            shared_listener: false,
            #[cfg(feature = "fault-injection")]
            faults: None,
        }
    }
}

/// State shared by every thread of one server.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set once to ask every driver to stop accepting, flush and exit.
    pub shutdown: AtomicBool,
    /// Connections open across all drivers (for the connection cap).
    open: AtomicUsize,
    /// When a refused connection was last logged (milliseconds after [`log_epoch`], plus
    /// one; 0: never), and how many were refused since without a line.
    refused_logged_ms: AtomicU64,
    refused_unlogged: AtomicU64,
}

impl Shared {
    /// Take a place for a new connection if fewer than `max` are open across the server.
    /// Every `true` must be matched by one [`Shared::release`] when that connection closes.
    pub fn admit(&self, max: usize) -> bool {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Give back the place of a closed connection.
    pub fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Count a connection refused over the cap (`max`) in `stats`, and log it: at most one
    /// line a second across the whole server, saying how many were refused since the last.
    pub fn refused(&self, stats: &Stats, max: usize) {
        Stats::add(&stats.refused, 1);
        self.refused_unlogged.fetch_add(1, Ordering::Relaxed);
        let now = log_epoch().elapsed().as_millis() as u64 + 1;
        let last = self.refused_logged_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .refused_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let n = self.refused_unlogged.swap(0, Ordering::Relaxed).max(1);
            tracing::warn!(
                "{n} connection(s) refused: {max} open, the --max-connections cap \
                 (at most one such line a second)"
            );
        }
    }

    /// Log the refusals that came after the last such line (at the end of serving: a burst
    /// shorter than a second would otherwise be counted but never logged).
    pub fn log_unlogged_refusals(&self) {
        let n = self.refused_unlogged.swap(0, Ordering::Relaxed);
        if n > 0 {
            tracing::warn!(
                "{n} more connection(s) refused over the --max-connections cap since the last \
                 such line"
            );
        }
    }

    /// True once shutdown was requested.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// The instant rate-limited server-wide log lines count from.
fn log_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A connection's idle clock: when the driver last saw it read (or chose not to count the
/// time since), or that its service exempted it from the idle timeout
/// ([`Command::IdleExempt`]). As small as an `Instant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleClock {
    /// Counting from this instant.
    Since(Instant),
    /// Exempt: never idle.
    Exempt,
}

impl IdleClock {
    /// Input arrived, or the time until `now` does not count: count from `now` (an exempt
    /// connection stays exempt).
    pub fn reset(&mut self, now: Instant) {
        if let IdleClock::Since(t) = self {
            *t = now;
        }
    }

    /// Exempt the connection (`true`), or count again from `now` (`false`).
    pub fn exempt(&mut self, exempt: bool, now: Instant) {
        *self = if exempt {
            IdleClock::Exempt
        } else {
            IdleClock::Since(now)
        };
    }

    /// Whether the connection has been idle for `timeout` by `now`.
    pub fn expired(&self, now: Instant, timeout: Duration) -> bool {
        matches!(self, IdleClock::Since(t) if now.duration_since(*t) >= timeout)
    }
}

/// Accept-loop pause after running out of a resource: starts at `min`, doubles up to `max`,
/// resets on the next successful accept.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The pause to take now; the next one is twice as long (up to the maximum).
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Back to the shortest pause.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Log that the shutdown grace ran out with `open` connections of one I/O thread still
/// open: they are closed, and what they were still owed is dropped (counted as
/// `discarded`).
pub fn warn_grace_over(grace: Duration, open: usize) {
    if open > 0 {
        tracing::warn!(
            "shutdown grace ({grace:?}) is over: closing {open} connection(s) still open, \
             dropping what they were still owed"
        );
    }
}

/// Rate limit for log lines: at most one per `every`.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(n)` when a line may be printed now (`n` lines were suppressed since
    /// the last one), `None` when it must be dropped.
    pub fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_round_trips() {
        let id = ConnId::new(7, 123_456, 99);
        assert_eq!(id.driver(), 7);
        assert_eq!(id.slot(), 123_456);
        assert_eq!(id.generation(), 99);
        assert_eq!(ConnId::from_raw(id.raw()), id);
        let wrapped = ConnId::new(0, 1, ConnId::GENERATION_MASK + 1);
        assert_eq!(wrapped.generation(), 0);
        assert_ne!(ConnId::new(0, 1, 1), ConnId::new(0, 1, 2));
        assert_ne!(ConnId::new(0, 1, 1), ConnId::new(1, 1, 1));
    }

    #[test]
    fn admission_is_capped_across_threads() {
        let shared = Shared::default();
        assert!(shared.admit(2));
        assert!(shared.admit(2));
        assert!(!shared.admit(2));
        shared.release();
        assert!(shared.admit(2));
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        assert_eq!(b.step(), Duration::from_millis(10));
        assert_eq!(b.step(), Duration::from_millis(20));
        assert_eq!(b.step(), Duration::from_millis(40));
        assert_eq!(b.step(), Duration::from_millis(50));
        assert_eq!(b.step(), Duration::from_millis(50));
        b.reset();
        assert_eq!(b.step(), Duration::from_millis(10));
    }

    #[test]
    fn log_limit_suppresses_within_period() {
        let mut l = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let mut l = LogLimit::new(Duration::ZERO);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
    }

    #[test]
    fn waker_notifies_only_a_sleeper() {
        use std::sync::atomic::AtomicUsize;
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let w = Waker::with_notify(Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        w.wake();
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        w.prepare_sleep();
        w.wake();
        w.wake();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(w.wakeups(), 1);
    }
}
