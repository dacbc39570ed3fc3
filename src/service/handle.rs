//! Connection handles: output or a close for a connection, from any thread.
//!
//! Each I/O thread has one [`Mailbox`]. A [`Handle`] checks its connection's state in the
//! mailbox's slot table (written by the I/O thread as connections open, close and back up),
//! queues its request in the mailbox and wakes the I/O thread if it sleeps. The I/O thread
//! drains the mailbox once per turn, applying each request only if the connection's
//! generation still matches: a handle never reaches a connection that took its slot.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ringport_fallback::{ConnId, Waker};

/// Why a [`Handle`] request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandleError {
    /// The connection is closed (or closing): nothing more can reach it.
    Closed,
    /// The connection's queued output is over the server's output limit (the peer does
    /// not read fast enough), or the I/O thread has too much handle output waiting. Nothing
    /// was queued; the send timeout closes a peer that stopped reading.
    Full,
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandleError::Closed => "connection closed",
            HandleError::Full => "connection output full",
        })
    }
}

impl std::error::Error for HandleError {}

/// Slot state: generation in the low 24 bits, and these flags.
const LIVE: u64 = 1 << 63;
const FULL: u64 = 1 << 62;
const GEN_MASK: u64 = ConnId::GENERATION_MASK as u64;

/// What a mailbox request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MailKind {
    Send,
    Close,
    Notify,
}

/// Requests queued by handles: records plus one byte buffer.
#[derive(Debug, Default)]
pub(crate) struct MailQueue {
    pub(crate) items: Vec<(ConnId, MailKind, usize, usize)>,
    pub(crate) bytes: Vec<u8>,
}

impl MailQueue {
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
        if self.bytes.capacity() > 1 << 20 {
            self.bytes = Vec::new();
        }
    }
}

/// One I/O thread's handle requests and connection states.
pub(crate) struct Mailbox {
    queue: Mutex<MailQueue>,
    waiting: AtomicBool,
    bytes: AtomicUsize,
    /// Most handle bytes waiting for the I/O thread at once.
    cap: usize,
    slots: RwLock<Vec<AtomicU64>>,
    waker: Arc<Waker>,
}

impl Mailbox {
    /// A mailbox for the I/O thread woken by `waker`; `cap` bounds the handle bytes that
    /// may wait for it.
    pub(crate) fn new(waker: Arc<Waker>, cap: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            queue: Mutex::new(MailQueue::default()),
            waiting: AtomicBool::new(false),
            bytes: AtomicUsize::new(0),
            cap: cap.max(64 * 1024),
            slots: RwLock::new(Vec::new()),
            waker,
        })
    }

    fn state(&self, conn: ConnId) -> u64 {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots
            .get(conn.slot() as usize)
            .map_or(0, |s| s.load(Ordering::Acquire))
    }

    fn set(&self, conn: ConnId, f: impl FnOnce(u64) -> u64) {
        let slot = conn.slot() as usize;
        {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = slots.get(slot) {
                s.store(f(s.load(Ordering::Relaxed)), Ordering::Release);
                return;
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if slot >= slots.len() {
            let grow = (slot + 1).next_power_of_two().max(64);
            slots.resize_with(grow, || AtomicU64::new(0));
        }
        slots[slot].store(f(0), Ordering::Release);
    }

    /// The I/O thread admitted `conn`.
    pub(crate) fn opened(&self, conn: ConnId) {
        self.set(conn, |_| LIVE | u64::from(conn.generation()));
    }

    /// The I/O thread closed `conn` (or the service asked to close it).
    pub(crate) fn closed(&self, conn: ConnId) {
        self.set(conn, |s| {
            if s & GEN_MASK == u64::from(conn.generation()) {
                s & !LIVE
            } else {
                s
            }
        });
    }

    /// The queued output of `conn` went over the output limit (`true`) or drained (`false`).
    pub(crate) fn backlog(&self, conn: ConnId, over: bool) {
        self.set(conn, |s| {
            if s & GEN_MASK != u64::from(conn.generation()) {
                s
            } else if over {
                s | FULL
            } else {
                s & !FULL
            }
        });
    }

    fn check(&self, conn: ConnId) -> Result<u64, HandleError> {
        let s = self.state(conn);
        if s & LIVE == 0 || s & GEN_MASK != u64::from(conn.generation()) {
            return Err(HandleError::Closed);
        }
        Ok(s)
    }

    fn post(&self, conn: ConnId, kind: MailKind, bytes: &[u8]) -> Result<(), HandleError> {
        let s = self.check(conn)?;
        if kind == MailKind::Send
            && (s & FULL != 0 || self.bytes.load(Ordering::Relaxed) + bytes.len() > self.cap)
        {
            return Err(HandleError::Full);
        }
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let start = q.bytes.len();
            q.bytes.extend_from_slice(bytes);
            let end = q.bytes.len();
            q.items.push((conn, kind, start, end));
            self.bytes.fetch_add(bytes.len(), Ordering::Relaxed);
            self.waiting.store(true, Ordering::Release);
        }
        self.waker.wake();
        Ok(())
    }

    /// True when requests wait (checked by the I/O thread before it sleeps).
    pub(crate) fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Move the waiting requests into `into` (which the caller cleared).
    pub(crate) fn take(&self, into: &mut MailQueue) {
        if !self.waiting() {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *q, into);
        self.waiting.store(false, Ordering::Release);
        self.bytes.store(0, Ordering::Relaxed);
    }
}

/// A connection, reachable from any thread: queue bytes or a close, or have the service
/// called on the connection's own thread ([`Handle::notify`]).
///
/// Cheap to clone and `Send`. Output sent through a handle obeys the same output limit as
/// any other, and never reorders with other output sent through handles; relative to what
/// the service writes from its callbacks it arrives between two of them.
#[derive(Clone)]
pub struct Handle {
    id: ConnId,
    mailbox: Arc<Mailbox>,
}

impl Handle {
    pub(crate) fn new(id: ConnId, mailbox: Arc<Mailbox>) -> Handle {
        Handle { id, mailbox }
    }

    /// A number that identifies this connection among those open on the server (a closed
    /// connection's number may be reused later, with another generation).
    pub fn id(&self) -> u64 {
        self.id.raw()
    }

    /// Queue bytes for the connection.
    ///
    /// # Errors
    /// [`HandleError::Closed`] once the connection is closed; [`HandleError::Full`] when
    /// its output is over the limit (nothing is queued then).
    pub fn send(&self, bytes: &[u8]) -> Result<(), HandleError> {
        self.mailbox.post(self.id, MailKind::Send, bytes)
    }

    /// Write what is queued, then close the connection.
    ///
    /// # Errors
    /// [`HandleError::Closed`] when it is already closed.
    pub fn close(&self) -> Result<(), HandleError> {
        self.mailbox.post(self.id, MailKind::Close, &[])
    }

    /// Have [`Service::notified`](super::Service::notified) called for this connection, on
    /// its own thread.
    ///
    /// # Errors
    /// [`HandleError::Closed`] when the connection is closed.
    pub fn notify(&self) -> Result<(), HandleError> {
        self.mailbox.post(self.id, MailKind::Notify, &[])
    }

    /// True while the connection is open.
    pub fn is_open(&self) -> bool {
        self.mailbox.check(self.id).is_ok()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("id", &self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_to_a_recycled_slot_fails() {
        let mb = Mailbox::new(Waker::new(), 1 << 20);
        let old = ConnId::new(0, 3, 1);
        mb.opened(old);
        let h = Handle::new(old, mb.clone());
        assert!(h.send(b"x").is_ok());
        mb.closed(old);
        assert_eq!(h.send(b"x"), Err(HandleError::Closed));
        let new = ConnId::new(0, 3, 2);
        mb.opened(new);
        assert_eq!(h.send(b"x"), Err(HandleError::Closed));
        assert!(Handle::new(new, mb.clone()).send(b"y").is_ok());
        let mut q = MailQueue::default();
        mb.take(&mut q);
        let conns: Vec<ConnId> = q.items.iter().map(|i| i.0).collect();
        assert_eq!(conns, vec![old, new]);
    }

    #[test]
    fn full_connection_refuses_sends_but_not_close() {
        let mb = Mailbox::new(Waker::new(), 1 << 20);
        let c = ConnId::new(0, 0, 0);
        mb.opened(c);
        mb.backlog(c, true);
        let h = Handle::new(c, mb.clone());
        assert_eq!(h.send(b"x"), Err(HandleError::Full));
        assert!(h.close().is_ok());
        mb.backlog(c, false);
        assert!(h.send(b"x").is_ok());
    }

    #[test]
    fn mailbox_bytes_are_capped() {
        let mb = Mailbox::new(Waker::new(), 64 * 1024);
        let c = ConnId::new(0, 0, 0);
        mb.opened(c);
        let h = Handle::new(c, mb.clone());
        let chunk = vec![0u8; 16 * 1024];
        for _ in 0..4 {
            h.send(&chunk).unwrap();
        }
        assert_eq!(h.send(&chunk), Err(HandleError::Full));
        let mut q = MailQueue::default();
        mb.take(&mut q);
        assert!(h.send(&chunk).is_ok());
    }
}
