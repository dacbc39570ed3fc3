//! The Service API: protocol logic with no I/O of its own.
//!
//! A [`Service`] opens a session per connection, is shown the bytes that arrive, says how
//! many of them it consumed, and answers through the connection's [`Conn`]: bytes, file
//! ranges, a close, a deadline, a request to be told when output drained. A [`Handle`]
//! reaches the connection from any thread.
//!
//! # Input arrives in arbitrary fragments
//!
//! TCP delivers a byte stream, not messages: one request may arrive in many pieces and many
//! requests in one. The engine keeps what a service did not consume and shows it again,
//! followed by what arrives next, so a service never buffers input itself. A connection that
//! holds no partial frame holds no input buffer. Unconsumed input is capped per connection
//! ([`Service::input_limit`], 64 KiB by default): over the cap the service is told
//! ([`Service::input_full`]), may answer, and the connection closes once that answer is
//! written.
//!
//! # Which thread runs a service
//!
//! - Inline (`workers(0)`, the default): on the I/O thread that owns the connection. A call
//!   that blocks (a file read that misses the page cache, a lock held for long, a sleep)
//!   stalls every connection of that I/O thread.
//! - Pool (`workers(N)`): on one worker thread per connection for the connection's whole
//!   life, so the calls for one connection never run at the same time and never reorder.
//!
//! Either way every callback for one connection runs on one thread, in order: [`Service::open`]
//! first, [`Service::close`] last.
//!
//! # Panics
//!
//! A panic in a callback closes only that connection: the output of that call is dropped,
//! the session is dropped without further calls, the panic is counted in the server's stats
//! (`service_panics`) and reported once by the panic hook; every other connection goes on.

pub mod echo;
pub(crate) mod handle;
pub mod http;
pub mod resp;

pub use echo::Echo;
pub use handle::{Handle, HandleError};
pub use http::Http;
pub use resp::Resp;
pub use ringport_fallback::event::ConnInfo;

pub(crate) use handle::Mailbox;

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use ringport_fallback::event::FileRange;
use ringport_fallback::ConnId;

use crate::pool::{CommandKind, Commands, DeadlineState};

/// Unconsumed input a connection may hold by default (see [`Service::input_limit`]).
pub const DEFAULT_INPUT_LIMIT: usize = 64 * 1024;

/// Protocol logic run for every connection.
///
/// Every callback gets the connection's [`Conn`] to answer through. Only
/// [`Service::open`] and [`Service::data`] must be written; the rest have defaults.
pub trait Service: Send + Sync + 'static {
    /// Per-connection state.
    type Session: Send + 'static;

    /// Most unconsumed input one connection may hold (default [`DEFAULT_INPUT_LIMIT`]).
    /// Past it, [`Service::input_full`] is called and the connection closes; except while
    /// the service holds reading paused ([`Conn::pause_reading_until_drained`]): input the
    /// driver handed over before it had the pause is then kept.
    fn input_limit(&self) -> usize {
        DEFAULT_INPUT_LIMIT
    }

    /// A connection was accepted. The service may already write (a greeting).
    fn open(&self, info: &ConnInfo, conn: &mut Conn<'_>) -> Self::Session;

    /// Input arrived: `input` is what the service has not consumed yet followed by the new
    /// bytes. Return how many bytes of `input` were consumed (at most `input.len()`); the
    /// rest is shown again, with more input after it. While a call consumes something and
    /// input is left, the service is called again with the rest, so it may handle one frame
    /// per call.
    fn data(&self, session: &mut Self::Session, input: &[u8], conn: &mut Conn<'_>) -> usize;

    /// The peer stopped sending; `rest` is the input left unconsumed. What the service
    /// writes is still sent. The default closes the connection once output is written.
    fn eof(&self, session: &mut Self::Session, rest: &[u8], conn: &mut Conn<'_>) {
        let _ = (session, rest);
        conn.close();
    }

    /// Unconsumed input reached [`Service::input_limit`]: `input` is what is held. The
    /// service may write an answer (an error line, `431`, `-ERR Protocol error`); the
    /// connection then closes once output is written, whatever this does.
    fn input_full(&self, session: &mut Self::Session, input: &[u8], conn: &mut Conn<'_>) {
        let _ = (session, input, conn);
    }

    /// Queued output fell to the low-water mark after [`Conn::notify_drained`]: time to
    /// produce the next piece of a large body. Afterwards, input the connection holds is
    /// shown to [`Service::data`] again, so a service that stopped consuming until its
    /// output drained (returned 0 with whole frames held) goes on without waiting for more
    /// bytes from the peer.
    fn drained(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        let _ = (session, conn);
    }

    /// The deadline set with [`Conn::set_deadline`] passed (it is cleared before this
    /// call). The default closes the connection.
    fn deadline(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        let _ = session;
        conn.close();
    }

    /// [`Handle::notify`] was called for this connection: run on the connection's own
    /// thread, with its session, like any other callback. Held input is shown to
    /// [`Service::data`] again afterwards, as after [`Service::drained`].
    fn notified(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        let _ = (session, conn);
    }

    /// The connection is gone (closed by either side). The session is dropped after this.
    fn close(&self, session: Self::Session) {
        drop(session);
    }

    /// Write this service's metrics into a scrape of `--metrics` (see [`crate::metrics`]):
    /// a service keeps relaxed atomic counters on its data path and renders them here.
    /// Called on the metrics thread at any time, while other callbacks run: read atomics,
    /// take no lock the data path takes. The default writes nothing.
    fn metrics(&self, out: &mut crate::metrics::Exposition) {
        let _ = out;
    }
}

/// One connection, as a callback sees it: where its answer goes.
///
/// Output of many connections shares one buffer per batch; a callback can only append to
/// its own connection's part, in order.
pub struct Conn<'a> {
    id: ConnId,
    cmds: &'a mut Commands,
    /// Start of the bytes written since the last command was sealed.
    open_from: usize,
    deadline: &'a mut DeadlineState,
    mailbox: &'a Arc<Mailbox>,
    closing: &'a mut bool,
    /// [`Conn::pause_reading_until_drained`] was called in this callback.
    paused: bool,
}

impl<'a> Conn<'a> {
    pub(crate) fn new(
        id: ConnId,
        cmds: &'a mut Commands,
        deadline: &'a mut DeadlineState,
        mailbox: &'a Arc<Mailbox>,
        closing: &'a mut bool,
    ) -> Conn<'a> {
        let open_from = cmds.bytes.len();
        Conn {
            id,
            cmds,
            open_from,
            deadline,
            mailbox,
            closing,
            paused: false,
        }
    }

    /// Queue bytes after everything queued before them.
    pub fn write(&mut self, bytes: &[u8]) {
        self.cmds.bytes.extend_from_slice(bytes);
    }

    /// Reserve room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.cmds.bytes.reserve(additional);
    }

    /// Bytes written in this call and not yet followed by another kind of output.
    pub fn pending(&self) -> &[u8] {
        &self.cmds.bytes[self.open_from..]
    }

    /// Queue `len` bytes of `file` from `offset`, after everything queued before. The
    /// driver sends it without copying it through user space where the OS allows it
    /// (`sendfile` where the OS has it) and never reads it whole into memory. If the
    /// file is shorter than promised, the connection closes after what there is.
    pub fn send_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.seal();
        let index = self.cmds.files.len();
        self.cmds.files.push(FileRange { file, offset, len });
        self.cmds.push_item(self.id, CommandKind::SendFile(index));
    }

    /// Write everything queued, then close the connection. Input that arrives after this
    /// is discarded.
    pub fn close(&mut self) {
        if !*self.closing {
            *self.closing = true;
            self.seal();
            self.cmds.push_item(self.id, CommandKind::Close);
        }
    }

    /// True once [`Conn::close`] was called (in this call or an earlier one).
    pub fn is_closing(&self) -> bool {
        *self.closing
    }

    /// Ask for [`Service::drained`] once the queued output is at or below the low-water
    /// mark (at once if it already is). One notification per request.
    pub fn notify_drained(&mut self) {
        self.seal();
        self.cmds.push_item(self.id, CommandKind::NotifyDrained);
    }

    /// As [`Conn::notify_drained`], and read no more from the peer until [`Service::drained`]
    /// came and the input held was shown to [`Service::data`] again, whatever the output
    /// limit says: for a service that stops consuming its input until its output drains (a
    /// pipeline of requests with big answers), so that the input it holds does not grow
    /// while its output is under the limit (when the peer's socket buffers still take it).
    /// Input read before the pause is held and shown afterwards; if the service pauses
    /// again while it goes through it (in `drained` or `data`), reading stays paused until
    /// the next drain, so a deep pipeline waits in the socket, however long.
    pub fn pause_reading_until_drained(&mut self) {
        self.seal();
        self.paused = true;
        self.cmds.push_item(self.id, CommandKind::PauseUntilDrained);
    }

    /// Whether [`Conn::pause_reading_until_drained`] was called in this callback.
    pub(crate) fn paused_reading(&self) -> bool {
        self.paused
    }

    /// End a pause of [`Conn::pause_reading_until_drained`]: read again once output is low.
    pub(crate) fn resume_reading(&mut self) {
        self.seal();
        self.cmds.push_item(self.id, CommandKind::ResumeReading);
    }

    /// Exempt this connection from the server's idle timeout (`true`), or no longer
    /// (`false`; the idle clock starts again then): for a connection that waits on the
    /// server by design, such as a Pub/Sub subscriber, whose silence is not idleness. The
    /// send timeout still applies.
    pub fn exempt_from_idle_timeout(&mut self, exempt: bool) {
        self.seal();
        self.cmds
            .push_item(self.id, CommandKind::IdleExempt(exempt));
    }

    /// Call [`Service::deadline`] once `at` passes, unless the deadline is cleared or moved
    /// first. One deadline per connection: this replaces any earlier one.
    pub fn set_deadline(&mut self, at: Instant) {
        let ms = at
            .saturating_duration_since(crate::pool::epoch())
            .as_millis();
        self.deadline.at_ms = u32::try_from(ms).unwrap_or(u32::MAX);
        self.deadline.generation = self.deadline.generation.wrapping_add(1);
        self.deadline.armed = true;
        self.seal();
        self.cmds
            .push_deadline(self.id, Some(at), self.deadline.generation);
    }

    /// Cancel the deadline, if one is set.
    pub fn clear_deadline(&mut self) {
        if self.deadline.armed {
            self.deadline.generation = self.deadline.generation.wrapping_add(1);
            self.deadline.armed = false;
            self.seal();
            self.cmds
                .push_deadline(self.id, None, self.deadline.generation);
        }
    }

    /// The time now, as far as deadlines and latencies need it: the clock is read once for a
    /// batch of events (an I/O turn inline, a batch of events in a worker) and shared by
    /// every callback of that batch, so a service answering many requests pays for one
    /// clock read. Later than the events' arrival by at most the batch's own run time.
    pub fn now(&self) -> Instant {
        self.cmds.now()
    }

    /// The deadline now set, if any (to the millisecond).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.armed.then(|| {
            crate::pool::epoch() + std::time::Duration::from_millis(u64::from(self.deadline.at_ms))
        })
    }

    /// A handle to this connection, usable from any thread.
    pub fn handle(&self) -> Handle {
        Handle::new(self.id, self.mailbox.clone())
    }

    /// Turn the bytes written since the last command into a send command.
    fn seal(&mut self) {
        let end = self.cmds.bytes.len();
        if end > self.open_from {
            self.cmds
                .push_range(self.id, CommandKind::Send, self.open_from, end);
        }
        self.open_from = end;
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.seal();
    }
}

impl io::Write for Conn<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Conn::write(self, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
