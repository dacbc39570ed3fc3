//! A line protocol on ringport: every line a client sends comes back upper-cased.
//!
//! Lines may arrive in any number of pieces: the engine keeps the partial line and shows it
//! again with what follows, so the service only looks for the newline. A line longer than
//! the limit gets an error line, then the connection closes.
//!
//! ```sh
//! cargo run --example line            # serves on 127.0.0.1:7001
//! printf 'hello\nworld\n' | nc 127.0.0.1 7001
//! ```

use ringport::{Conn, ConnInfo, Server, Service};

/// Upper-cases each line.
pub struct Upper {
    /// Longest line accepted, newline included.
    pub max_line: usize,
}

impl Service for Upper {
    type Session = ();

    fn input_limit(&self) -> usize {
        self.max_line
    }

    fn open(&self, _info: &ConnInfo, _conn: &mut Conn<'_>) {}

    fn data(&self, _session: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
        // One line per call: the engine calls again while input is left.
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return 0; // a partial line: wait for the rest
        };
        let line = &input[..=end];
        conn.reserve(line.len());
        for &b in line {
            conn.write(&[b.to_ascii_uppercase()]);
        }
        line.len()
    }

    fn input_full(&self, _session: &mut (), _input: &[u8], conn: &mut Conn<'_>) {
        conn.write(b"ERR line too long\n");
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let mut builder = Server::builder();
    builder.listen("127.0.0.1:7001".parse().expect("a valid address"));
    let server = builder.build(Upper { max_line: 1024 })?;
    println!("{}", server.banner());
    let stop = server.shutdown_handle();
    ctrlc::set_handler(move || stop.shutdown()).expect("a signal handler");
    let stats = server.wait()?;
    println!("{stats}");
    Ok(())
}
