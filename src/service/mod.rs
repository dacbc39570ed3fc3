//! Services: protocol logic with no I/O of its own.
//!
//! A service opens a session per connection, is fed the bytes that arrive, and appends its
//! answer to an [`Output`]. It runs on a worker thread (or inline on the I/O thread with
//! `--workers 0`); the driver that owns the connection writes the answer.

pub mod echo;

pub use echo::Echo;

use std::io;

/// What the connection does after the service handled an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Flow {
    /// Keep the connection open.
    Continue,
    /// Write what is owed, then close the connection.
    Close,
}

/// Protocol logic run for every connection.
pub trait Service: Send + Sync + 'static {
    /// Per-connection state.
    type Session: Send + 'static;

    /// A connection was accepted.
    fn open(&self) -> Self::Session;

    /// Bytes arrived. Append the answer (if any) to `out`.
    fn data(&self, session: &mut Self::Session, input: &[u8], out: &mut Output<'_>) -> Flow;

    /// The peer stopped sending. The answer still owed may be appended to `out`; the
    /// default closes the connection once it is written.
    fn eof(&self, session: &mut Self::Session, out: &mut Output<'_>) -> Flow {
        let _ = (session, out);
        Flow::Close
    }

    /// The connection is gone (closed by either side). The session is dropped after this.
    fn close(&self, session: Self::Session) {
        drop(session);
    }
}

/// Where a service appends its answer for one connection.
///
/// Output of many connections shares one buffer per batch; a service can only append to
/// its own part.
pub struct Output<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Output<'a> {
    /// An output appending to `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Output<'a> {
        let start = buf.len();
        Output { buf, start }
    }

    /// Append bytes.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Reserve room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    /// Bytes appended so far.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True if nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What was appended so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl io::Write for Output<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn output_appends_after_existing_bytes() {
        let mut buf = b"other".to_vec();
        let mut out = Output::new(&mut buf);
        assert!(out.is_empty());
        out.extend_from_slice(b"ab");
        write!(out, "{}", 12).unwrap();
        assert_eq!(out.written(), b"ab12");
        assert_eq!(out.len(), 4);
        assert_eq!(buf, b"otherab12");
    }
}
