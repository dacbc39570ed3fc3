//! The event loops: their connections, how messages are built, sent, read back and
//! checked, and what each loop tallies.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use polling::{Event, Events, PollMode, Poller};
use ringport_fallback::errno::{classify, Disposition, Site};
use ringport_fallback::Registered;

use super::{MAX_LATENCY_NS, MAX_SLEEP, OPEN_LOOP_TICK};

/// Bytes read per call.
const READ_BUFFER: usize = 64 * 1024;
/// Open loop: messages one connection may have sent or queued without an answer. A message
/// that falls due beyond this is missed (counted, never sent): memory stays bounded
/// whatever `--rate` asks for.
pub(super) const OPEN_LOOP_BACKLOG: usize = 1024;
/// Open loop: unsent bytes queued on one connection beyond which messages due are missed
/// (at least one message is always allowed; with many connections less, see
/// [`Plan::queue_bytes`]).
pub(super) const OPEN_LOOP_QUEUE_BYTES: usize = 256 * 1024;

/// What every event loop needs to know; times in nanoseconds since the run's start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) size: usize,
    pub(super) depth: usize,
    pub(super) verify: bool,
    /// Open loop: nanoseconds between two messages of one connection (fractional: a rate
    /// above one message per nanosecond per connection is still planned exactly).
    pub(super) interval: Option<f64>,
    /// Open loop: unsent bytes one connection may queue (at least one message).
    pub(super) queue_bytes: usize,
    pub(super) connections: usize,
    pub(super) warmup_end: u64,
    pub(super) end: u64,
}

/// State shared by the event loops and the main thread.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) stop: AtomicBool,
    /// Answers so far (warm-up included), for the progress line.
    pub(super) answered: AtomicU64,
    pub(super) errors: Mutex<Vec<Failure>>,
}

/// Why one connection (or a loop) failed: `reason` is what connections failing the same way
/// share, `detail` the line that names this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The same for every connection that failed this way.
    pub reason: String,
    /// The whole message for this connection.
    pub detail: String,
}

impl Shared {
    pub(super) fn fail(&self, reason: String, detail: String) {
        if let Ok(mut e) = self.errors.lock() {
            e.push(Failure { reason, detail });
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One connection of an event loop.
struct Conn {
    /// Number among all connections (for messages and the pattern).
    index: usize,
    stream: Registered,
    /// The bytes of a message after its 8-byte sequence number.
    pattern: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Send (closed loop) or scheduled (open loop) time of each message in flight.
    stamps: VecDeque<u64>,
    next_seq: u64,
    recv_seq: u64,
    recv_off: usize,
    bytes_written: u64,
    bytes_read: u64,
    /// Open loop: the schedule of this connection: message `k` is due at
    /// `offset + k * interval`.
    offset: f64,
    /// Open loop: the next message of the schedule not yet sent or missed.
    next_k: u64,
    /// Open loop: the messages `window.0..window.1` are due in the measured window.
    window: (u64, u64),
    dead: bool,
}

impl Conn {
    fn new(index: usize, stream: Registered, plan: &Plan) -> Conn {
        let pattern = (0..plan.size)
            .map(|i| {
                (i as u64)
                    .wrapping_mul(131)
                    .wrapping_add(index as u64 * 29 + 7) as u8
            })
            .collect();
        // Connections start their schedules spread over one interval.
        let offset = plan
            .interval
            .map_or(0.0, |iv| iv * index as f64 / plan.connections as f64);
        let first_at_or_after = |t: u64| match plan.interval {
            Some(iv) if t as f64 > offset => ((t as f64 - offset) / iv).ceil() as u64,
            _ => 0,
        };
        let window = (
            first_at_or_after(plan.warmup_end),
            first_at_or_after(plan.end),
        );
        Conn {
            index,
            stream,
            pattern,
            out: Vec::with_capacity(if plan.interval.is_some() {
                plan.size
            } else {
                plan.size * plan.depth.min(64)
            }),
            out_pos: 0,
            stamps: VecDeque::with_capacity(plan.depth.max(16)),
            next_seq: 0,
            recv_seq: 0,
            recv_off: 0,
            bytes_written: 0,
            bytes_read: 0,
            offset,
            next_k: 0,
            window,
            dead: false,
        }
    }

    /// Open loop: when message `k` of this connection is due.
    fn due(&self, k: u64, interval: f64) -> u64 {
        (self.offset + k as f64 * interval) as u64
    }

    /// Open loop: how many of the messages `a..b` of this connection are due in the window.
    fn in_window(&self, a: u64, b: u64) -> u64 {
        b.min(self.window.1).saturating_sub(a.max(self.window.0))
    }

    /// Open loop: how many more messages may be queued now (see [`OPEN_LOOP_BACKLOG`]).
    fn room(&self, size: usize, queue_bytes: usize) -> u64 {
        let unsent = self.out.len() - self.out_pos;
        let by_bytes = if unsent == 0 {
            queue_bytes.max(size).div_ceil(size)
        } else {
            queue_bytes.saturating_sub(unsent).div_ceil(size)
        };
        OPEN_LOOP_BACKLOG
            .saturating_sub(self.stamps.len())
            .min(by_bytes) as u64
    }

    /// Queue the next message, stamped `at`.
    fn queue(&mut self, at: u64) {
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= READ_BUFFER {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        let seq = self.next_seq.to_le_bytes();
        let head = self.pattern.len().min(8);
        self.out.extend_from_slice(&seq[..head]);
        self.out.extend_from_slice(&self.pattern[head..]);
        self.next_seq += 1;
        self.stamps.push_back(at);
    }

    /// Compare `data`, found at byte `off` of the message being received, with what was
    /// sent; on a mismatch name it.
    fn check(&self, data: &[u8], off: usize) -> Result<(), String> {
        let want_at = |pos: usize| {
            if pos < 8 {
                self.recv_seq.to_le_bytes()[pos]
            } else {
                self.pattern[pos]
            }
        };
        let head = 8usize.saturating_sub(off).min(data.len());
        let tail_ok = data[head..] == self.pattern[off + head..off + data.len()];
        let head_ok = (0..head).all(|i| data[i] == want_at(off + i));
        if head_ok && tail_ok {
            return Ok(());
        }
        let i = (0..data.len())
            .find(|&i| data[i] != want_at(off + i))
            .unwrap_or(0);
        Err(format!(
            "verify mismatch on connection {}: byte {} of message {} came back as {:#04x}, \
             {:#04x} was sent",
            self.index,
            off + i,
            self.recv_seq,
            data[i],
            want_at(off + i)
        ))
    }
}

/// Per-thread results.
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    /// Open loop: how late each message left against its schedule.
    pub(super) lag: Histogram<u64>,
    pub(super) msgs: u64,
    /// With `--verify`: bytes that came back as sent.
    pub(super) verified: u64,
    /// Open loop: messages the schedule had due in the window, and how many of them were
    /// sent (the others were missed).
    pub(super) planned: u64,
    pub(super) sent: u64,
}

/// One event loop and the connections it drives.
pub(super) struct Loop<'a> {
    poller: Arc<Poller>,
    mode: PollMode,
    conns: Vec<Conn>,
    plan: Plan,
    shared: &'a Shared,
    start: Instant,
    tally: Tally,
    buf: Vec<u8>,
}

impl<'a> Loop<'a> {
    pub(super) fn new(
        streams: Vec<(usize, TcpStream)>,
        plan: Plan,
        shared: &'a Shared,
    ) -> io::Result<Self> {
        let poller = Arc::new(Poller::new()?);
        // Edge-triggered: registered once, never re-armed. Where the OS has no edge mode,
        // oneshot interest is re-armed after each event.
        let mode = if poller.supports_edge() {
            PollMode::Edge
        } else {
            PollMode::Oneshot
        };
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut lp = Loop {
            poller,
            mode,
            conns: Vec::with_capacity(streams.len()),
            plan,
            shared,
            // Set by `run`: the run starts once every loop is built.
            start: Instant::now(),
            tally: Tally {
                lag: latency.clone(),
                latency,
                msgs: 0,
                verified: 0,
                planned: 0,
                sent: 0,
            },
            buf: vec![0; READ_BUFFER],
        };
        for (index, stream) in streams {
            let key = lp.conns.len();
            let stream = Registered::new(&lp.poller, stream, Event::all(key), mode)?;
            lp.conns.push(Conn::new(index, stream, &plan));
        }
        Ok(lp)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn fail(&mut self, key: usize, (reason, detail): (String, String)) {
        let c = &mut self.conns[key];
        if !c.dead {
            c.dead = true;
            self.shared.fail(reason, detail);
        }
    }

    /// Describe an I/O failure on connection `key`: what connections failing the same way
    /// share, and the line for this one.
    fn io_failure(&self, key: usize, site: Site, e: &io::Error) -> (String, String) {
        let c = &self.conns[key];
        let reason = if classify(site, e) == Disposition::PeerGone {
            format!("the server reset the connection ({e})")
        } else {
            format!("I/O error ({e})")
        };
        let detail = format!(
            "connection {} to {}: {reason} after {} answered messages",
            c.index,
            c.stream
                .peer_addr()
                .map_or_else(|_| "the server".to_string(), |a| a.to_string()),
            c.recv_seq
        );
        (reason, detail)
    }

    /// Drive the connections from `start` (the run's time zero) until the plan's end or a
    /// stop, and return what was tallied.
    pub(super) fn run(mut self, start: Instant) -> Tally {
        self.start = start;
        let now = self.now();
        if self.plan.interval.is_none() {
            for key in 0..self.conns.len() {
                for _ in 0..self.plan.depth {
                    self.conns[key].queue(now);
                }
                self.write(key);
            }
        }
        let mut events = Events::with_capacity(NonZeroUsize::new(1024).expect("non-zero"));
        let tick = OPEN_LOOP_TICK.as_nanos() as u64;
        let mut last_send = 0u64;
        let mut reported = 0u64;
        loop {
            let now = self.now();
            if now >= self.plan.end || self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let mut wake_at = self.plan.end.min(now + MAX_SLEEP.as_nanos() as u64);
            if let Some(interval) = self.plan.interval {
                if now >= last_send + tick {
                    last_send = now;
                    for key in 0..self.conns.len() {
                        self.send_due(key, now, interval);
                    }
                }
                let due = self
                    .conns
                    .iter()
                    .filter(|c| !c.dead)
                    .map(|c| c.due(c.next_k, interval))
                    .min()
                    .unwrap_or(u64::MAX);
                wake_at = wake_at.min(due.max(last_send + tick));
            }
            let timeout = Duration::from_nanos(wake_at.saturating_sub(self.now()));
            events.clear();
            if let Err(e) = self.poller.wait(&mut events, Some(timeout)) {
                if classify(Site::Wait, &e) != Disposition::Retry {
                    let what = format!("waiting for events failed: {e}");
                    self.shared.fail(what.clone(), what);
                    break;
                }
            }
            for ev in events.iter() {
                let key = ev.key;
                if key >= self.conns.len() || self.conns[key].dead {
                    continue;
                }
                if ev.readable {
                    self.read(key);
                }
                if ev.writable || !self.conns[key].out.is_empty() {
                    self.write(key);
                }
                self.rearm(key);
            }
            let answered = self.tally_answered();
            if answered > reported {
                self.shared
                    .answered
                    .fetch_add(answered - reported, Ordering::Relaxed);
                reported = answered;
            }
        }
        self.tally_out()
    }

    /// Open loop: queue the messages of connection `key` that fell due by `now`, as many as
    /// its backlog allows, oldest first; the rest are missed. Counted in arithmetic, not one
    /// by one: a rate far beyond what can be sent costs no more than one that can.
    fn send_due(&mut self, key: usize, now: u64, interval: f64) {
        let (size, warmup_end, queue_bytes) =
            (self.plan.size, self.plan.warmup_end, self.plan.queue_bytes);
        let c = &mut self.conns[key];
        if c.dead || (now as f64) < c.offset {
            return;
        }
        let due_by_now = ((now as f64 - c.offset) / interval).floor() as u64 + 1;
        if due_by_now <= c.next_k {
            return;
        }
        let first = c.next_k;
        let send = (due_by_now - first).min(c.room(size, queue_bytes));
        for k in first..first + send {
            let due = c.due(k, interval);
            c.queue(due);
            if due >= warmup_end {
                self.tally.lag.saturating_record(now.saturating_sub(due));
            }
        }
        self.tally.sent += c.in_window(first, first + send);
        self.tally.planned += c.in_window(first, due_by_now);
        c.next_k = due_by_now;
        self.write(key);
    }

    fn tally_answered(&self) -> u64 {
        self.conns.iter().map(|c| c.recv_seq).sum()
    }

    fn tally_out(mut self) -> Tally {
        let empty = || Histogram::new(1).expect("a histogram of 1 significant digit");
        Tally {
            latency: std::mem::replace(&mut self.tally.latency, empty()),
            lag: std::mem::replace(&mut self.tally.lag, empty()),
            msgs: self.tally.msgs,
            verified: self.tally.verified,
            planned: self.tally.planned,
            sent: self.tally.sent,
        }
    }

    fn rearm(&mut self, key: usize) {
        if self.mode != PollMode::Oneshot {
            return;
        }
        let c = &self.conns[key];
        if c.dead {
            return;
        }
        let ev = Event::new(key, true, c.out_pos < c.out.len());
        if let Err(e) = self.poller.modify(&*c.stream, ev) {
            let msg = self.io_failure(key, Site::Wait, &e);
            self.fail(key, msg);
        }
    }

    /// Write what is queued on `key`, until done or the socket is full.
    fn write(&mut self, key: usize) {
        loop {
            let c = &mut self.conns[key];
            if c.dead || c.out_pos == c.out.len() {
                return;
            }
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(n) => {
                    c.out_pos += n;
                    c.bytes_written += n as u64;
                    if c.out_pos == c.out.len() {
                        c.out.clear();
                        c.out_pos = 0;
                    }
                }
                Err(e) => match classify(Site::Send, &e) {
                    Disposition::Retry => {}
                    Disposition::WouldBlock => return,
                    _ => {
                        let msg = self.io_failure(key, Site::Send, &e);
                        self.fail(key, msg);
                        return;
                    }
                },
            }
        }
    }

    /// Read what arrived on `key` and account for every message it completes.
    fn read(&mut self, key: usize) {
        loop {
            let n = match self.conns[key].stream.read(&mut self.buf) {
                Ok(0) => {
                    let c = &self.conns[key];
                    let reason = "the server closed the connection";
                    let detail = format!(
                        "connection {}: {reason} after {} answered messages ({} of {} bytes \
                         sent came back)",
                        c.index, c.recv_seq, c.bytes_read, c.bytes_written
                    );
                    self.fail(key, (reason.to_string(), detail));
                    return;
                }
                Ok(n) => n,
                Err(e) => match classify(Site::Recv, &e) {
                    Disposition::Retry => continue,
                    Disposition::WouldBlock => return,
                    _ => {
                        let msg = self.io_failure(key, Site::Recv, &e);
                        self.fail(key, msg);
                        return;
                    }
                },
            };
            if let Err(msg) = self.take(key, n) {
                self.fail(key, msg);
                return;
            }
            if n < self.buf.len() {
                // A short read drained the socket: the next edge says when more arrives.
                return;
            }
        }
    }

    /// Account for `n` bytes just read into the buffer on `key`.
    fn take(&mut self, key: usize, n: usize) -> Result<(), (String, String)> {
        let now = self.now();
        let plan = self.plan;
        let closed_loop = plan.interval.is_none();
        let in_window = now >= plan.warmup_end && now <= plan.end;
        let c = &mut self.conns[key];
        c.bytes_read += n as u64;
        if c.bytes_read > c.bytes_written {
            return Err((
                "the server sent more bytes than it was sent".to_string(),
                format!(
                    "connection {}: the server sent {} bytes, more than the {} it was sent",
                    c.index, c.bytes_read, c.bytes_written
                ),
            ));
        }
        let mut p = 0;
        while p < n {
            let take = (plan.size - c.recv_off).min(n - p);
            if plan.verify {
                c.check(&self.buf[p..p + take], c.recv_off)
                    .map_err(|detail| ("answers differ from what was sent".to_string(), detail))?;
                self.tally.verified += take as u64;
            }
            c.recv_off += take;
            p += take;
            if c.recv_off < plan.size {
                break;
            }
            c.recv_off = 0;
            c.recv_seq += 1;
            let stamp = c.stamps.pop_front().unwrap_or(now);
            if in_window {
                self.tally
                    .latency
                    .saturating_record(now.saturating_sub(stamp).max(1));
                self.tally.msgs += 1;
            }
            if closed_loop {
                c.queue(now);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(size: usize) -> Plan {
        Plan {
            size,
            depth: 1,
            verify: true,
            interval: None,
            queue_bytes: OPEN_LOOP_QUEUE_BYTES,
            connections: 4,
            warmup_end: 0,
            end: u64::MAX,
        }
    }

    fn conn(size: usize) -> Conn {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let poller = Arc::new(Poller::new().unwrap());
        let s = Registered::new(&poller, s, Event::none(0), PollMode::Oneshot).unwrap();
        Conn::new(3, s, &plan(size))
    }

    #[test]
    fn messages_carry_their_sequence_and_verify_byte_by_byte() {
        for size in [1, 5, 8, 9, 64] {
            let mut c = conn(size);
            c.queue(0);
            c.queue(0);
            let sent = c.out.clone();
            assert_eq!(sent.len(), 2 * size);
            // Check each message in two pieces, as reads may split it.
            for m in 0..2 {
                let msg = &sent[m * size..(m + 1) * size];
                let cut = size / 2;
                c.check(&msg[..cut], 0).unwrap();
                c.check(&msg[cut..], cut).unwrap();
                c.recv_seq += 1;
            }
            c.recv_seq = 1;
            let err = c.check(&sent[..size], 0).unwrap_err();
            assert!(err.contains("mismatch on connection 3"), "{err}");
            assert!(err.contains("byte 0 of message 1"), "{err}");
        }
    }

    #[test]
    fn wrong_tail_byte_is_named() {
        let mut c = conn(16);
        c.queue(0);
        let mut msg = c.out.clone();
        msg[12] ^= 0xff;
        let err = c.check(&msg, 0).unwrap_err();
        assert!(err.contains("byte 12 of message 0"), "{err}");
    }

    #[test]
    fn verified_bytes_are_counted_as_they_are_checked() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let shared = Shared::default();
        let mut lp = Loop::new(vec![(0, s)], plan(10), &shared).unwrap();
        lp.conns[0].queue(0);
        lp.conns[0].queue(0);
        lp.conns[0].bytes_written = 20;
        let sent = lp.conns[0].out.clone();
        lp.buf[..15].copy_from_slice(&sent[..15]);
        lp.take(0, 15).unwrap();
        assert_eq!(lp.tally.verified, 15);
        lp.buf[..5].copy_from_slice(&sent[15..]);
        lp.take(0, 5).unwrap();
        assert_eq!(lp.tally.verified, 20);
        assert_eq!(lp.tally.msgs, 2);
    }
}
