//! Echo: every byte received is sent back, in order. After the peer's EOF the connection
//! closes once everything is written.

use super::{Flow, Output, Service};

/// The echo service.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Service for Echo {
    type Session = ();

    fn open(&self) {}

    fn data(&self, _session: &mut (), input: &[u8], out: &mut Output<'_>) -> Flow {
        out.extend_from_slice(input);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_input_and_closes_after_eof() {
        let mut buf = Vec::new();
        let mut out = Output::new(&mut buf);
        assert_eq!(Echo.data(&mut (), b"hello", &mut out), Flow::Continue);
        assert_eq!(Echo.eof(&mut (), &mut out), Flow::Close);
        assert_eq!(buf, b"hello");
    }
}
