//! A chat server on ringport: each line a client sends goes to every other client.
//!
//! Each connection's [`Handle`] sits in a shared room; a line is sent to the others through
//! their handles, from whichever thread runs the sender's service. A client that does not
//! read falls behind: its handle reports `Full` and it misses lines instead of growing the
//! server's memory, and the send timeout closes it if it never reads again.
//!
//! ```sh
//! cargo run --example chat            # serves on 127.0.0.1:7002
//! nc 127.0.0.1 7002                   # in two terminals
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ringport::{Conn, ConnInfo, Handle, Server, Service};

/// The room: every connected client's handle, by id.
#[derive(Default)]
pub struct Chat {
    room: Arc<Mutex<HashMap<u64, Handle>>>,
}

/// A chat connection: its id in the room and its name.
pub struct Member {
    id: u64,
    name: String,
}

impl Service for Chat {
    type Session = Member;

    fn open(&self, info: &ConnInfo, conn: &mut Conn<'_>) -> Member {
        let handle = conn.handle();
        let id = handle.id();
        self.room.lock().expect("room lock").insert(id, handle);
        conn.write(b"welcome\n");
        Member {
            id,
            name: info.peer.to_string(),
        }
    }

    fn data(&self, me: &mut Member, input: &[u8], _conn: &mut Conn<'_>) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let mut line = Vec::with_capacity(me.name.len() + 2 + end + 1);
        line.extend_from_slice(me.name.as_bytes());
        line.extend_from_slice(b": ");
        line.extend_from_slice(&input[..=end]);
        let room = self.room.lock().expect("room lock");
        for (id, member) in room.iter() {
            if *id != me.id {
                // Closed: it leaves the room in its own `close`. Full: it misses this line.
                let _ = member.send(&line);
            }
        }
        end + 1
    }

    fn close(&self, me: Member) {
        self.room.lock().expect("room lock").remove(&me.id);
    }
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let mut builder = Server::builder();
    builder.listen("127.0.0.1:7002".parse().expect("a valid address"));
    let server = builder.build(Chat::default())?;
    println!("{}", server.banner());
    let stop = server.shutdown_handle();
    ctrlc::set_handler(move || stop.shutdown()).expect("a signal handler");
    let stats = server.wait()?;
    println!("{stats}");
    Ok(())
}
