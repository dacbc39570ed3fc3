//! The io_uring completion driver (Linux only).
//!
//! # How it meets the contract
//!
//! It has the observable behaviour of the readiness driver (`ringport_fallback::driver`),
//! reached by completions instead of readiness:
//!
//! - One driver per I/O thread, built on that thread: its ring is set up with
//!   `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel allows it (then `COOP_TASKRUN`, then no
//!   flag: see [`ring::build`]), so completions are run only when this thread waits. Other
//!   threads reach it through the [`Dispatch`]'s channels and the [`Waker`], whose notify
//!   writes an eventfd that always has a read armed in the ring.
//! - Listener: one multishot accept, re-armed whenever a completion comes without `MORE`.
//!   `SkipPeer` errors (anything about one pending peer, such as a connection reset while it
//!   waited in the backlog) go on and never pause accepting; `Exhausted` (out of descriptors
//!   or memory), or a failure of the listener itself (`Fatal`), cancels the multishot and
//!   pauses accepting with a doubling [`Backoff`], logged at most once a second. Over `max_connections` open across the server (all I/O
//!   threads, counted in [`Shared`]), a connection is accepted and closed at once.
//! - Reads: one multishot receive per connection, selecting buffers from a provided-buffer
//!   ring ([`buf_ring`]). Bytes are copied out to [`Dispatch::data`] and the buffer goes back
//!   to the ring at once. An empty ring (`ENOBUFS`, `Exhausted` at `Site::BufferRing`) ends
//!   the multishot without losing data (it stays in the socket): it is counted and re-armed
//!   after this turn's completions gave their buffers back. A result of 0 is EOF.
//! - Reading stops (the receive is cancelled; bytes that still arrive before the cancel
//!   completes are delivered) while the connection's worker is congested, while queued output
//!   is over `output_high` (until it drains below `output_low`), once the service asked to
//!   close, and at shutdown.
//! - Writes: one send (`MSG_NOSIGNAL`) in flight per connection. Output that arrives
//!   meanwhile is coalesced into a second buffer; a short send resubmits the rest. The
//!   in-flight buffer is never touched until its completion.
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
//!   over the limit, worker behind, buffer ring empty, close asked, shutdown) the clock does
//!   not run. Send timeout: a connection whose queued output made no progress (no send wrote
//!   anything) for `send_timeout` is closed, a peer that stopped reading, including one whose
//!   service asked to close. Neither applies while a connection lingers (the linger
//!   deadline bounds that). Both count as `timed_out`.
//! - Idle and send timeouts, linger deadlines, accept backoff, wake re-arm and shutdown polling use
//!   the timeout of the ring wait (`io_uring_enter` with `EXT_ARG`), no timer thread.
//! - A wake read that fails for lack of a resource is re-armed after a short backoff; only a
//!   `Fatal` failure turns the driver to polling every 10 ms. A ring wait that fails for good
//!   closes every connection (each reported closed), requests shutdown of the whole server
//!   through [`Shared`] and returns the error.
//! - Every failed call or completion goes through the classifier
//!   ([`ringport_fallback::errno`]); this module never compares errno values. A failing
//!   operation is never re-armed in a tight loop.
//! - Every accept, receive and send result passes one choke point ([`choke`]) before it is
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

mod buf_ring;
mod choke;
mod ring;

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use ringport_fallback::errno::{
    classify, from_completion, is_out_of_descriptors, Disposition, Site,
};
use ringport_fallback::event::{log_fatal, Backoff, LogLimit};
use ringport_fallback::net::prepare_stream;
use ringport_fallback::{Command, ConnId, Dispatch, DriverConfig, Shared, Stats, Waker};

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
    fd: RawFd,
    /// The buffer of the send in flight: `sending[send_pos..]` is not yet written. Never
    /// touched while `send_busy`.
    sending: Vec<u8>,
    send_pos: usize,
    send_busy: bool,
    /// The error the send in flight was scripted to fail with (fault injection only).
    send_fault: choke::ScriptedSend,
    /// Output that arrived while a send was in flight, coalesced.
    pending: Vec<u8>,
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
    /// Reading paused because queued output is over the high-water mark.
    out_paused: bool,
    /// Reading paused because the connection's worker is behind.
    stalled: bool,
    /// The buffer ring ran dry under its receive: waiting in `starved` for a re-arm.
    starved: bool,
    /// Bytes received while the worker was congested (between the decision to stop reading
    /// and the cancel taking effect): `held[held_pos..]`, handed over when it catches up.
    held: Vec<u8>,
    held_pos: usize,
    /// EOF arrived behind held bytes.
    held_eof: bool,
    /// Queued for the end-of-turn pass.
    dirty: bool,
    /// Being closed: waiting for its requests to complete.
    dying: Option<CloseWhy>,
    /// Lingering until this deadline: the output is written and the write side shut down;
    /// input is read and discarded until the peer's EOF, then the connection closes.
    linger_until: Option<Instant>,
    /// Last time bytes arrived, or reading resumed after a pause (idle timeout).
    last_read: Instant,
    /// Last time queued output made progress, or output was queued on an empty queue
    /// (send timeout).
    last_write: Instant,
}

impl Conn {
    fn queued(&self) -> usize {
        (self.sending.len() - self.send_pos) + self.pending.len()
    }

    fn busy(&self) -> bool {
        self.recv_armed || self.send_busy || self.cancel_busy
    }

    fn wants_recv(&self, stopping: bool) -> bool {
        if self.linger_until.is_some() {
            // Lingering: read (and discard) until EOF, whatever paused reading before.
            return !self.read_eof && self.dying.is_none() && !self.starved;
        }
        !self.read_eof
            && !self.closing
            && self.dying.is_none()
            && !self.out_paused
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
    backoff: Backoff,
    accept_paused_until: Option<Instant>,
    accept_log: LogLimit,
    fatal_log: LogLimit,
    next_idle_scan: Option<Instant>,
    stopping_since: Option<Instant>,
    now: Instant,
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
        let eventfd = Arc::new(ring::eventfd()?);
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
            cqes: Vec::new(),
            wake_armed: false,
            wake_broken: false,
            wake_retry_at: None,
            wake_backoff: Backoff::new(WAKE_RETRY_MIN, WAKE_RETRY_MAX),
            lingering: Vec::new(),
            exiting: false,
            handed_late: false,
            accept_paused_until: None,
            accept_log: LogLimit::new(Duration::from_secs(1)),
            fatal_log: LogLimit::new(Duration::from_secs(1)),
            next_idle_scan: None,
            stopping_since: None,
            now: Instant::now(),
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
    /// (or the shutdown grace period ran out). Exit then takes at most one [`DRAIN_LIMIT`]
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
                    self.close_all(dispatch, last);
                    self.drain_all(dispatch, last);
                    dispatch.flush();
                    return Ok(());
                }
            }

            let timeout = self.timeout();
            self.waker.prepare_sleep();
            let timeout = if dispatch.ready() {
                Some(Duration::ZERO)
            } else {
                timeout
            };
            let waited = self.wait(timeout);
            self.waker.awake();
            self.now = Instant::now();
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
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
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

    fn timeout(&self) -> Option<Duration> {
        let mut deadline: Option<Instant> = self.accept_paused_until;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        };
        consider(self.next_idle_scan);
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
        for &(ud, res, flags) in &cqes {
            let more = cqueue::more(flags);
            if !more {
                self.inflight = self.inflight.saturating_sub(1);
            }
            let (op, generation, slot) = decode(ud);
            match op {
                Some(Op::Accept) => self.on_accept(res, more, dispatch),
                Some(Op::Wake) => self.on_wake(res),
                Some(Op::Recv) => self.on_recv(slot, generation, res, flags, dispatch),
                Some(Op::Send) => self.on_send(slot, generation, res, dispatch),
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
                        eprintln!(
                            "ringport: BUG: wake eventfd read failed: {e}; polling instead \
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

    fn arm_accept(&mut self) {
        if self.stopping_since.is_some() {
            // Stop accepting: close the listener once no accept refers to it.
            if !self.accept_armed {
                self.listener = None;
            }
            return;
        }
        if self.accept_armed || self.accept_paused_until.is_some() {
            return;
        }
        let Some(fd) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        let entry = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Op::Accept, 0, 0));
        self.accept_armed = true;
        self.push(entry);
    }

    fn cancel_accept(&mut self) {
        if self.accept_armed {
            let entry = opcode::AsyncCancel::new(user_data(Op::Accept, 0, 0))
                .build()
                .user_data(user_data(Op::Cancel, 0, 0));
            self.push(entry);
        }
    }

    fn on_accept<D: Dispatch>(&mut self, res: i32, more: bool, dispatch: &mut D) {
        if !more {
            self.accept_armed = false;
        }
        let scripted = choke::accept(&self.cfg);
        if res >= 0 {
            // SAFETY: a successful accept completion's result is a new descriptor that
            // nothing else owns; the stream closes it.
            let stream = unsafe { TcpStream::from_raw_fd(res) };
            self.accepted(stream, dispatch);
            // A scripted failure never costs the descriptor the kernel handed over: the
            // connection is admitted, then the failure is acted on as if the next accept
            // had reported it.
            if let Some(e) = scripted {
                self.accept_failed(e, more);
            }
            return;
        }
        // A failed completion carries nothing: a scripted error can stand in for it.
        let e = scripted.unwrap_or_else(|| from_completion(res));
        self.accept_failed(e, more);
    }

    /// A new connection from the listener: admit it, or close it at once.
    fn accepted<D: Dispatch>(&mut self, stream: TcpStream, dispatch: &mut D) {
        self.backoff.reset();
        if self.stopping_since.is_some() {
            // Accepted while the accept was being cancelled: not admitted.
            return;
        }
        if !self.shared.admit(self.cfg.max_connections) {
            // Over the server-wide cap: accepted and closed at once, so it does not sit in
            // the backlog.
            Stats::add(&self.stats.refused, 1);
            return;
        }
        if let Err(e) = prepare_stream(&stream, false) {
            self.stats.error(classify(Site::Configure, &e));
            self.shared.release();
            return;
        }
        self.admit(stream, dispatch);
    }

    /// An accept failed with `e`; `more`: the multishot accept is still armed.
    fn accept_failed(&mut self, e: io::Error, more: bool) {
        match classify(Site::Accept, &e) {
            // Re-armed at the end of the turn if the multishot ended.
            Disposition::Retry | Disposition::WouldBlock | Disposition::Canceled => {}
            Disposition::SkipPeer => self.stats.error(Disposition::SkipPeer),
            d => {
                // Exhausted (EMFILE, ENFILE, ENOBUFS, ENOMEM), or the listener itself failed
                // (Fatal: a bug): pause accepting with backoff. Never spin, never exit. An
                // error about one peer is SkipPeer, never this.
                self.stats.error(d);
                Stats::add(&self.stats.accept_pauses, 1);
                let pause = self.backoff.step();
                self.accept_paused_until = Some(self.now + pause);
                if more {
                    self.cancel_accept();
                }
                if let Some(suppressed) = self.accept_log.allow() {
                    let what = if is_out_of_descriptors(&e) {
                        "out of file descriptors"
                    } else {
                        "accept failed"
                    };
                    eprintln!(
                        "ringport: {what} ({e}); pausing accept for {pause:?} \
                         ({} open connections, {suppressed} similar lines suppressed)",
                        self.open
                    );
                }
            }
        }
    }

    fn admit<D: Dispatch>(&mut self, stream: TcpStream, dispatch: &mut D) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.slots[slot as usize].generation;
        let id = ConnId::new(self.cfg.index, slot, generation);
        self.slots[slot as usize].conn = Some(Conn {
            id,
            fd: stream.as_raw_fd(),
            stream,
            sending: Vec::new(),
            send_pos: 0,
            send_busy: false,
            send_fault: choke::ScriptedSend::default(),
            pending: Vec::new(),
            recv_armed: false,
            recv_cancel: false,
            cancel_busy: false,
            read_eof: false,
            closing: false,
            out_paused: false,
            stalled: false,
            starved: false,
            held: Vec::new(),
            held_pos: 0,
            held_eof: false,
            dirty: false,
            dying: None,
            linger_until: None,
            last_read: self.now,
            last_write: self.now,
        });
        self.open += 1;
        Stats::add(&self.stats.accepted, 1);
        dispatch.open(id);
        self.update_recv(slot);
    }

    /// Arm or cancel the connection's receive to match what it wants now.
    fn update_recv(&mut self, slot: u32) {
        let stopping = self.stopping_since.is_some();
        let bgid = self.bufs.bgid();
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.dying.is_some() {
            // The close-time cancel covers the receive.
            return;
        }
        let ud = user_data(Op::Recv, c.id.generation(), slot);
        if c.wants_recv(stopping) {
            if !c.recv_armed {
                c.recv_armed = true;
                c.recv_cancel = false;
                let entry = opcode::RecvMulti::new(Fd(c.fd), bgid).build().user_data(ud);
                self.push(entry);
            }
        } else if c.recv_armed && !c.recv_cancel {
            c.recv_cancel = true;
            let entry = opcode::AsyncCancel::new(ud).build().user_data(user_data(
                Op::CancelRecv,
                c.id.generation(),
                slot,
            ));
            self.push(entry);
        }
    }

    fn on_recv<D: Dispatch>(
        &mut self,
        slot: u32,
        generation: u32,
        res: i32,
        flags: u32,
        dispatch: &mut D,
    ) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let scripted = choke::recv(&self.cfg);
        let Some(c) = live(&mut self.slots, slot, generation) else {
            // Cannot happen (a slot is reused only after its last completion); keep the
            // buffer anyway.
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        // After the service asked to close (and while lingering) input is read and dropped.
        let deliver = c.dying.is_none() && !c.closing;
        let mut abort = None;
        // The lingering connection saw the peer's EOF: close it now.
        let mut linger_done = false;
        if res > 0 {
            let n = res as usize;
            match bid.and_then(|b| self.bufs.get(b, n)) {
                Some(bytes) => {
                    Stats::add(&self.stats.bytes_in, n as u64);
                    c.last_read = self.now;
                    if deliver {
                        for piece in bytes.chunks(scripted.piece.unwrap_or(n)) {
                            if c.stalled || dispatch.congested(c.id) {
                                // The worker is behind: stop reading (the receive is
                                // cancelled at the end of the turn) and hold what still
                                // arrives until it catches up, in order, so the hand-off
                                // stays bounded as with the readiness driver.
                                if !c.stalled {
                                    c.stalled = true;
                                    Stats::add(&self.stats.read_pauses, 1);
                                    self.stalled.push(slot);
                                }
                                c.held.extend_from_slice(piece);
                            } else {
                                dispatch.data(c.id, piece);
                            }
                        }
                    }
                }
                None => {
                    abort = Some((Disposition::Fatal, io::Error::other("bad buffer id")));
                }
            }
        } else if res == 0 {
            // A scripted error stands in for an EOF, which stays in the socket: the
            // re-armed receive reports it again.
            let replaced = scripted.recv.is_some() || scripted.ring.is_some();
            if !c.read_eof && !replaced && c.dying.is_none() {
                // After the service asked to close it is not told, but the EOF is kept:
                // with nothing left unread, the close needs no linger.
                c.read_eof = true;
                if c.linger_until.is_some() {
                    linger_done = true;
                } else if deliver {
                    if c.held.len() > c.held_pos {
                        c.held_eof = true;
                    } else {
                        dispatch.eof(c.id);
                    }
                }
            }
        } else {
            let (e, key) = (from_completion(res), (slot, generation));
            abort = recv_failed(
                c,
                Site::BufferRing,
                e,
                !more,
                &self.stats,
                &mut self.starved,
                key,
            );
        }
        // Scripted errors: as if the receive had ended with them after this completion.
        // Its multishot may still be running: a starved connection does not want it, so it
        // is cancelled and re-armed from the starved queue, as after a real ENOBUFS;
        // after EINTR or EAGAIN it just goes on.
        for (site, e) in [
            (Site::Recv, scripted.recv),
            (Site::BufferRing, scripted.ring),
        ] {
            let Some(e) = e else {
                continue;
            };
            if abort.is_none() {
                let key = (slot, generation);
                abort = recv_failed(c, site, e, true, &self.stats, &mut self.starved, key);
            }
        }
        if let Some(bid) = bid {
            self.bufs.recycle(bid);
        }
        if !more {
            c.recv_armed = false;
            c.recv_cancel = false;
        }
        if let Some((d, e)) = abort {
            if c.linger_until.is_some() {
                // Lingering: a failed receive ends the linger like an EOF (the output was
                // written already); as with the readiness driver it is not counted.
                self.begin_close(slot, CloseWhy::Done, dispatch);
                return;
            }
            self.stats.error(d);
            if d == Disposition::Fatal {
                log_fatal(&mut self.fatal_log, "recv", c.id, &e);
            }
            self.begin_close(slot, CloseWhy::Abort, dispatch);
            return;
        }
        if linger_done {
            self.begin_close(slot, CloseWhy::Done, dispatch);
        } else if c.dying.is_some() {
            self.maybe_finalize(slot, dispatch);
        } else {
            self.update_recv(slot);
        }
    }

    fn on_recv_cancel(&mut self, slot: u32, generation: u32, res: i32) {
        if res >= 0 {
            return;
        }
        let e = from_completion(res);
        let Some(c) = live(&mut self.slots, slot, generation) else {
            return;
        };
        // Nothing was cancelled (Canceled: the receive had just ended, or was running):
        // allow the next pass to try again if the receive is still armed.
        c.recv_cancel = false;
        let d = classify(Site::Cancel, &e);
        if d != Disposition::Canceled {
            self.stats.error(d);
            log_fatal(&mut self.fatal_log, "receive cancel", c.id, &e);
        }
    }

    /// The completion of an accept or exit cancel (the cancelled requests report
    /// themselves).
    fn on_cancel(&mut self, res: i32) {
        if res >= 0 {
            return;
        }
        let e = from_completion(res);
        let d = classify(Site::Cancel, &e);
        if d != Disposition::Canceled {
            self.stats.error(d);
            if let Some(suppressed) = self.fatal_log.allow() {
                eprintln!(
                    "ringport: BUG: cancel failed: {e} ({suppressed} similar lines suppressed)"
                );
            }
        }
    }

    /// Start sending the coalesced output, if no send is in flight.
    fn start_send(&mut self, slot: u32) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.send_busy || c.pending.is_empty() {
            return;
        }
        debug_assert!(c.sending.is_empty());
        std::mem::swap(&mut c.sending, &mut c.pending);
        c.send_pos = 0;
        if c.pending.capacity() > self.cfg.output_high {
            // The spare buffer grew with a burst: do not keep that memory per connection.
            c.pending = Vec::new();
        }
        self.submit_send(slot);
    }

    /// Submit `sending[send_pos..]`.
    fn submit_send(&mut self, slot: u32) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        let rest = &c.sending[c.send_pos..];
        let mut len = rest.len().min(MAX_SEND);
        let ud = user_data(Op::Send, c.id.generation(), slot);
        let entry = match choke::send(&self.cfg) {
            Some(Injected::Error(e)) => {
                // Scripted to fail: nothing is sent; a no-op takes the send's place and its
                // completion reports `e`.
                c.send_fault.set(e);
                opcode::Nop::new().build().user_data(ud)
            }
            scripted => {
                if let Some(Injected::Short(n)) = scripted {
                    len = len.min(n);
                }
                opcode::Send::new(Fd(c.fd), rest.as_ptr(), len as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(ud)
            }
        };
        c.send_busy = true;
        self.push(entry);
    }

    fn on_send<D: Dispatch>(&mut self, slot: u32, generation: u32, res: i32, dispatch: &mut D) {
        let Some(c) = live(&mut self.slots, slot, generation) else {
            return;
        };
        c.send_busy = false;
        let scripted = c.send_fault.take();
        if c.dying.is_some() {
            self.maybe_finalize(slot, dispatch);
            return;
        }
        let e = match scripted {
            // The request was a no-op standing in for a failed send: nothing was written.
            Some(e) => e,
            None if res > 0 => {
                self.sent(slot, res as usize);
                return;
            }
            // A send of a non-empty buffer that wrote nothing: the connection is unusable.
            None if res == 0 => io::Error::from(io::ErrorKind::WriteZero),
            None => from_completion(res),
        };
        match classify(Site::Send, &e) {
            // Nothing was written: send the same bytes again (a cancel meant for an earlier
            // connection on this descriptor number is the only real source of Canceled here;
            // a write of zero bytes is never classified as one of these).
            Disposition::Retry | Disposition::WouldBlock | Disposition::Canceled => {
                self.submit_send(slot)
            }
            d => {
                self.stats.error(d);
                if d == Disposition::Fatal {
                    log_fatal(&mut self.fatal_log, "send", c.id, &e);
                }
                self.begin_close(slot, CloseWhy::Abort, dispatch);
            }
        }
    }

    /// `n` more bytes of the send in flight were written.
    fn sent(&mut self, slot: u32, n: usize) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        c.send_pos += n;
        if n > 0 {
            c.last_write = self.now;
        }
        Stats::add(&self.stats.bytes_out, n as u64);
        if c.send_pos < c.sending.len() {
            // Short send: the rest goes out next, before anything coalesced behind it.
            self.submit_send(slot);
        } else {
            c.sending.clear();
            c.send_pos = 0;
            self.mark_dirty(slot);
        }
    }

    fn on_close_cancel<D: Dispatch>(
        &mut self,
        slot: u32,
        generation: u32,
        res: i32,
        dispatch: &mut D,
    ) {
        let Some(c) = live(&mut self.slots, slot, generation) else {
            return;
        };
        c.cancel_busy = false;
        let left = usize::from(c.recv_armed) + usize::from(c.send_busy);
        if res < 0 {
            let e = from_completion(res);
            // "Nothing found" or "already running" (Canceled: nothing left to cancel) are
            // expected; anything else is a bug.
            let d = classify(Site::Cancel, &e);
            if d != Disposition::Canceled {
                self.stats.error(d);
                log_fatal(&mut self.fatal_log, "cancel", c.id, &e);
            }
        }
        if left > 0 && (res < 0 || (res as usize) < left) {
            // Something was not cancelled: shutting the socket down ends any receive (EOF)
            // and send (EPIPE) still running, so the close cannot hang on it.
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        self.maybe_finalize(slot, dispatch);
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
            return;
        };
        if c.id != conn || c.closing || c.dying.is_some() {
            // A late command for a connection that is gone (or already finishing).
            return;
        }
        match cmd {
            // Sent at the end of the turn, coalesced with later sends.
            Command::Send(bytes) => {
                if c.queued() == 0 {
                    c.last_write = now;
                }
                c.pending.extend_from_slice(bytes);
            }
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

    fn resume_stalled<D: Dispatch>(&mut self, dispatch: &mut D) {
        let now = self.now;
        let mut i = 0;
        while i < self.stalled.len() {
            let slot = self.stalled[i];
            let resume = match self.slots[slot as usize].conn.as_mut() {
                Some(c) if c.stalled && c.dying.is_none() => {
                    // Hand over what was held, a chunk at a time, while the worker keeps up.
                    while c.held.len() > c.held_pos && !dispatch.congested(c.id) {
                        let end = c.held.len().min(c.held_pos + HELD_CHUNK);
                        dispatch.data(c.id, &c.held[c.held_pos..end]);
                        c.held_pos = end;
                        self.handed_late = true;
                    }
                    if c.held.len() > c.held_pos || dispatch.congested(c.id) {
                        false
                    } else {
                        c.held = Vec::new();
                        c.held_pos = 0;
                        if c.held_eof {
                            c.held_eof = false;
                            dispatch.eof(c.id);
                            self.handed_late = true;
                        }
                        c.stalled = false;
                        // The pause was the worker's doing, not the peer's: the idle clock
                        // starts again from here.
                        c.last_read = now;
                        true
                    }
                }
                _ => true,
            };
            if resume {
                self.stalled.swap_remove(i);
                self.mark_dirty(slot);
            } else {
                i += 1;
            }
        }
    }

    /// Give receives that found the buffer ring empty another go, oldest first, as many as
    /// there are buffers (each has data waiting, so each takes at least one).
    fn rearm_starved(&mut self) {
        let mut budget = usize::from(self.cfg.ring_buffers).max(1);
        while budget > 0 {
            let Some((slot, generation)) = self.starved.pop_front() else {
                return;
            };
            if let Some(c) = live(&mut self.slots, slot, generation) {
                if c.starved {
                    c.starved = false;
                    budget -= 1;
                    self.mark_dirty(slot);
                }
            }
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
            self.start_send(slot);
            let Some(c) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
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
                Stats::add(&self.stats.read_pauses, 1);
            } else if c.out_paused && queued <= self.cfg.output_low {
                c.out_paused = false;
            }
            self.update_recv(slot);
        }
        self.dirty.clear();
    }

    fn timers<D: Dispatch>(&mut self, dispatch: &mut D) {
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
                        // not run.
                        let reading = c.wants_recv(stopping);
                        if !reading {
                            c.last_read = now;
                        }
                        let idle = idle_timeout
                            .is_some_and(|t| reading && now.duration_since(c.last_read) >= t);
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

    /// Orderly close, once every queued byte is written: shut the write side down (the peer
    /// reads our EOF after the last byte), then read and discard input until the peer's
    /// EOF, an error or the linger deadline, and only then close. Closing at once with
    /// unread input would send a reset, which can destroy output the peer has not read yet.
    fn begin_linger<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.dying.is_some() || c.linger_until.is_some() {
            return;
        }
        let mut deadline = self.now + self.cfg.linger;
        if let Some(since) = self.stopping_since {
            deadline = deadline.min(since + self.cfg.shutdown_grace);
        }
        if c.read_eof || deadline <= self.now {
            // Nothing can be left unread after the peer's EOF (or there is no time left).
            self.begin_close(slot, CloseWhy::Done, dispatch);
            return;
        }
        if let Err(e) = c.stream.shutdown(Shutdown::Write) {
            // PeerGone: there is nobody to linger for. Anything else: close at once as well.
            self.stats.error(classify(Site::Configure, &e));
            self.begin_close(slot, CloseWhy::Abort, dispatch);
            return;
        }
        c.linger_until = Some(deadline);
        // Whatever paused reading no longer applies, and held input is never delivered now
        // (the stalled list drops the connection at its next pass).
        c.stalled = false;
        c.out_paused = false;
        c.held = Vec::new();
        c.held_pos = 0;
        c.held_eof = false;
        self.lingering.push((slot, c.id.generation()));
        self.update_recv(slot);
    }

    /// The earliest deadline of a lingering connection.
    fn next_linger_deadline(&self) -> Option<Instant> {
        self.lingering
            .iter()
            .filter_map(|&(slot, generation)| {
                let s = self.slots.get(slot as usize)?;
                let c = s.conn.as_ref().filter(|_| s.generation == generation)?;
                c.linger_until.filter(|_| c.dying.is_none())
            })
            .min()
    }

    /// Close the lingering connections whose deadline passed; forget those that closed.
    fn linger_timers<D: Dispatch>(&mut self, dispatch: &mut D) {
        if self.lingering.is_empty() {
            return;
        }
        let now = self.now;
        let mut expired = Vec::new();
        let slots = &mut self.slots;
        self.lingering
            .retain(|&(slot, generation)| match live(slots, slot, generation) {
                Some(c) if c.dying.is_none() => match c.linger_until {
                    Some(t) if t <= now => {
                        expired.push(slot);
                        false
                    }
                    Some(_) => true,
                    None => false,
                },
                _ => false,
            });
        for slot in expired {
            self.begin_close(slot, CloseWhy::Done, dispatch);
        }
    }

    /// Close a connection: at once if nothing is in flight, else after cancelling its
    /// requests and seeing their completions.
    fn begin_close<D: Dispatch>(&mut self, slot: u32, why: CloseWhy, dispatch: &mut D) {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        if c.dying.is_some() {
            return;
        }
        c.dying = Some(why);
        let unsent = if c.send_busy {
            0 // the kernel may still write it: not known to be lost
        } else {
            c.sending.len().saturating_sub(c.send_pos)
        };
        Stats::add(&self.stats.discarded, (c.pending.len() + unsent) as u64);
        c.pending = Vec::new();
        c.held = Vec::new();
        c.held_pos = 0;
        if c.recv_armed || c.send_busy {
            c.cancel_busy = true;
            let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(c.fd)).all())
                .build()
                .user_data(user_data(Op::CancelConn, c.id.generation(), slot));
            self.push(entry);
        } else {
            self.finalize(slot, dispatch);
        }
    }

    fn maybe_finalize<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        if let Some(c) = self.slots[slot as usize].conn.as_ref() {
            if c.dying.is_some() && !c.busy() {
                self.finalize(slot, dispatch);
            }
        }
    }

    /// Free the slot, close the descriptor and tell the dispatch. A connection that still
    /// has requests in flight (only when giving up at exit) is kept in the graveyard, freed
    /// after the ring.
    fn finalize<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) {
        let s = &mut self.slots[slot as usize];
        let Some(c) = s.conn.take() else {
            return;
        };
        s.generation = (s.generation + 1) & ConnId::GENERATION_MASK;
        self.free.push(slot);
        self.open -= 1;
        self.shared.release();
        let (id, why) = (c.id, c.dying);
        // The descriptor is closed before the counters move, so whoever sees `closed` go
        // up sees the descriptor gone too.
        if c.busy() {
            self.graveyard.push(c);
        } else {
            drop(c);
        }
        if why == Some(CloseWhy::Idle) {
            Stats::add(&self.stats.timed_out, 1);
        }
        Stats::add(&self.stats.closed, 1);
        self.handed_late = true;
        dispatch.closed(id);
    }

    /// The shutdown grace ran out (or the ring failed): close everything now, output or
    /// not. Waits for the cancelled requests until `deadline` at most; a connection whose
    /// requests are still in flight then is reported closed and kept in the graveyard.
    fn close_all<D: Dispatch>(&mut self, dispatch: &mut D, deadline: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].conn.is_some() {
                self.begin_close(i as u32, CloseWhy::Abort, dispatch);
            }
        }
        self.wait_until(dispatch, deadline, |d| d.open == 0);
        for i in 0..self.slots.len() {
            if self.slots[i].conn.is_some() {
                self.finalize(i as u32, dispatch);
            }
        }
    }

    /// At exit: cancel every request still in flight (accept, wake read, anything left) and
    /// wait for their completions until `deadline`. Only `inflight == 0` makes freeing the
    /// memory those requests use safe; if the deadline passes first, `Drop` leaks it.
    fn drain_all<D: Dispatch>(&mut self, dispatch: &mut D, deadline: Instant) {
        self.exiting = true;
        if self.inflight > 0 {
            let entry = opcode::AsyncCancel2::new(CancelBuilder::any())
                .build()
                .user_data(user_data(Op::Cancel, 0, 0));
            self.push(entry);
            self.wait_until(dispatch, deadline, |d| d.inflight == 0);
        }
        self.listener = None;
    }

    /// Submit, wait and reap until `done` holds or `deadline` passes (the cancels just
    /// queued are submitted at least once), or the ring wait fails.
    fn wait_until<D: Dispatch>(
        &mut self,
        dispatch: &mut D,
        deadline: Instant,
        done: impl Fn(&Self) -> bool,
    ) {
        loop {
            if done(self) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let failed = self
                .wait(Some(left.min(Duration::from_millis(50))))
                .is_err();
            self.now = Instant::now();
            // Completions that are already there are handled even after a failed wait.
            self.reap(dispatch);
            if failed || left.is_zero() {
                return;
            }
        }
    }

    /// The ring wait failed for good: close every connection (each reported closed once),
    /// stop the whole server and drain what can be drained.
    fn fail<D: Dispatch>(&mut self, e: &io::Error, dispatch: &mut D) {
        eprintln!(
            "ringport: io_uring wait failed: {e}; closing this thread's {} connections and \
             stopping the server",
            self.open
        );
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if self.stopping_since.is_none() {
            self.begin_shutdown();
        }
        let deadline = self.now + DRAIN_LIMIT;
        self.close_all(dispatch, deadline);
        self.drain_all(dispatch, deadline);
        dispatch.flush();
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
        eprintln!(
            "ringport: {} io_uring requests still in flight at exit; leaking their buffers",
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

/// A receive of `c` failed with `e` at `site`. `ended`: the receive is over because of it,
/// or is to be ended (only then does an empty buffer ring starve it). Returns the reason to
/// close the connection, if it must close.
fn recv_failed(
    c: &mut Conn,
    site: Site,
    e: io::Error,
    ended: bool,
    stats: &Stats,
    starved: &mut VecDeque<(u32, u32)>,
    key: (u32, u32),
) -> Option<(Disposition, io::Error)> {
    match classify(site, &e) {
        // The buffer ring ran dry: the data waits in the socket. Re-armed from the starved
        // queue once this turn's buffers are back (a receive still running is cancelled
        // first: a starved connection does not want one).
        Disposition::Exhausted => {
            Stats::add(&stats.enobufs, 1);
            if ended && !c.starved {
                c.starved = true;
                starved.push_back(key);
            }
            None
        }
        Disposition::Canceled | Disposition::Retry | Disposition::WouldBlock => None,
        d => Some((d, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
