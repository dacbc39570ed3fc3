//! The readiness driver, on the `polling` crate (epoll, kqueue, event ports, IOCP/AFD).
//!
//! # How it meets the contract
//!
//! - One driver per I/O thread; it owns its poller, its listener and every connection it
//!   accepted, with their write queues. Other threads reach it only through the
//!   [`Dispatch`]'s channels and the [`Waker`] (which calls `Poller::notify`).
//! - Interest is oneshot and re-armed with `modify` once per loop turn, only when the wanted
//!   interest differs from what the poller holds.
//! - Listener: accept until `WouldBlock` (at most [`ACCEPT_BATCH`] per wake). `SkipPeer`
//!   errors (anything about one pending peer, such as a connection reset while it waited in
//!   the backlog) go on with the next at once and never pause the listener; `Exhausted` (out
//!   of descriptors or memory) pauses accepting with a doubling backoff, logged at most once
//!   a second, and so does a failure of the listener itself (`Fatal`), so it never spins.
//! - Reads: until `WouldBlock` (or a short read, which on a stream socket means the same:
//!   the receive queue is empty; the oneshot re-arm reports anything that arrives after),
//!   up to `read_budget` bytes per wake so one busy peer cannot starve the others. A read of 0 bytes is EOF: the service is told, and whatever it still
//!   owes is written before the socket is closed.
//! - Writes: immediately; what the socket does not take is queued and writable interest is
//!   armed. Over `output_high` queued bytes, reading from that connection pauses until the
//!   queue drains below `output_low` ([`Dispatch::backlog`] reports both crossings; a
//!   connection that asked gets [`Dispatch::drained`] once at or below `output_low`). Bytes
//!   are never reordered or dropped, except when the peer is gone (then the queue is dropped
//!   and the connection closed quietly). A file range waits in its place among the bytes and
//!   goes out with `sendfile` on Linux, or is read a chunk at a time into the output buffer
//!   elsewhere.
//! - Timers (idle and send timeouts, linger, accept backoff, the services' deadlines from
//!   [`Dispatch::next_deadline`]) are the poller wait's timeout; no timer thread.
//! - Every failed call goes through [`classify`]; this module never looks at errno values.
//!
//! # Portability
//!
//! Readiness can be spurious: a readable event followed by `WouldBlock` is normal. On
//! systems where `SO_REUSEPORT` does not balance, all drivers share one listener socket and
//! several may wake for one connection; the losers see `WouldBlock`.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::{Event, Events, Poller};

use crate::errno::{classify, is_out_of_descriptors, Disposition, Site};
use crate::event::{
    log_fatal, warn_grace_over, Backoff, Command, ConnId, ConnInfo, Dispatch, DriverConfig,
    FileRange, IdleClock, LogLimit, Shared, Stats, Waker,
};
use crate::net::{prepare_stream, write_output, AcceptDefaults};
use crate::outq::FileQueue;

/// Poller key of the listener (connections use their slot number).
const LISTENER: usize = usize::MAX - 1;
/// Output buffer capacity a connection keeps once its queue is empty.
const KEEP_OUTPUT_CAPACITY: usize = 64 * 1024;
/// Most connections accepted per listener wake before other work gets a turn.
pub const ACCEPT_BATCH: usize = 256;

/// What interest the poller holds (or should hold) for a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Interest {
    read: bool,
    write: bool,
}

struct Conn {
    id: ConnId,
    stream: TcpStream,
    /// Output not yet taken by the socket: `out[out_pos..]`, with the file ranges of
    /// `files` sent in between, each when the bytes before its `at` are written.
    out: Vec<u8>,
    out_pos: usize,
    files: FileQueue,
    /// The service asked to be told when output drains to the low-water mark.
    want_drained: bool,
    /// The peer sent EOF.
    read_eof: bool,
    /// The service asked to close once the output is written.
    closing: bool,
    /// Reading paused: queued output is over the high-water mark (`over_limit`), or the
    /// service holds it (`hold_reading`).
    out_paused: bool,
    /// The pause is for output over the high-water mark (reported as a backlog).
    over_limit: bool,
    /// The service paused reading ([`Command::PauseUntilDrained`]) and has not yet said to
    /// go on ([`Command::ResumeReading`]): the pause outlasts the drain.
    hold_reading: bool,
    /// Reading paused because the connection's worker is behind.
    stalled: bool,
    /// Interest the poller holds now (oneshot: nothing after an event fired).
    armed: Interest,
    /// Queued for the end-of-turn re-arm.
    dirty: bool,
    /// Since when the connection is idle: bytes arrived, or reading resumed after a pause;
    /// or exempt (idle timeout).
    last_read: IdleClock,
    /// Last time queued output made progress, or output was queued on an empty queue
    /// (send timeout).
    last_write: Instant,
    /// Lingering close: output written, write side shut down, input read and discarded
    /// until the peer's EOF or this deadline.
    linger_until: Option<Instant>,
}

impl Conn {
    fn queued(&self) -> usize {
        (self.out.len() - self.out_pos)
            .saturating_add(usize::try_from(self.files.bytes()).unwrap_or(usize::MAX))
    }

    fn want(&self, stopping: bool) -> Interest {
        if self.linger_until.is_some() {
            return Interest {
                read: true,
                write: false,
            };
        }
        Interest {
            read: !self.read_eof && !self.closing && !self.out_paused && !self.stalled && !stopping,
            write: self.queued() > 0,
        }
    }
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseWhy {
    /// Orderly: the service finished, output written. Lingers for the peer's EOF first.
    Done,
    /// The end of an orderly close (EOF seen, or the linger deadline passed).
    Final,
    /// The peer is gone or a call failed: drop queued output.
    Abort,
    /// Idle timeout.
    Idle,
}

/// The portable readiness driver for one I/O thread.
pub struct PollDriver {
    cfg: DriverConfig,
    poller: Arc<Poller>,
    listener: Option<TcpListener>,
    /// What its connections share with the listener.
    accept: AcceptDefaults,
    listener_armed: bool,
    waker: Arc<Waker>,
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    open: usize,
    dirty: Vec<u32>,
    stalled: Vec<u32>,
    lingering: Vec<u32>,
    to_close: Vec<(u32, CloseWhy)>,
    /// Output-level news for the dispatch, reported at the end of the turn.
    drained: Vec<ConnId>,
    backlog: Vec<(ConnId, bool)>,
    read_buf: Vec<u8>,
    backoff: Backoff,
    accept_paused_until: Option<Instant>,
    accept_log: LogLimit,
    fatal_log: LogLimit,
    next_idle_scan: Option<Instant>,
    stopping_since: Option<Instant>,
    now: Instant,
}

impl PollDriver {
    /// A driver that will accept from `listener`. `waker` gets this driver's notify
    /// (`Poller::notify`); build the driver on the thread that will run it.
    ///
    /// # Errors
    /// Fails when the poller cannot be created or the listener cannot be registered.
    pub fn new(
        listener: TcpListener,
        cfg: DriverConfig,
        stats: Arc<Stats>,
        shared: Arc<Shared>,
        waker: Arc<Waker>,
    ) -> io::Result<PollDriver> {
        let poller = Arc::new(Poller::new()?);
        listener.set_nonblocking(true)?;
        let accept = AcceptDefaults::of(&listener);
        register(&poller, &listener, Event::readable(LISTENER))?;
        let notifier = poller.clone();
        waker.set_notify(Box::new(move || {
            // A failed notify means the poller is gone: the driver is exiting anyway.
            let _ = notifier.notify();
        }));
        Ok(PollDriver {
            backoff: Backoff::new(cfg.accept_backoff_min, cfg.accept_backoff_max),
            read_buf: vec![0; cfg.read_buffer.max(1024)],
            cfg,
            poller,
            listener: Some(listener),
            accept,
            listener_armed: true,
            waker,
            stats,
            shared,
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            dirty: Vec::new(),
            stalled: Vec::new(),
            lingering: Vec::new(),
            to_close: Vec::new(),
            drained: Vec::new(),
            backlog: Vec::new(),
            accept_paused_until: None,
            accept_log: LogLimit::new(Duration::from_secs(1)),
            fatal_log: LogLimit::new(Duration::from_secs(1)),
            next_idle_scan: None,
            stopping_since: None,
            now: Instant::now(),
        })
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// Fails when the listener is already closed (after shutdown).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "listener closed",
            )),
        }
    }

    /// Run until shutdown is requested through [`Shared`] and every connection is closed
    /// (or the shutdown grace period ran out).
    ///
    /// # Errors
    /// Returns the error of a poller wait that failed for a reason other than an interrupt.
    pub fn run<D: Dispatch>(mut self, dispatch: &mut D) -> io::Result<()> {
        let mut events = Events::new();
        if let Some(t) = self.cfg.scan_period() {
            self.next_idle_scan = Some(Instant::now() + t);
        }
        loop {
            if self.shared.stopping() && self.stopping_since.is_none() {
                self.begin_shutdown();
            }
            if let Some(since) = self.stopping_since {
                if self.open == 0 && dispatch.settled() {
                    return Ok(());
                }
                if self.now.duration_since(since) >= self.cfg.shutdown_grace {
                    warn_grace_over(self.cfg.shutdown_grace, self.open);
                    self.close_all(dispatch);
                    dispatch.flush();
                    return Ok(());
                }
            }

            let timeout = self.timeout(dispatch.next_deadline());
            self.waker.prepare_sleep();
            let timeout = if dispatch.ready() {
                Some(Duration::ZERO)
            } else {
                timeout
            };
            events.clear();
            let waited = self.poller.wait(&mut events, timeout);
            self.waker.awake();
            self.now = Instant::now();
            if let Err(e) = waited {
                match classify(Site::Wait, &e) {
                    Disposition::Retry => {}
                    d @ (Disposition::Exhausted | Disposition::WouldBlock) => {
                        // The kernel is short of memory for the wait: back off, then retry.
                        self.stats.error(d);
                        std::thread::sleep(self.cfg.accept_backoff_min);
                        continue;
                    }
                    d => {
                        self.stats.error(d);
                        tracing::error!("BUG: poller wait failed: {e}; stopping the server");
                        // Close everything the normal way (each session told once), and stop
                        // the whole server rather than run on without this thread.
                        self.close_all(dispatch);
                        dispatch.flush();
                        self.shared
                            .shutdown
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        return Err(e);
                    }
                }
            }

            for ev in events.iter() {
                if ev.key == LISTENER {
                    self.listener_armed = false;
                    self.accept(dispatch);
                } else {
                    self.conn_event(ev.key as u32, ev.readable, ev.writable, dispatch);
                }
            }
            self.timers(dispatch);
            self.end_turn(dispatch);
        }
    }

    /// Hand off events, apply commands, retry stalled reads, write, re-arm, close.
    fn end_turn<D: Dispatch>(&mut self, dispatch: &mut D) {
        dispatch.flush();
        dispatch.commands(&mut |conn, cmd| self.apply(conn, cmd));
        if self.stopping_since.is_some() && dispatch.settled() {
            self.finish_all();
        }
        self.resume_stalled(dispatch);
        self.rearm();
        // Closes may start lingering connections, which need their interest re-armed; a
        // re-arm may find more to close. Two rounds settle it; the rest waits a turn.
        for _ in 0..2 {
            if self.to_close.is_empty() {
                break;
            }
            let mut closing = std::mem::take(&mut self.to_close);
            for (slot, why) in closing.drain(..) {
                self.close(slot, why, dispatch);
            }
            self.to_close = closing;
            dispatch.flush();
            self.rearm();
        }
        for (conn, over) in self.backlog.drain(..) {
            dispatch.backlog(conn, over);
        }
        for conn in self.drained.drain(..) {
            dispatch.drained(conn);
        }
        dispatch.flush();
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
        for &slot in &self.lingering {
            consider(
                self.slots[slot as usize]
                    .conn
                    .as_ref()
                    .and_then(|c| c.linger_until),
            );
        }
        consider(self.stopping_since.map(|s| s + self.cfg.shutdown_grace));
        if self.stopping_since.is_some() {
            // Poll the workers' progress while draining for shutdown.
            consider(Some(self.now + Duration::from_millis(20)));
        }
        deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn timers<D: Dispatch>(&mut self, dispatch: &mut D) {
        let now = self.now;
        dispatch.expire(now);
        self.lingering
            .retain(|&slot| match self.slots[slot as usize].conn.as_ref() {
                Some(c) => match c.linger_until {
                    Some(t) if now >= t => {
                        self.to_close.push((slot, CloseWhy::Final));
                        false
                    }
                    Some(_) => true,
                    None => false,
                },
                None => false,
            });
        if let Some(until) = self.accept_paused_until {
            if self.now >= until {
                self.accept_paused_until = None;
                // Accept at once: the listener may have a backlog and no new edge to report.
                self.accept(dispatch);
            }
        }
        if let (Some(scan), Some(period)) = (self.next_idle_scan, self.cfg.scan_period()) {
            if self.now >= scan {
                self.next_idle_scan = Some(self.now + period);
                let now = self.now;
                let stopping = self.stopping_since.is_some();
                for (i, slot) in self.slots.iter_mut().enumerate() {
                    let Some(c) = slot.conn.as_mut() else {
                        continue;
                    };
                    if c.linger_until.is_some() {
                        continue; // bounded by its linger deadline
                    }
                    // Idle: the server was ready to read and nothing came. While reading is
                    // paused by the server itself (output over the limit, worker behind, the
                    // service's hold) the clock does not run; a connection the service
                    // exempted is never idle.
                    let reading = c.want(stopping).read;
                    if !reading {
                        c.last_read.reset(now);
                    }
                    let idle = self
                        .cfg
                        .idle_timeout
                        .is_some_and(|t| reading && c.last_read.expired(now, t));
                    // Send timeout: output is owed and the peer took none of it for that long.
                    let stuck = self
                        .cfg
                        .send_timeout
                        .is_some_and(|t| c.queued() > 0 && now.duration_since(c.last_write) >= t);
                    if idle || stuck {
                        self.to_close.push((i as u32, CloseWhy::Idle));
                    }
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.stopping_since = Some(self.now);
        if let Some(l) = self.listener.take() {
            let _ = self.poller.delete(&l);
        }
        // Stop reading everywhere: the interest recomputation sees `stopping`.
        for i in 0..self.slots.len() {
            if self.slots[i].conn.is_some() {
                self.mark_dirty(i as u32);
            }
        }
    }

    fn close_all<D: Dispatch>(&mut self, dispatch: &mut D) {
        for i in 0..self.slots.len() {
            if self.slots[i].conn.is_some() {
                self.close(i as u32, CloseWhy::Abort, dispatch);
            }
        }
    }

    fn accept<D: Dispatch>(&mut self, dispatch: &mut D) {
        if self.accept_paused_until.is_some() || self.stopping_since.is_some() {
            return;
        }
        if self.listener.is_none() {
            return;
        }
        let mut accepted = 0;
        while accepted < ACCEPT_BATCH {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match accept_at_choke_point(&self.cfg, listener) {
                Ok((stream, peer)) => {
                    accepted += 1;
                    self.backoff.reset();
                    if !self.shared.admit(self.cfg.max_connections) {
                        // Accepted and closed at once, so it does not sit in the backlog.
                        self.shared.refused(&self.stats, self.cfg.max_connections);
                        drop(stream);
                        continue;
                    }
                    if let Err(e) = prepare_stream(&stream, !ACCEPTS_NONBLOCKING, &self.accept) {
                        let d = classify(Site::Configure, &e);
                        self.stats.error(d);
                        self.shared.release();
                        continue;
                    }
                    self.admit(stream, peer, dispatch);
                }
                Err(e) => match classify(Site::Accept, &e) {
                    Disposition::Retry => continue,
                    Disposition::WouldBlock => break,
                    Disposition::SkipPeer => {
                        self.stats.error(Disposition::SkipPeer);
                        continue;
                    }
                    d => {
                        // Exhausted (EMFILE, ENFILE, ENOBUFS, ENOMEM), or the listener itself
                        // failed (Fatal: a bug): pause the listener with backoff. Never spin,
                        // never exit. An error about one peer is SkipPeer, never this.
                        self.stats.error(d);
                        Stats::add(&self.stats.accept_pauses, 1);
                        let pause = self.backoff.step();
                        self.accept_paused_until = Some(self.now + pause);
                        if let Some(suppressed) = self.accept_log.allow() {
                            let what = if is_out_of_descriptors(&e) {
                                "out of file descriptors"
                            } else {
                                "accept failed"
                            };
                            tracing::warn!(
                                "{what} ({e}); pausing accept for {pause:?} \
                                 ({} open connections, {suppressed} similar lines suppressed)",
                                self.open
                            );
                        }
                        return;
                    }
                },
            }
        }
        // Re-arm: either WouldBlock was seen, or the batch is spent and the listener is
        // still readable (level semantics after modify report it again).
        if let Some(l) = self.listener.as_ref() {
            match self.poller.modify(l, Event::readable(LISTENER)) {
                Ok(()) => self.listener_armed = true,
                Err(e) => {
                    // Retry through the accept-pause timer rather than stop accepting.
                    self.stats.error(classify(Site::Configure, &e));
                    let pause = self.backoff.step();
                    self.accept_paused_until = Some(self.now + pause);
                    if let Some(suppressed) = self.accept_log.allow() {
                        tracing::warn!(
                            "cannot re-arm the listener ({e}); retrying in {pause:?} \
                             ({suppressed} similar lines suppressed)"
                        );
                    }
                }
            }
        }
    }

    fn admit<D: Dispatch>(&mut self, stream: TcpStream, peer: SocketAddr, dispatch: &mut D) {
        let info = match self.accept.local_of(&stream) {
            Ok(local) => ConnInfo::new(peer, local),
            Err(_) => ConnInfo::new(peer, ConnInfo::unknown().local),
        };
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
        if let Err(e) = register(&self.poller, &stream, Event::readable(slot as usize)) {
            let d = classify(Site::Configure, &e);
            self.stats.error(d);
            self.free.push(slot);
            self.shared.release();
            return;
        }
        self.slots[slot as usize].conn = Some(Conn {
            id,
            stream,
            out: Vec::new(),
            out_pos: 0,
            files: FileQueue::default(),
            want_drained: false,
            read_eof: false,
            closing: false,
            out_paused: false,
            over_limit: false,
            hold_reading: false,
            stalled: false,
            armed: Interest {
                read: true,
                write: false,
            },
            dirty: false,
            last_read: IdleClock::Since(self.now),
            last_write: self.now,
            linger_until: None,
        });
        self.open += 1;
        Stats::add(&self.stats.accepted, 1);
        dispatch.open(id, &info);
    }

    fn conn_event<D: Dispatch>(
        &mut self,
        slot: u32,
        readable: bool,
        writable: bool,
        dispatch: &mut D,
    ) {
        match self
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.conn.as_mut())
        {
            Some(c) => c.armed = Interest::default(),
            None => return,
        }
        self.mark_dirty(slot);
        if writable && !self.write_queued(slot) {
            return;
        }
        if readable {
            self.read(slot, dispatch);
        }
    }

    fn mark_dirty(&mut self, slot: u32) {
        if let Some(c) = self.slots[slot as usize].conn.as_mut() {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Read until WouldBlock, EOF, the budget, or congestion. Returns false if the
    /// connection was closed.
    fn read<D: Dispatch>(&mut self, slot: u32, dispatch: &mut D) -> bool {
        let stopping = self.stopping_since.is_some();
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return false;
        };
        if !c.want(stopping).read {
            return true;
        }
        if c.linger_until.is_some() {
            // Lingering: discard input until EOF; then the close is final.
            loop {
                match read_at_choke_point(&self.cfg, &mut c.stream, &mut self.read_buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => match classify(Site::Recv, &e) {
                        Disposition::Retry => continue,
                        Disposition::WouldBlock => return true,
                        _ => break,
                    },
                }
            }
            self.to_close.push((slot, CloseWhy::Final));
            return false;
        }
        let mut total = 0usize;
        loop {
            if dispatch.congested(c.id) {
                if !c.stalled {
                    c.stalled = true;
                    Stats::add(&self.stats.read_pauses, 1);
                    self.stalled.push(slot);
                }
                return true;
            }
            match read_at_choke_point(&self.cfg, &mut c.stream, &mut self.read_buf) {
                Ok(0) => {
                    c.read_eof = true;
                    dispatch.eof(c.id);
                    return true;
                }
                Ok(n) => {
                    c.last_read.reset(self.now);
                    Stats::add(&self.stats.bytes_in, n as u64);
                    dispatch.data(c.id, &self.read_buf[..n]);
                    total += n;
                    if n < self.read_buf.len() {
                        // A short read on a stream socket means its receive queue is empty
                        // now: one `WouldBlock` read saved per wake. Anything that arrives
                        // later is reported by the oneshot re-arm at the end of the turn.
                        return true;
                    }
                    if total >= self.cfg.read_budget || c.queued() + total >= self.cfg.output_high {
                        // Fairness: the re-arm at the end of the turn brings us back. A
                        // connection whose answers are piling up reads no further ahead than
                        // its output limit.
                        return true;
                    }
                }
                Err(e) => match classify(Site::Recv, &e) {
                    Disposition::Retry => continue,
                    Disposition::WouldBlock => return true,
                    d => {
                        self.stats.error(d);
                        if d == Disposition::Fatal {
                            log_fatal(&mut self.fatal_log, "read", c.id, &e);
                        }
                        // PeerGone, Exhausted (nothing to wait on), Fatal: close this one.
                        self.to_close.push((slot, CloseWhy::Abort));
                        return false;
                    }
                },
            }
        }
    }

    /// Write queued output until it is gone or the socket would block. Returns false if the
    /// connection is being closed.
    fn write_queued(&mut self, slot: u32) -> bool {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return false;
        };
        loop {
            let next_file = c.files.next_at();
            let upto = next_file.unwrap_or(c.out.len());
            let result = if c.out_pos < upto {
                let head = &c.out[c.out_pos..upto];
                write_at_choke_point(&self.cfg, &c.stream, head, next_file.is_some())
                    .map(FileStep::Bytes)
            } else if let Some(f) = c.files.front() {
                send_file_part(&self.cfg, &mut c.stream, &f.range, &mut c.out, c.out_pos)
            } else {
                break;
            };
            match result {
                Ok(FileStep::Copied(n)) => {
                    // No zero-copy call here: the next chunk of the file was read into the
                    // output buffer in front of the file, and goes out as ordinary output.
                    c.files.shift(n as isize);
                    c.files.advance(n as u64);
                }
                Ok(step) => {
                    let (n, from_file) = match step {
                        FileStep::Bytes(n) => (n, false),
                        FileStep::Sent(n) | FileStep::Copied(n) => (n, true),
                    };
                    if from_file {
                        // Sent straight from the file.
                        Stats::add(&self.stats.file_bytes, n as u64);
                        Stats::add(&self.stats.bytes_out, n as u64);
                        c.files.advance(n as u64);
                        if n == 0 {
                            // The file ended before the promised length: the peer cannot be
                            // given what it was told to expect.
                            self.to_close.push((slot, CloseWhy::Abort));
                            return false;
                        }
                    } else {
                        c.out_pos += n;
                        Stats::add(&self.stats.bytes_out, n as u64);
                    }
                    if n > 0 {
                        c.last_write = self.now;
                    }
                }
                Err(e) => match classify(Site::Send, &e) {
                    Disposition::Retry => continue,
                    Disposition::WouldBlock => break,
                    d => {
                        self.stats.error(d);
                        if d == Disposition::Fatal {
                            log_fatal(&mut self.fatal_log, "write", c.id, &e);
                        }
                        self.to_close.push((slot, CloseWhy::Abort));
                        return false;
                    }
                },
            }
        }
        if c.queued() == 0 {
            c.out.clear();
            c.out_pos = 0;
            if c.out.capacity() > KEEP_OUTPUT_CAPACITY {
                // A burst is over: give its memory back instead of holding it per connection.
                c.out = Vec::new();
            }
            if c.closing && c.linger_until.is_none() {
                self.to_close.push((slot, CloseWhy::Done));
                return false;
            }
        } else if c.out_pos > c.out.len() / 2 {
            c.out.drain(..c.out_pos);
            c.files.shift(-(c.out_pos as isize));
            c.out_pos = 0;
        }
        let queued = c.queued();
        if c.out_paused && queued <= self.cfg.output_low {
            if std::mem::take(&mut c.over_limit) {
                self.backlog.push((c.id, false));
            }
            c.out_paused = c.hold_reading;
        }
        if c.want_drained && queued <= self.cfg.output_low {
            c.want_drained = false;
            self.drained.push(c.id);
        }
        true
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
        if c.id != conn || c.closing {
            // A late command for a connection that is gone (or already finishing): its
            // output is owed and dropped.
            if let Command::Send(bytes) = cmd {
                Stats::add(&self.stats.discarded, bytes.len() as u64);
            }
            return;
        }
        if c.queued() == 0 {
            c.last_write = self.now;
        }
        match cmd {
            Command::Send(bytes) => {
                // Written at the end of the turn, coalesced with later sends.
                c.out.extend_from_slice(bytes);
            }
            Command::SendFile(range) => {
                c.files.push(c.out.len(), range);
            }
            Command::NotifyDrained => {
                // Checked when the connection's output is next written (this turn).
                c.want_drained = true;
            }
            Command::PauseUntilDrained => {
                // No backlog call: the output is not over the limit.
                c.want_drained = true;
                c.hold_reading = true;
                c.out_paused = true;
            }
            Command::ResumeReading => {
                // Reading resumes when the output is next looked at (this turn), if it is
                // low enough by then.
                c.hold_reading = false;
            }
            Command::IdleExempt(on) => c.last_read.exempt(on, now),
            Command::Close => {
                c.closing = true;
            }
        }
        self.mark_dirty(slot);
    }

    fn resume_stalled<D: Dispatch>(&mut self, dispatch: &mut D) {
        let mut i = 0;
        while i < self.stalled.len() {
            let slot = self.stalled[i];
            let resume = match self.slots[slot as usize].conn.as_mut() {
                Some(c) if c.stalled => {
                    if dispatch.congested(c.id) {
                        false
                    } else {
                        c.stalled = false;
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

    /// Write what commands queued this turn, then give the poller the interest each
    /// touched connection needs.
    fn rearm(&mut self) {
        let stopping = self.stopping_since.is_some();
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            i += 1;
            let pending_write = match self.slots[slot as usize].conn.as_ref() {
                // A paused connection too: `write_queued` decides whether it reads again.
                Some(c) => c.queued() > 0 || c.closing || c.want_drained || c.out_paused,
                None => continue,
            };
            if pending_write && !self.write_queued(slot) {
                // Queued for closing. An orderly close lingers, and `start_linger` marks the
                // connection again for its read interest: it must not still be marked.
                if let Some(c) = self.slots[slot as usize].conn.as_mut() {
                    c.dirty = false;
                }
                continue;
            }
            let Some(c) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            c.dirty = false;
            if c.queued() > self.cfg.output_high && !c.out_paused {
                // The socket does not keep up: stop reading until it drains.
                c.out_paused = true;
                c.over_limit = true;
                Stats::add(&self.stats.read_pauses, 1);
                self.backlog.push((c.id, true));
            }
            let want = c.want(stopping);
            if want != c.armed {
                let ev = match (want.read, want.write) {
                    (true, true) => Event::all(slot as usize),
                    (true, false) => Event::readable(slot as usize),
                    (false, true) => Event::writable(slot as usize),
                    (false, false) => Event::none(slot as usize),
                };
                match self.poller.modify(&c.stream, ev) {
                    Ok(()) => c.armed = want,
                    Err(e) => {
                        self.stats.error(classify(Site::Configure, &e));
                        self.to_close.push((slot, CloseWhy::Abort));
                    }
                }
            }
        }
        self.dirty.clear();
    }

    /// Shutdown, once the workers have answered everything: every connection closes after
    /// its queued output is written.
    fn finish_all(&mut self) {
        for i in 0..self.slots.len() {
            if let Some(c) = self.slots[i].conn.as_mut() {
                if !c.closing {
                    c.closing = true;
                    self.mark_dirty(i as u32);
                }
            }
        }
    }

    /// Orderly close, step one: shut down the write side and read (discarding) until the
    /// peer's EOF, so that unread input at close(2) does not turn into a reset that destroys
    /// output the peer has not read yet. Returns false when the socket can close at once.
    fn start_linger(&mut self, slot: u32) -> bool {
        let Some(c) = self.slots[slot as usize].conn.as_mut() else {
            return false;
        };
        if c.linger_until.is_some() {
            return true;
        }
        let mut until = self.now + self.cfg.linger;
        if let Some(since) = self.stopping_since {
            until = until.min(since + self.cfg.shutdown_grace);
        }
        if c.read_eof || until <= self.now {
            // The peer already finished sending: nothing can arrive to cause a reset (or
            // there is no time left to wait for it).
            return false;
        }
        if let Err(e) = c.stream.shutdown(std::net::Shutdown::Write) {
            self.stats.error(classify(Site::Configure, &e));
            return false;
        }
        c.linger_until = Some(until);
        self.lingering.push(slot);
        self.mark_dirty(slot);
        true
    }

    fn close<D: Dispatch>(&mut self, slot: u32, why: CloseWhy, dispatch: &mut D) {
        if why == CloseWhy::Done && self.start_linger(slot) {
            return;
        }
        let s = &mut self.slots[slot as usize];
        let Some(c) = s.conn.take() else {
            return;
        };
        s.generation = (s.generation + 1) & ConnId::GENERATION_MASK;
        Stats::add(&self.stats.discarded, c.queued() as u64);
        let _ = self.poller.delete(&c.stream);
        if why == CloseWhy::Idle {
            Stats::add(&self.stats.timed_out, 1);
        }
        drop(c.stream);
        self.free.push(slot);
        self.open -= 1;
        self.shared.release();
        Stats::add(&self.stats.closed, 1);
        dispatch.closed(c.id);
    }
}

// The choke points: every accept, read and write result this driver classifies comes
// through one of these three functions. With the `fault-injection` feature and a plan in the
// config, a scripted result can stand in for the real call.

fn accept_at_choke_point(
    cfg: &DriverConfig,
    listener: &TcpListener,
) -> io::Result<(TcpStream, SocketAddr)> {
    #[cfg(feature = "fault-injection")]
    if let Some(f) = cfg.fault_plan().and_then(|p| p.next(Site::Accept)) {
        if let Some(e) = f.error() {
            return Err(e);
        }
    }
    let _ = cfg;
    accept_nonblocking(listener)
}

/// Whether [`accept_nonblocking`] gives non-blocking sockets (`accept4(SOCK_NONBLOCK)`), so
/// no call is needed per connection to make them so.
const ACCEPTS_NONBLOCKING: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Accept a connection: non-blocking already where the system can ([`ACCEPTS_NONBLOCKING`]).
fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let (socket, addr) =
            socket2::SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
        let peer = addr
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
        Ok((TcpStream::from(socket), peer))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    listener.accept()
}

fn read_at_choke_point(
    cfg: &DriverConfig,
    stream: &mut TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    #[cfg(feature = "fault-injection")]
    return crate::fault::intercept(cfg.fault_plan(), Site::Recv, |cap| {
        let n = cap.map_or(buf.len(), |c| c.min(buf.len()));
        stream.read(&mut buf[..n])
    });
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = cfg;
        stream.read(buf)
    }
}

fn write_at_choke_point(
    cfg: &DriverConfig,
    stream: &TcpStream,
    buf: &[u8],
    before_file: bool,
) -> io::Result<usize> {
    #[cfg(feature = "fault-injection")]
    return crate::fault::intercept(cfg.fault_plan(), Site::Send, |cap| {
        let n = cap.map_or(buf.len(), |c| c.min(buf.len()));
        write_output(stream, &buf[..n], before_file)
    });
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = cfg;
        write_output(stream, buf, before_file)
    }
}

/// Most bytes of a file sent (or copied) in one call.
const FILE_CHUNK: usize = 1 << 20;

/// What one step of writing output did.
enum FileStep {
    /// Bytes of the output buffer written.
    Bytes(usize),
    /// Bytes sent from the file straight to the socket (0: the file ended early).
    Sent(usize),
    /// Bytes of the file read into the output buffer at the file's place, where the OS has
    /// no zero-copy call (the caller advances the range past them).
    #[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
    Copied(usize),
}

/// Send the next part of a file range: `sendfile` where the OS has it, else read the next
/// chunk into `out` at `at`, in front of the file's place.
fn send_file_part(
    cfg: &DriverConfig,
    stream: &mut TcpStream,
    range: &FileRange,
    out: &mut Vec<u8>,
    at: usize,
) -> io::Result<FileStep> {
    let want = usize::try_from(range.len)
        .unwrap_or(usize::MAX)
        .min(FILE_CHUNK);
    #[cfg(feature = "fault-injection")]
    if let Some(f) = cfg.fault_plan().and_then(|p| p.next(Site::Send)) {
        if let Some(e) = f.error() {
            return Err(e);
        }
    }
    let _ = cfg;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = (out, at);
        crate::net::sendfile(stream, range, want).map(FileStep::Sent)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = stream;
        let mut chunk = vec![0; want];
        let n = read_file_at(&range.file, &mut chunk, range.offset)?;
        if n == 0 {
            return Ok(FileStep::Sent(0));
        }
        out.splice(at..at, chunk[..n].iter().copied());
        Ok(FileStep::Copied(n))
    }
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
fn read_file_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_file_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// A stream registered with a poller, deleted from it before the stream is closed: the safe
/// way to use `polling` outside this driver (the load generator uses it).
pub struct Registered {
    poller: Arc<Poller>,
    stream: TcpStream,
}

impl Registered {
    /// Register `stream` with `poller` for `interest` in `mode`.
    ///
    /// # Errors
    /// Fails when the poller refuses the descriptor.
    pub fn new(
        poller: &Arc<Poller>,
        stream: TcpStream,
        interest: Event,
        mode: polling::PollMode,
    ) -> io::Result<Registered> {
        register_with_mode(poller, &stream, interest, mode)?;
        Ok(Registered {
            poller: poller.clone(),
            stream,
        })
    }
}

impl std::ops::Deref for Registered {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl std::ops::DerefMut for Registered {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Delete before the stream field is dropped (closed) right after this.
        let _ = self.poller.delete(&self.stream);
    }
}

/// Register `source` with `poller` (oneshot).
fn register<S: polling::AsRawSource>(poller: &Poller, source: S, ev: Event) -> io::Result<()> {
    register_with_mode(poller, source, ev, polling::PollMode::Oneshot)
}

/// Register `source` with `poller`.
///
/// One of the crate's two `unsafe` calls (the other attaches a listener group's BPF
/// program, `net::keep_group`): `polling` requires that a registered source is
/// deleted from the poller before it is closed, or the OS may deliver events for a reused
/// descriptor.
#[allow(unsafe_code)]
fn register_with_mode<S: polling::AsRawSource>(
    poller: &Poller,
    source: S,
    ev: Event,
    mode: polling::PollMode,
) -> io::Result<()> {
    // SAFETY: every source registered here is a socket that is deleted from the poller
    // before it is dropped: the driver's listener and connections (see `close`,
    // `begin_shutdown`) and `Registered` streams (its `Drop`).
    unsafe { poller.add_with_mode(source, ev, mode) }
}
