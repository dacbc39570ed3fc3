//! Echo: every byte received is sent back, in order. After the peer's EOF the connection
//! closes once everything is written.

use super::{Conn, ConnInfo, Service};

/// The echo service.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Service for Echo {
    type Session = ();

    fn open(&self, _info: &ConnInfo, _conn: &mut Conn<'_>) {}

    fn data(&self, _session: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
        conn.write(input);
        input.len()
    }
}
