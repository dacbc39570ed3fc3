//! The io_uring completion driver (Linux only).
//!
//! # How it meets the contract
//!
//! It has the observable behaviour of the readiness driver (`ringport_fallback::driver`),
//! reached by completions instead of readiness:
//!
//! - One driver per I/O thread, built on that thread: its ring is set up with
//!   `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel allows it (then `COOP_TASKRUN`, then no
//!   flag: see `ring::build`), so completions are run only when this thread waits. Other
//!   threads reach it through the [`Dispatch`]'s channels and the [`Waker`], whose notify
//!   writes an eventfd that always has a read armed in the ring.
//! - Listener: one multishot accept, re-armed whenever a completion comes without `MORE`.
//!   `SkipPeer` errors (anything about one pending peer, such as a connection reset while it
//!   waited in the backlog) go on and never pause accepting; `Exhausted` (out of descriptors
//!   or memory), or a failure of the listener itself (`Fatal`), cancels the multishot and
//!   pauses accepting with a doubling [`Backoff`], logged at most once a second. Over `max_connections` open across the server (all I/O
//!   threads, counted in [`Shared`]), a connection is accepted and closed at once.
//! - Reads: one multishot receive per connection, selecting buffers from a provided-buffer
//!   ring (`buf_ring`). Bytes are copied out to [`Dispatch::data`] and the buffer goes back
//!   to the ring at once. An empty ring (`ENOBUFS`, `Exhausted` at `Site::BufferRing`) ends
//!   the multishot without losing data (it stays in the socket): it is counted and re-armed
//!   after this turn's completions gave their buffers back. A result of 0 is EOF.
//! - Reading stops (the receive is cancelled) while the connection's worker is congested
//!   (bytes that still arrive before the cancel completes are held and handed over, in
//!   order, once it caught up), once the service asked to close, and at shutdown. While
//!   queued output is over `output_high` (until it drains below `output_low`) the receive
//!   stays armed until input arrives: most peers wait for their answer before they send
//!   more, and a cancel at once would cost a new receive once the output drains. Input (or
//!   EOF) that does arrive then is held, as for a congested worker, the receive is
//!   cancelled, and what is held is handed over once the output drained.
//! - Writes (`send`): one output request in flight per connection. Output that arrives
//!   meanwhile is coalesced into a second buffer; a short send resubmits the rest. The
//!   in-flight buffer is never touched until its completion. A file range goes out in its
//!   place among the bytes by `sendfile(2)` on the (then non-blocking) socket, 1 MiB per
//!   connection and turn at most, and a one-shot `POLL_ADD` for `POLLOUT` waits while the
//!   socket is full: io_uring has no sendfile, and its splice always runs on io-wq worker
//!   threads, which cost more CPU per byte than the direct call. When queued output
//!   crosses `output_high` or falls back to `output_low`, [`Dispatch::backlog`] says so; a
//!   connection that asked for it gets [`Dispatch::drained`] once at or below
//!   `output_low`.
//! - Orderly close (the service's `Close` once its output is written, and every connection
//!   at shutdown): the write side is shut down, then the connection lingers: input is read
//!   and discarded (never handed to the dispatch) until the peer's EOF, an error, or
//!   `linger` (at shutdown, never past the grace period), whatever paused reading before.
//!   Only then is it closed, so unread input does not make the close a reset that destroys
//!   output the peer has not read yet. Aborts (peer gone, a failed call, idle timeout)
//!   close at once.
//! - Close: with operations in flight, an `AsyncCancel` of everything on the descriptor;
//!   the descriptor is closed only after the last completion of that connection (and of the
//!   cancel itself), so its number cannot be reused under a pending request. `user_data`
//!   carries the slot's generation: a completion for an older connection in a slot is never
//!   applied to the new one. [`Dispatch::closed`] is called exactly once per connection,
//!   at its final close.
//! - Idle timeout: a connection that sent nothing for `idle_timeout` while the driver was
//!   ready to read from it is closed; while reading is paused by the driver itself (output
//!   over the limit, worker behind, buffer ring empty, close asked, shutdown) or by the
//!   service, the clock does not run, nor for a connection the service exempted
//!   (`IdleExempt`). Send timeout: a connection whose queued output made no progress (no send wrote
//!   anything) for `send_timeout` is closed, a peer that stopped reading, including one whose
//!   service asked to close. Neither applies while a connection lingers (the linger
//!   deadline bounds that). Both count as `timed_out`.
//! - Idle and send timeouts, linger deadlines, accept backoff, wake re-arm, shutdown polling
//!   and the services' deadlines ([`Dispatch::next_deadline`], [`Dispatch::expire`]) use the
//!   timeout of the ring wait (`io_uring_enter` with `EXT_ARG`), no timer thread.
//! - A wake read that fails for lack of a resource is re-armed after a short backoff; only a
//!   `Fatal` failure turns the driver to polling every 10 ms. A ring wait that fails for good
//!   closes every connection (each reported closed), requests shutdown of the whole server
//!   through [`Shared`] and returns the error.
//! - Every failed call or completion goes through the classifier
//!   ([`ringport_fallback::errno`]); this module never compares errno values. A failing
//!   operation is never re-armed in a tight loop.
//! - Every accept, receive and send result passes one choke point (`choke`) before it is
//!   used; with the `fault-injection` feature a test can script failures there.
//!
//! # Memory the kernel uses
//!
//! The provided buffers, the eventfd read buffer and every in-flight send buffer must stay
//! valid until the kernel is done with them. Connections are freed only after their last
//! completion, and at exit every remaining request is cancelled and its completion awaited
//! (`inflight == 0`): that is what makes freeing the memory safe. Closing the ring alone
//! would not: the kernel tears down a closed ring's requests asynchronously, after
//! `close(2)` returned. So if exit gives up waiting with requests still in flight, the
//! provided-buffer ring, the wake buffer and the in-flight send buffers are leaked, not
//! freed (see the `Drop` of [`UringDriver`]). Exit waits at most one `DRAIN_LIMIT` in all
//! after the shutdown grace period.

#![deny(clippy::undocumented_unsafe_blocks)]

mod accept;
mod buf_ring;
mod choke;
mod close;
mod recv;
mod ring;
mod send;

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use ringport_fallback::errno::{
    classify, from_completion, is_out_of_descriptors, Disposition, Site,
};
use ringport_fallback::event::{log_fatal, warn_grace_over, Backoff, IdleClock, LogLimit};
use ringport_fallback::net::{prepare_stream, AcceptDefaults};
use ringport_fallback::outq::FileQueue;
use ringport_fallback::{Command, ConnId, ConnInfo, Dispatch, DriverConfig, Shared, Stats, Waker};

use buf_ring::BufRing;
use choke::Injected;

/// Longest a send request asks for at once.
const MAX_SEND: usize = 1 << 30;
/// Held input handed to a worker at once when its congestion clears (the readiness driver
/// reads this much between two congestion checks).
const HELD_CHUNK: usize = 64 * 1024;
/// How long exit waits for cancelled requests to complete (closing the connections and
/// draining the ring share it: see [`UringDriver::run`]).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// First and longest pause before the wake read is re-armed after it failed for lack of a
/// resource (meanwhile the wait times out at the retry, so nothing waits on a lost wake).
const WAKE_RETRY_MIN: Duration = Duration::from_millis(5);
const WAKE_RETRY_MAX: Duration = Duration::from_millis(100);

/// What a request is, kept in the top byte of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Wake = 2,
    Recv = 3,
    Send = 4,
    /// Cancel of everything on a connection's descriptor (close).
    CancelConn = 5,
    /// Cancel of a connection's receive (stop reading).
    CancelRecv = 6,
    /// Any other cancel (accept, exit).
    Cancel = 7,
    /// Wait for room in the socket to send the rest of a file range.
    FileReady = 8,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Wake,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::CancelConn,
            6 => Op::CancelRecv,
            7 => Op::Cancel,
            8 => Op::FileReady,
            _ => return None,
        })
    }
}

/// `user_data`: op (8 bits) | generation (24) | slot (32), like [`ConnId`] with the op in
/// place of the driver index.
fn user_data(op: Op, generation: u32, slot: u32) -> u64 {
    (u64::from(op as u8) << 56)
        | (u64::from(generation & ConnId::GENERATION_MASK) << 32)
        | u64::from(slot)
}

fn decode(ud: u64) -> (Option<Op>, u32, u32) {
    (
        Op::from_u8((ud >> 56) as u8),
        ((ud >> 32) as u32) & ConnId::GENERATION_MASK,
        ud as u32,
    )
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseWhy {
    /// Orderly: the service finished, output written.
    Done,
    /// The peer is gone or a call failed: drop queued output.
    Abort,
    /// Idle timeout.
    Idle,
}

struct Conn {
    id: ConnId,
    stream: TcpStream,
    /// The buffer of the send in flight: `sending[send_pos..]` is not yet written. Never
    /// touched while `send_busy`.
    sending: Vec<u8>,
    send_pos: usize,
    send_busy: bool,
    /// The error the send in flight was scripted to fail with (fault injection only).
    send_fault: choke::ScriptedSend,
    /// Output that arrived while a send was in flight, coalesced.
    pending: Vec<u8>,
    /// File ranges queued, each behind the byte `at` of `pending`.
    files: FileQueue,
    /// The descriptor is entered in the ring's table at the connection's slot.
    fixed: bool,
    /// The socket was made non-blocking (for `sendfile`, at its first file range).
    nonblocking: bool,
    /// The service asked to be told when output drains to the low-water mark.
    want_drained: bool,
    /// A multishot receive is in flight (until a completion without `MORE`).
    recv_armed: bool,
    /// Its cancel was requested.
    recv_cancel: bool,
    /// The close-time cancel is in flight.
    cancel_busy: bool,
    /// The peer sent EOF.
    read_eof: bool,
    /// The service asked to close once the output is written.
    closing: bool,
    /// Reading paused: queued output is over the high-water mark (`over_limit`), or the
    /// service holds it (`hold_reading`).
    out_paused: bool,
    /// The pause is for output over the high-water mark (reported as a backlog).
    over_limit: bool,
    /// The service paused reading (`PauseUntilDrained`) and has not yet said to go on
    /// (`ResumeReading`): the pause outlasts the drain.
    hold_reading: bool,
    /// Reading paused, with input held: the connection's worker is behind, or input arrived
    /// while reading was paused for output.
    stalled: bool,
    /// The buffer ring ran dry under its receive: waiting in `starved` for a re-arm.
    starved: bool,
    /// Input received while the worker was congested or output over the limit (before the
    /// cancel took effect), handed over once neither holds. Boxed: most connections never
    /// hold any, and every open connection carries this field.
    held: Option<Box<Held>>,
    /// Queued for the end-of-turn pass.
    dirty: bool,
    /// Being closed: waiting for its requests to complete.
    dying: Option<CloseWhy>,
    /// Lingering until this deadline: the output is written and the write side shut down;
    /// input is read and discarded until the peer's EOF, then the connection closes.
    linger_until: Option<Instant>,
    /// Since when the connection is idle: bytes arrived, or reading resumed after a pause;
    /// or exempt (idle timeout).
    last_read: IdleClock,
    /// Last time queued output made progress, or output was queued on an empty queue
    /// (send timeout).
    last_write: Instant,
}

/// Input held while reading is paused: `bytes[pos..]` is not handed over yet.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    pos: usize,
    /// EOF arrived behind the held bytes.
    eof: bool,
}

impl Held {
    fn pending(&self) -> bool {
        self.bytes.len() > self.pos
    }
}

impl Conn {
    /// The connection's descriptor (owned by `stream`).
    fn fd(&self) -> Fd {
        Fd(self.stream.as_raw_fd())
    }

    /// How a receive or send names the socket: its slot in the ring's table with
    /// `FIXED_FILE` when it is entered there, else its descriptor. (A cancel by descriptor
    /// finds requests that name the slot too: both resolve to the same open file.)
    fn file(&self) -> (Fd, squeue::Flags) {
        if self.fixed {
            (Fd(self.id.slot() as i32), squeue::Flags::FIXED_FILE)
        } else {
            (self.fd(), squeue::Flags::empty())
        }
    }

    fn queued(&self) -> usize {
        let file = usize::try_from(self.files.bytes()).unwrap_or(usize::MAX);
        ((self.sending.len() - self.send_pos) + self.pending.len()).saturating_add(file)
    }

    fn busy(&self) -> bool {
        self.recv_armed || self.send_busy || self.cancel_busy
    }

    fn wants_recv(&self, stopping: bool) -> bool {
        if self.linger_until.is_some() {
            // Lingering: read (and discard) until EOF, whatever paused reading before.
            return !self.read_eof && self.dying.is_none() && !self.starved;
        }
        // Paused for output, a receive that is armed stays armed (see `update_recv`).
        !self.read_eof
            && !self.closing
            && self.dying.is_none()
            && !self.stalled
            && !self.starved
            && !stopping
    }
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// The completion driver for one I/O thread.
pub struct UringDriver {
    // The memory requests may point into — the provided buffers (`bufs`), the eventfd read
    // buffer (`wake_buf`) and the send buffers of the connections (`slots`, `graveyard`) —
    // may be freed only once no request is in flight (`inflight == 0`, which `drain_all`
    // waits for). Closing the ring is not enough: `io_uring` tears down the requests of a
    // closed ring asynchronously, after `close(2)` returned. When requests are still in
    // flight at drop (the exit drain timed out, or the ring wait failed), `Drop` leaks that
    // memory instead of freeing it. The ring is still declared first (dropped first), so no
    // new request can ever be submitted into memory that is going away.
    ring: IoUring,
    bufs: BufRing,
    wake_buf: Box<UnsafeCell<[u8; 8]>>,
    slots: Vec<Slot>,
    /// Connections given up at exit with requests still in flight: freed after the ring
    /// (their in-flight send buffers leaked if the requests never completed, see `Drop`).
    graveyard: Vec<Conn>,
    eventfd: Arc<File>,
    listener: Option<TcpListener>,
    /// What its connections share with the listener.
    accept: AcceptDefaults,
    accept_armed: bool,
    cfg: DriverConfig,
    waker: Arc<Waker>,
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    free: Vec<u32>,
    open: usize,
    dirty: Vec<u32>,
    stalled: Vec<u32>,
    /// Connections whose receive ended on an empty buffer ring, re-armed in order, at most
    /// `ring_buffers` per turn: re-arming all of them at once would have most fail again.
    starved: VecDeque<(u32, u32)>,
    /// Entries that did not fit in the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Requests submitted whose last completion has not come yet.
    inflight: usize,
    /// Length of the ring's table of registered descriptors: a connection in a slot below
    /// it is entered in the table at admission, and its receives and sends name it by
    /// slot (the kernel then skips looking the descriptor up and counting a reference to
    /// its file on every request). 0 when the table could not be registered.
    fixed_files: u32,
    cqes: Vec<(u64, i32, u32)>,
    wake_armed: bool,
    /// The eventfd read failed for good (`Fatal`): wait with a short timeout instead.
    wake_broken: bool,
    /// The eventfd read failed for lack of a resource: re-armed at this time.
    wake_retry_at: Option<Instant>,
    wake_backoff: Backoff,
    /// Connections lingering after an orderly close (slot, generation); entries for
    /// connections that closed since are dropped at the next linger check.
    lingering: Vec<(u32, u32)>,
    exiting: bool,
    /// Events were handed to the dispatch after this turn's first flush.
    handed_late: bool,
    /// A connection holding input came out of its pause for output this turn: the next
    /// turn (which then does not wait) hands the input over.
    resume_due: bool,
    backoff: Backoff,
    accept_paused_until: Option<Instant>,
    accept_log: LogLimit,
    fatal_log: LogLimit,
    next_idle_scan: Option<Instant>,
    stopping_since: Option<Instant>,
    now: Instant,
    /// [`DriverConfig::batch_wait`] in microseconds; 0 when off or the kernel cannot.
    batch_wait: u32,
    /// Receive and accept completions the last reap handled.
    last_reaped: usize,
    /// How busy this thread has been lately (whether waits batch).
    load: Load,
}

/// Completions a batched wait ([`DriverConfig::batch_wait`]) returns at once for.
const WAIT_BATCH: usize = 64;
/// Share of a load window a thread must spend on the CPU for its waits to batch.
const BUSY_SHARE: f64 = 0.6;
/// Length of a load window.
const LOAD_WINDOW: Duration = Duration::from_millis(10);

/// The CPU time a thread used over the last load window, against the wall clock.
struct Load {
    since: Instant,
    cpu_since: Duration,
    /// The last full window was over `BUSY_SHARE`.
    busy: bool,
}

impl Load {
    fn new(now: Instant) -> Load {
        Load {
            since: now,
            cpu_since: thread_cpu(),
            busy: false,
        }
    }

    /// Close the window once it is `LOAD_WINDOW` long (one clock read per window).
    fn update(&mut self, now: Instant) {
        if now.saturating_duration_since(self.since) >= LOAD_WINDOW {
            self.close_window(now, thread_cpu());
        }
    }

    /// Judge the window that ends at `now`, when the thread's CPU time is `cpu`.
    fn close_window(&mut self, now: Instant, cpu: Duration) {
        let wall = now.saturating_duration_since(self.since);
        self.busy =
            cpu.saturating_sub(self.cpu_since).as_secs_f64() >= BUSY_SHARE * wall.as_secs_f64();
        self.since = now;
        self.cpu_since = cpu;
    }
}

/// CPU time of the calling thread (user and system).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl UringDriver {
    /// Build the ring and its buffer ring, arm accepting on `listener` and the wake read.
    /// Call it on the thread that will [`run`](UringDriver::run) the driver: the ring may be
    /// set up for a single issuer. `waker` gets this driver's notify (an eventfd write).
    ///
    /// # Errors
    /// Ring setup failures, classified by the caller with `Site::RingSetup`.
    pub fn new(
        listener: TcpListener,
        cfg: DriverConfig,
        stats: Arc<Stats>,
        shared: Arc<Shared>,
        waker: Arc<Waker>,
    ) -> io::Result<UringDriver> {
        let bufs = BufRing::new(cfg.ring_buffers, cfg.buffer_size, 0)?;
        let (ring, _flavor) = ring::build(cfg.ring_entries)?;
        ring::check_features(&ring)?;
        bufs.register(&ring)?;
        let fixed_files = ring::file_table(&ring, &cfg);
        let batch_wait = if ring.params().is_feature_min_timeout() {
            u32::try_from(cfg.batch_wait.as_micros()).unwrap_or(u32::MAX)
        } else {
            0
        };
        let eventfd = Arc::new(ring::eventfd()?);
        let accept = AcceptDefaults::of(&listener);
        let notify = eventfd.clone();
        waker.set_notify(Box::new(move || {
            // A failed write means the counter is saturated (a wake is pending anyway) or
            // the driver is gone.
            let _ = (&*notify).write(&1u64.to_ne_bytes());
        }));
        let mut d = UringDriver {
            ring,
            bufs,
            wake_buf: Box::new(UnsafeCell::new([0; 8])),
            slots: Vec::new(),
            graveyard: Vec::new(),
            eventfd,
            listener: Some(listener),
            accept,
            accept_armed: false,
            backoff: Backoff::new(cfg.accept_backoff_min, cfg.accept_backoff_max),
            cfg,
            waker,
            stats,
            shared,
            free: Vec::new(),
            open: 0,
            dirty: Vec::new(),
            stalled: Vec::new(),
            starved: VecDeque::new(),
            backlog: VecDeque::new(),
            inflight: 0,
            fixed_files,
            cqes: Vec::new(),
            wake_armed: false,
            wake_broken: false,
            wake_retry_at: None,
            wake_backoff: Backoff::new(WAKE_RETRY_MIN, WAKE_RETRY_MAX),
            lingering: Vec::new(),
            exiting: false,
            handed_late: false,
            resume_due: false,
            accept_paused_until: None,
            accept_log: LogLimit::new(Duration::from_secs(1)),
            fatal_log: LogLimit::new(Duration::from_secs(1)),
            next_idle_scan: None,
            stopping_since: None,
            now: Instant::now(),
            batch_wait,
            last_reaped: 0,
            load: Load::new(Instant::now()),
        };
        d.arm_wake();
        d.arm_accept();
        Ok(d)
    }

    /// Build a ring with the flags and buffer ring `cfg` asks for, then drop it: tells
    /// whether this kernel and its policy allow io_uring.
    ///
    /// # Errors
    /// The setup error; classify it with `Site::RingSetup`.
    pub fn probe(cfg: &DriverConfig) -> io::Result<()> {
        let bufs = BufRing::new(cfg.ring_buffers, cfg.buffer_size, 0)?;
        let (ring, _flavor) = ring::build(cfg.ring_entries)?;
        let checked = ring::check_features(&ring).and_then(|()| bufs.register(&ring));
        // The ring goes before the buffer ring it may have registered.
        drop(ring);
        drop(bufs);
        checked
    }

    /// Run until shutdown is requested through [`Shared`] and every connection is closed
    /// (or the shutdown grace period ran out). Exit then takes at most one `DRAIN_LIMIT`
    /// more, shared by closing the connections and waiting for the ring's requests.
    ///
    /// # Errors
    /// Returns the error of a ring wait that failed for a reason other than an interrupt,
    /// a timeout or a completion backlog. Every connection of this driver is closed first
    /// (each reported to [`Dispatch::closed`]) and shutdown is requested through
    /// [`Shared`], so the whole server stops instead of running on without this thread.
    pub fn run<D: Dispatch>(mut self, dispatch: &mut D) -> io::Result<()> {
        if let Some(t) = self.cfg.scan_period() {
            self.next_idle_scan = Some(Instant::now() + t);
        }
        loop {
            if self.shared.stopping() && self.stopping_since.is_none() {
                self.begin_shutdown();
            }
            if let Some(since) = self.stopping_since {
                // One deadline for everything exit still waits for.
                let last = since + self.cfg.shutdown_grace + DRAIN_LIMIT;
                if self.open == 0 && dispatch.settled() {
                    self.drain_all(dispatch, (self.now + DRAIN_LIMIT).min(last));
                    return Ok(());
                }
                if self.now.duration_since(since) >= self.cfg.shutdown_grace {
                    warn_grace_over(self.cfg.shutdown_grace, self.open);
                    self.close_all(dispatch, last);
                    self.drain_all(dispatch, last);
                    dispatch.flush();
                    return Ok(());
                }
            }

            let timeout = self.timeout(dispatch.next_deadline());
            self.waker.prepare_sleep();
            let resume_due = std::mem::take(&mut self.resume_due);
            let timeout = if dispatch.ready() || resume_due {
                Some(Duration::ZERO)
            } else {
                timeout
            };
            let waited = self.wait(timeout);
            self.waker.awake();
            self.now = Instant::now();
            self.load.update(self.now);
            if let Err(e) = waited {
                self.fail(&e, dispatch);
                return Err(e);
            }

            self.reap(dispatch);
            self.timers(dispatch);
            self.end_turn(dispatch);
        }
    }

    /// Submit what is queued and wait for one completion or `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.flush_backlog();
        // A busy thread (over `BUSY_SHARE` of the last load window on the CPU) that just
        // handled new requests waits up to `batch_wait` for a fuller batch, then returns
        // with whatever came (at once if the batch fills): a wake-up costs more than the
        // requests it brings in, so fewer, fuller turns serve the same load with less CPU.
        // A thread with time to spare returns at the first completion. Either way a
        // request that comes after an idle spell is not held back: the wait began more
        // than `batch_wait` before it.
        let batch = self.batch_wait > 0
            && self.load.busy
            && self.last_reaped > 0
            && timeout != Some(Duration::ZERO);
        let (want, min_wait) = if batch {
            (WAIT_BATCH, self.batch_wait)
        } else {
            (1, 0)
        };
        let result = match timeout {
            None if !batch => self.ring.submit_and_wait(1),
            timeout => {
                // No deadline: an hour, after which the loop simply goes round again.
                let ts = Timespec::from(timeout.unwrap_or(Duration::from_secs(3600)));
                let args = SubmitArgs::new().timespec(&ts).min_wait_usec(min_wait);
                self.ring.submitter().submit_with_args(want, &args)
            }
        };
        let Err(e) = result else {
            return Ok(());
        };
        match classify(Site::Wait, &e) {
            // The wait's own timeout ran out, or it was interrupted: go round again.
            Disposition::Expired | Disposition::Retry => Ok(()),
            // A completion backlog (EBUSY) or no memory for the submission (EAGAIN, ENOMEM):
            // reap what completed, which frees both, and go round again.
            d @ (Disposition::Exhausted | Disposition::WouldBlock) => {
                self.stats.error(d);
                Ok(())
            }
            d => {
                self.stats.error(d);
                Err(e)
            }
        }
    }

    /// Queue one request. The memory it points to must stay valid until its last completion.
    fn push(&mut self, entry: squeue::Entry) {
        self.inflight += 1;
        if self.backlog.is_empty() && self.try_push(&entry) {
            return;
        }
        // The submission queue is full: hand it to the kernel, then try once more; what
        // still does not fit waits in order for the next wait.
        let _ = self.ring.submit();
        if self.backlog.is_empty() && self.try_push(&entry) {
            return;
        }
        self.backlog.push_back(entry);
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every entry pushed here points only at memory that outlives its request:
        // provided buffers and the wake buffer live as long as the driver, and at drop are
        // freed only when no request is in flight (else leaked: see `Drop`); a send buffer
        // belongs to its connection, which is not freed before the send's completion (a
        // connection given up at exit goes to the graveyard, whose in-flight send buffers
        // are likewise leaked unless every request completed); a connection's descriptor
        // stays open until its requests completed, or is held by the kernel's own reference
        // to the file for a request still in flight at exit.
        unsafe { self.ring.submission().push(entry).is_ok() }
    }

    fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.front() {
            let entry = entry.clone();
            if !self.try_push(&entry) {
                let _ = self.ring.submit();
                if !self.try_push(&entry) {
                    return;
                }
            }
            self.backlog.pop_front();
        }
    }

    fn timeout(&self, service_deadline: Option<Instant>) -> Option<Duration> {
        let mut deadline: Option<Instant> = self.accept_paused_until;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        consider(self.next_idle_scan);
        consider(service_deadline);
        consider(self.stopping_since.map(|s| s + self.cfg.shutdown_grace));
        if self.stopping_since.is_some() {
            // Poll the workers' progress while draining for shutdown.
            consider(Some(self.now + Duration::from_millis(20)));
        }
        if self.wake_broken {
            consider(Some(self.now + Duration::from_millis(10)));
        }
        consider(self.wake_retry_at);
        consider(self.next_linger_deadline());
        if !self.starved.is_empty() {
            // Starved receives wait for their turn, not for an event.
            consider(Some(self.now));
        }
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Handle every completion that is ready.
    fn reap<D: Dispatch>(&mut self, dispatch: &mut D) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        // New work only: received bytes and accepted connections (the completions of our own
        // sends say nothing about load).
        self.last_reaped = 0;
        for &(ud, res, flags) in &cqes {
            let more = cqueue::more(flags);
            if !more {
                self.inflight = self.inflight.saturating_sub(1);
            }
            let (op, generation, slot) = decode(ud);
            self.last_reaped += usize::from(matches!(op, Some(Op::Recv | Op::Accept)));
            match op {
                Some(Op::Accept) => self.on_accept(res, more, dispatch),
                Some(Op::Wake) => self.on_wake(res),
                Some(Op::Recv) => self.on_recv(slot, generation, res, flags, dispatch),
                Some(Op::Send) => self.on_send(slot, generation, res, dispatch),
                Some(Op::FileReady) => self.on_file_ready(slot, generation, res, dispatch),
                Some(Op::CancelConn) => self.on_close_cancel(slot, generation, res, dispatch),
                Some(Op::CancelRecv) => self.on_recv_cancel(slot, generation, res),
                // Accept or exit cancels: the cancelled requests report themselves.
                Some(Op::Cancel) => self.on_cancel(res),
                None => {}
            }
        }
        self.cqes = cqes;
    }

    fn arm_wake(&mut self) {
        if self.wake_armed || self.exiting || self.wake_broken || self.wake_retry_at.is_some() {
            return;
        }
        let entry = opcode::Read::new(Fd(self.eventfd.as_raw_fd()), self.wake_buf.get().cast(), 8)
            .build()
            .user_data(user_data(Op::Wake, 0, 0));
        self.wake_armed = true;
        self.push(entry);
    }

    fn on_wake(&mut self, res: i32) {
        self.wake_armed = false;
        if res >= 0 {
            self.wake_backoff.reset();
        } else {
            let e = from_completion(res);
            match classify(Site::Wake, &e) {
                Disposition::Canceled | Disposition::Retry | Disposition::WouldBlock => {}
                Disposition::Fatal => {
                    self.stats.error(Disposition::Fatal);
                    if let Some(suppressed) = self.fatal_log.allow() {
                        tracing::error!(
                            "BUG: wake eventfd read failed: {e}; polling instead \
                             ({suppressed} similar lines suppressed)"
                        );
                    }
                    self.wake_broken = true;
                }
                d => {
                    // Out of memory (or another passing failure): try again after a short,
                    // growing pause. Until then the wait times out at the retry, so a wake
                    // that comes meanwhile is late by that pause at most, never lost.
                    self.stats.error(d);
                    self.wake_retry_at = Some(self.now + self.wake_backoff.step());
                }
            }
        }
        self.arm_wake();
    }

    fn mark_dirty(&mut self, slot: u32) {
        if let Some(c) = self.slots[slot as usize].conn.as_mut() {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn apply(&mut self, conn: ConnId, cmd: Command<'_>) {
        let now = self.now;
        let slot = conn.slot();
        let Some(c) = self
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.conn.as_mut())
        else {
            if let Command::Send(bytes) = cmd {
                Stats::add(&self.stats.discarded, bytes.len() as u64);
            }
            return;
        };
        if c.id != conn || c.closing || c.dying.is_some() {
            // A late command for a connection that is gone (or already finishing): its
            // output is owed and dropped.
            if let Command::Send(bytes) = cmd {
                Stats::add(&self.stats.discarded, bytes.len() as u64);
            }
            return;
        }
        if c.queued() == 0 {
            c.last_write = now;
        }
        match cmd {
            // Sent at the end of the turn, coalesced with later sends.
            Command::Send(bytes) => c.pending.extend_from_slice(bytes),
            Command::SendFile(range) => {
                c.files.push(c.pending.len(), range);
            }
            // Checked when the connection is processed at the end of this turn.
            Command::NotifyDrained => c.want_drained = true,
            Command::PauseUntilDrained => {
                // No backlog call: the output is not over the limit.
                c.want_drained = true;
                c.hold_reading = true;
                c.out_paused = true;
            }
            // Reading resumes when the connection is processed at the end of this turn (if
            // its output is low enough by then).
            Command::ResumeReading => c.hold_reading = false,
            Command::IdleExempt(on) => c.last_read.exempt(on, now),
            Command::Close => c.closing = true,
        }
        self.mark_dirty(slot);
    }

    /// Hand off events, apply commands, resume stalled reads, send, close.
    fn end_turn<D: Dispatch>(&mut self, dispatch: &mut D) {
        dispatch.flush();
        self.handed_late = false;
        dispatch.commands(&mut |conn, cmd| self.apply(conn, cmd));
        if self.stopping_since.is_some() && dispatch.settled() {
            self.finish_all();
        }
        self.resume_stalled(dispatch);
        self.rearm_starved();
        self.process_dirty(dispatch);
        self.arm_accept();
        if self.handed_late {
            dispatch.flush();
            self.handed_late = false;
        }
    }

    /// For every connection touched this turn: start its send, close it if it is done,
    /// apply the output limits and arm or cancel its receive.
    fn process_dirty<D: Dispatch>(&mut self, dispatch: &mut D) {
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            i += 1;
            match self.slots[slot as usize].conn.as_mut() {
                Some(c) if c.dying.is_none() => c.dirty = false,
                Some(c) => {
                    c.dirty = false;
                    continue;
                }
                None => continue,
            }
            self.start_send(slot, dispatch);
            let Some(c) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            if c.dying.is_some() {
                continue;
            }
            let queued = c.queued();
            if c.linger_until.is_some() {
                self.update_recv(slot);
                continue;
            }
            if queued == 0 && c.closing {
                self.begin_linger(slot, dispatch);
                continue;
            }
            if queued > self.cfg.output_high && !c.out_paused {
                // The peer does not keep up: stop reading until it drains.
                c.out_paused = true;
                c.over_limit = true;
                Stats::add(&self.stats.read_pauses, 1);
                dispatch.backlog(c.id, true);
                self.handed_late = true;
            } else if c.out_paused && queued <= self.cfg.output_low {
                if std::mem::take(&mut c.over_limit) {
                    dispatch.backlog(c.id, false);
                    self.handed_late = true;
                }
                if !c.hold_reading {
                    c.out_paused = false;
                    // Input held while paused is handed over next turn, which comes at once.
                    self.resume_due |= c.stalled;
                }
            }
            if c.want_drained && queued <= self.cfg.output_low {
                c.want_drained = false;
                dispatch.drained(c.id);
                self.handed_late = true;
            }
            self.update_recv(slot);
        }
        self.dirty.clear();
    }

    fn timers<D: Dispatch>(&mut self, dispatch: &mut D) {
        dispatch.expire(self.now);
        if let Some(until) = self.accept_paused_until {
            if self.now >= until {
                // Re-armed at the end of the turn.
                self.accept_paused_until = None;
            }
        }
        if let Some(at) = self.wake_retry_at {
            if self.now >= at {
                self.wake_retry_at = None;
                self.arm_wake();
            }
        }
        self.linger_timers(dispatch);
        if let (Some(scan), Some(period)) = (self.next_idle_scan, self.cfg.scan_period()) {
            if self.now >= scan {
                self.next_idle_scan = Some(self.now + period);
                let now = self.now;
                let stopping = self.stopping_since.is_some();
                let (idle_timeout, send_timeout) = (self.cfg.idle_timeout, self.cfg.send_timeout);
                let expired: Vec<u32> = self
                    .slots
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        let c = s.conn.as_mut()?;
                        if c.dying.is_some() || c.linger_until.is_some() {
                            // Closing already, or bounded by its linger deadline.
                            return None;
                        }
                        // Idle: the driver was ready to read and nothing came. While reading
                        // is paused by the driver itself (output over the limit, worker
                        // behind, buffer ring empty, close asked, shutdown) the clock does
                        // not run; a connection the service exempted is never idle.
                        let reading = c.wants_recv(stopping) && !c.out_paused;
                        if !reading {
                            c.last_read.reset(now);
                        }
                        let idle =
                            idle_timeout.is_some_and(|t| reading && c.last_read.expired(now, t));
                        // Send timeout: output is owed and the peer took none of it for that
                        // long.
                        let stuck = send_timeout.is_some_and(|t| {
                            c.queued() > 0 && now.duration_since(c.last_write) >= t
                        });
                        (idle || stuck).then_some(i as u32)
                    })
                    .collect();
                for slot in expired {
                    self.begin_close(slot, CloseWhy::Idle, dispatch);
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.stopping_since = Some(self.now);
        self.cancel_accept();
        // Lingering never goes past the shutdown grace.
        let last = self.now + self.cfg.shutdown_grace;
        for &(slot, generation) in &self.lingering {
            if let Some(c) = live(&mut self.slots, slot, generation) {
                if let Some(t) = c.linger_until.as_mut() {
                    *t = (*t).min(last);
                }
            }
        }
        // Stop reading everywhere: `wants_recv` sees `stopping`.
        for i in 0..self.slots.len() {
            if self.slots[i].conn.is_some() {
                self.mark_dirty(i as u32);
            }
        }
    }

    /// Shutdown, once the workers have answered everything: every connection closes after
    /// its queued output is written.
    fn finish_all(&mut self) {
        for i in 0..self.slots.len() {
            if let Some(c) = self.slots[i].conn.as_mut() {
                if !c.closing && c.dying.is_none() {
                    c.closing = true;
                    self.mark_dirty(i as u32);
                }
            }
        }
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        if self.inflight == 0 {
            // Every request completed (`drain_all` saw to it): the kernel is done with all
            // the memory below, which is freed as usual after the ring.
            return;
        }
        // Requests are still in flight (the exit drain timed out, or the ring failed).
        // Closing the ring does not wait for the kernel to tear them down, so it may still
        // write into a provided buffer or the wake buffer, or send from a send buffer:
        // leak that memory instead of freeing it. Descriptors are closed as usual (a
        // request holds its own reference to its file).
        tracing::warn!(
            "{} io_uring requests still in flight at exit; leaking their buffers",
            self.inflight
        );
        self.bufs.leak();
        let wake = std::mem::replace(&mut self.wake_buf, Box::new(UnsafeCell::new([0; 8])));
        let _ = Box::leak(wake);
        let conns = self
            .graveyard
            .iter_mut()
            .chain(self.slots.iter_mut().filter_map(|s| s.conn.as_mut()));
        for c in conns {
            if c.send_busy {
                std::mem::forget(std::mem::take(&mut c.sending));
            }
        }
    }
}

/// The connection in `slot` if it is generation `generation` (a completion for an older
/// one is never applied to it).
fn live(slots: &mut [Slot], slot: u32, generation: u32) -> Option<&mut Conn> {
    slots
        .get_mut(slot as usize)
        .filter(|s| s.generation == generation)
        .and_then(|s| s.conn.as_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_busy_over_the_cpu_share() {
        let t0 = Instant::now();
        let mut load = Load {
            since: t0,
            cpu_since: Duration::from_secs(5),
            busy: false,
        };
        // 7 ms on the CPU in a 10 ms window: busy.
        load.close_window(
            t0 + LOAD_WINDOW,
            Duration::from_secs(5) + Duration::from_millis(7),
        );
        assert!(load.busy);
        // 5 ms of the next 10: not.
        load.close_window(
            t0 + LOAD_WINDOW * 2,
            Duration::from_secs(5) + Duration::from_millis(12),
        );
        assert!(!load.busy);
        // A window not over yet changes nothing.
        load.update(t0 + LOAD_WINDOW * 2);
        assert!(!load.busy);
    }

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Accept,
            Op::Wake,
            Op::Recv,
            Op::Send,
            Op::CancelConn,
            Op::CancelRecv,
            Op::Cancel,
            Op::FileReady,
        ] {
            let ud = user_data(op, ConnId::GENERATION_MASK, u32::MAX);
            assert_eq!(decode(ud), (Some(op), ConnId::GENERATION_MASK, u32::MAX));
        }
        assert_eq!(
            decode(user_data(Op::Recv, ConnId::GENERATION_MASK + 1, 7)).1,
            0
        );
        assert_eq!(decode(0).0, None);
    }
}
