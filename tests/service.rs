//! The Service API, on every backend this machine has, in pool and inline modes: framing,
//! the input cap, connection info, handles, deadlines, panics, and the two examples.

mod common;

#[path = "../examples/chat.rs"]
mod chat;
#[path = "../examples/line.rs"]
mod line;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect, wait_until, Setup};
use ringport::{Conn, ConnInfo, Handle, HandleError, Service};

every_backend!(
    frames_split_at_every_byte_reach_the_service_whole,
    input_over_the_cap_gets_the_service_answer_then_close,
    open_learns_peer_and_local_addresses,
    handle_output_interleaves_without_reordering,
    stale_handle_fails_and_never_reaches_the_new_connection,
    handle_output_obeys_the_output_limit,
    deadline_fires_once_and_not_after_it_was_cleared,
    panic_on_a_handle_driven_call_closes_only_its_connection,
    chat_example_broadcasts_to_every_other_client,
    line_example_answers_pipelined_lines,
    pipeline_deeper_than_the_input_limit_waits_in_the_socket,
    closed_connection_ends_at_the_peers_eof,
    zero_linger_closes_without_waiting_for_the_peer,
    file_shorter_than_promised_closes_after_what_there_is,
);

/// Read one `\n`-terminated line.
fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read a line");
    s
}

/// Read until EOF; returns what came.
fn read_to_eof(r: &mut impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read to EOF");
    v
}

/// A message of several lines, cut at every byte position: the first part is sent and
/// seen read by the server before the second, so the service sees every possible split.
fn frames_split_at_every_byte_reach_the_service_whole(setup: Setup) {
    let server = setup
        .builder()
        .build(line::Upper { max_line: 1024 })
        .unwrap();
    let mut c = connect(server.local_addr());
    let msg = b"alpha\nbeta gamma\n\nd\n";
    let want = b"ALPHA\nBETA GAMMA\n\nD\n";
    let mut sent = 0u64;
    for cut in 0..=msg.len() {
        let (a, b) = msg.split_at(cut);
        c.write_all(a).unwrap();
        sent += a.len() as u64;
        wait_until("the first part read", || server.stats().bytes_in >= sent);
        c.write_all(b).unwrap();
        sent += b.len() as u64;
        let mut got = vec![0; want.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, want, "cut at {cut}");
    }
}

fn input_over_the_cap_gets_the_service_answer_then_close(setup: Setup) {
    let server = setup.builder().build(line::Upper { max_line: 64 }).unwrap();
    // Under the cap, in pieces: served.
    let mut ok = connect(server.local_addr());
    ok.write_all(&[b'a'; 40]).unwrap();
    ok.write_all(b"\n").unwrap();
    let mut got = vec![0; 41];
    ok.read_exact(&mut got).unwrap();
    assert_eq!(&got[..40], &[b'A'; 40][..]);
    // Over it, in one write and in pieces: the error line, then EOF.
    for pieces in [1usize, 10] {
        let mut c = connect(server.local_addr());
        let line = [b'x'; 200];
        for part in line.chunks(200 / pieces) {
            // The server may close before the last piece: a reset is fine here.
            let _ = c.write_all(part);
        }
        let got = read_to_eof(&mut c);
        assert_eq!(got, b"ERR line too long\n", "{pieces} pieces");
    }
    // The first connection is still served.
    ok.write_all(b"still\n").unwrap();
    let mut got = vec![0; 6];
    ok.read_exact(&mut got).unwrap();
    assert_eq!(got, b"STILL\n");
}

/// Writes the addresses `open` was given.
struct Who;

impl Service for Who {
    type Session = ();
    fn open(&self, info: &ConnInfo, conn: &mut Conn<'_>) {
        conn.write(format!("{} {}\n", info.peer, info.local).as_bytes());
    }
    fn data(&self, _: &mut (), input: &[u8], _: &mut Conn<'_>) -> usize {
        input.len()
    }
}

fn open_learns_peer_and_local_addresses(setup: Setup) {
    let server = setup.builder().build(Who).unwrap();
    for _ in 0..3 {
        let c = connect(server.local_addr());
        let want = format!("{} {}\n", c.local_addr().unwrap(), c.peer_addr().unwrap());
        let mut r = BufReader::new(c);
        assert_eq!(read_line(&mut r), want);
    }
}

/// Each `N\n` line starts a thread that sends `h0\n` .. `h{N-1}\n` through the connection's
/// handle; every other line is answered from the callback as `c<line>\n`.
#[derive(Default)]
struct Pusher {
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Service for Pusher {
    type Session = ();
    fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) {}
    fn data(&self, _: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let line = std::str::from_utf8(&input[..end]).unwrap();
        if let Ok(n) = line.parse::<usize>() {
            let h = conn.handle();
            let t = std::thread::spawn(move || {
                for i in 0..n {
                    let msg = format!("h{i}\n");
                    loop {
                        match h.send(msg.as_bytes()) {
                            Ok(()) => break,
                            Err(HandleError::Full) => std::thread::yield_now(),
                            Err(e) => panic!("handle send failed: {e}"),
                        }
                    }
                }
            });
            self.threads.lock().unwrap().push(t);
        } else {
            conn.write(format!("c{line}\n").as_bytes());
        }
        end + 1
    }
}

fn handle_output_interleaves_without_reordering(setup: Setup) {
    const PUSHED: usize = 20_000;
    const ANSWERED: usize = 2_000;
    let server = setup.builder().build(Pusher::default()).unwrap();
    let c = connect(server.local_addr());
    let mut w = c.try_clone().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            w.write_all(format!("{PUSHED}\n").as_bytes()).unwrap();
            for j in 0..ANSWERED {
                w.write_all(format!("{j}x\n").as_bytes()).unwrap();
            }
        });
        let mut r = BufReader::new(c);
        let (mut h, mut cb) = (0usize, 0usize);
        while h < PUSHED || cb < ANSWERED {
            let line = read_line(&mut r);
            if let Some(rest) = line.strip_prefix('h') {
                assert_eq!(rest, format!("{h}\n"), "handle stream out of order");
                h += 1;
            } else {
                assert_eq!(line, format!("c{cb}x\n"), "callback stream out of order");
                cb += 1;
            }
        }
    });
}

/// Keeps every connection's handle, in the order connections opened.
#[derive(Default)]
struct Keeper {
    handles: Mutex<Vec<Handle>>,
}

fn stale_handle_fails_and_never_reaches_the_new_connection(setup: Setup) {
    let keeper = Arc::new(Keeper::default());
    let server = setup.builder().build(SharedKeeper(keeper.clone())).unwrap();
    let addr = server.local_addr();
    for _ in 0..50 {
        let old = connect(addr);
        wait_until("old open", || keeper.handles.lock().unwrap().len() == 1);
        let old_handle = keeper.handles.lock().unwrap().pop().unwrap();
        drop(old);
        wait_until("old closed", || !old_handle.is_open());
        assert_eq!(old_handle.send(b"stale"), Err(HandleError::Closed));
        let mut new = connect(addr);
        wait_until("new open", || keeper.handles.lock().unwrap().len() == 1);
        let new_handle = keeper.handles.lock().unwrap().pop().unwrap();
        assert_ne!(old_handle.id(), new_handle.id());
        assert_eq!(old_handle.send(b"stale"), Err(HandleError::Closed));
        assert_eq!(old_handle.close(), Err(HandleError::Closed));
        new_handle.send(b"fresh").unwrap();
        let mut got = [0u8; 5];
        new.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"fresh", "the new connection got only its own bytes");
        new_handle.close().unwrap();
        assert!(read_to_eof(&mut new).is_empty(), "nothing after the close");
    }
}

/// A peer that does not read: handle sends are refused with `Full` once its queued output is
/// over the limit, nothing accepted is lost, and sends succeed again once it drained.
fn handle_output_obeys_the_output_limit(setup: Setup) {
    const LIMIT: usize = 256 * 1024;
    let keeper = Arc::new(Keeper::default());
    let server = setup
        .builder()
        .output_limit(LIMIT)
        .build(SharedKeeper(keeper.clone()))
        .unwrap();
    let mut c = connect(server.local_addr());
    wait_until("open", || keeper.handles.lock().unwrap().len() == 1);
    let h = keeper.handles.lock().unwrap().pop().unwrap();
    let chunk = vec![b'z'; 16 * 1024];
    let mut accepted = 0usize;
    // The peer reads nothing: the kernel's buffers fill, then the server's queue passes the
    // limit, and the handle says Full. Without a limit this would run to 1 GiB.
    let full = loop {
        match h.send(&chunk) {
            Ok(()) => accepted += chunk.len(),
            Err(HandleError::Full) => break true,
            Err(e) => panic!("unexpected {e}"),
        }
        if accepted >= 1 << 30 {
            break false;
        }
        if accepted % (1 << 20) == 0 {
            // Give the I/O thread a chance to take what was queued.
            std::thread::yield_now();
        }
    };
    assert!(full, "handle output was never refused");
    // Everything accepted arrives, in one piece, once the peer reads.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < accepted {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "EOF after {got} of {accepted} bytes");
        assert!(buf[..n].iter().all(|&b| b == b'z'));
        got += n;
    }
    assert_eq!(got, accepted);
    wait_until("sends accepted again", || h.send(b"!").is_ok());
    let mut one = [0u8; 1];
    c.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"!");
}

/// [`Keeper`] behind an `Arc` the test holds too.
struct SharedKeeper(Arc<Keeper>);

impl Service for SharedKeeper {
    type Session = ();
    fn open(&self, _: &ConnInfo, conn: &mut Conn<'_>) {
        self.0.handles.lock().unwrap().push(conn.handle());
    }
    fn data(&self, _: &mut (), input: &[u8], _: &mut Conn<'_>) -> usize {
        input.len()
    }
}

/// `set MS` sets a deadline MS from now (the n-th set is generation n), `clear` clears
/// it, `ping` answers `pong`; a deadline that passes writes `fired <generation>`.
struct Timed;

impl Service for Timed {
    type Session = u32;
    fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) -> u32 {
        0
    }
    fn data(&self, generation: &mut u32, input: &[u8], conn: &mut Conn<'_>) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let line = std::str::from_utf8(&input[..end]).unwrap();
        if let Some(ms) = line.strip_prefix("set ") {
            *generation += 1;
            conn.set_deadline(Instant::now() + Duration::from_millis(ms.parse().unwrap()));
        } else if line == "clear" {
            conn.clear_deadline();
        } else if line == "ping" {
            conn.write(b"pong\n");
        }
        end + 1
    }
    fn deadline(&self, generation: &mut u32, conn: &mut Conn<'_>) {
        conn.write(format!("fired {generation}\n").as_bytes());
    }
}

fn deadline_fires_once_and_not_after_it_was_cleared(setup: Setup) {
    let server = setup.builder().build(Timed).unwrap();
    let c = connect(server.local_addr());
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // A cleared deadline never fires; the one set after it fires once.
    w.write_all(b"set 20\nclear\nset 300\n").unwrap();
    assert_eq!(read_line(&mut r), "fired 2\n");
    w.write_all(b"ping\n").unwrap();
    assert_eq!(read_line(&mut r), "pong\n", "a deadline fired twice");
    // A deadline moved later fires at the later time only.
    w.write_all(b"set 20\nset 200\n").unwrap();
    assert_eq!(read_line(&mut r), "fired 4\n");
    // Many connections with deadlines: each fires once.
    let conns: Vec<_> = (0..50)
        .map(|i| {
            let mut c = connect(server.local_addr());
            c.write_all(format!("set {}\n", 10 + i * 3).as_bytes())
                .unwrap();
            c
        })
        .collect();
    for c in conns {
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        assert_eq!(read_line(&mut r), "fired 1\n");
        w.write_all(b"ping\n").unwrap();
        assert_eq!(read_line(&mut r), "pong\n");
    }
}

/// `boom` makes the service ask, through a handle from another thread, to be notified, and
/// then panic in `notified`; any other line is echoed.
struct Fragile {
    notified: AtomicU64,
}

impl Service for Fragile {
    type Session = ();
    fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) {}
    fn data(&self, _: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        if &input[..end] == b"boom" {
            let h = conn.handle();
            std::thread::spawn(move || h.notify().unwrap());
        } else {
            conn.write(&input[..=end]);
        }
        end + 1
    }
    fn notified(&self, _: &mut (), conn: &mut Conn<'_>) {
        self.notified.fetch_add(1, Ordering::SeqCst);
        conn.write(b"partial output, dropped\n");
        panic!("service bug in notified");
    }
}

fn panic_on_a_handle_driven_call_closes_only_its_connection(setup: Setup) {
    let server = setup
        .builder()
        .build(Fragile {
            notified: AtomicU64::new(0),
        })
        .unwrap();
    let mut other = connect(server.local_addr());
    let mut victim = connect(server.local_addr());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    victim.write_all(b"boom\n").unwrap();
    let got = read_to_eof(&mut victim);
    std::panic::set_hook(hook);
    assert!(got.is_empty(), "the panicking call's output was dropped");
    assert_eq!(server.stats().service_panics, 1);
    other.write_all(b"fine\n").unwrap();
    let mut buf = [0u8; 5];
    other.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"fine\n");
}

fn chat_example_broadcasts_to_every_other_client(setup: Setup) {
    let server = setup.builder().build(chat::Chat::default()).unwrap();
    let addr = server.local_addr();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let c = connect(addr);
            let mut r = BufReader::new(c.try_clone().unwrap());
            assert_eq!(read_line(&mut r), "welcome\n");
            (c, r)
        })
        .collect();
    // Everyone is in the room (it said welcome) before anyone speaks.
    let names: Vec<String> = clients
        .iter()
        .map(|(c, _)| c.local_addr().unwrap().to_string())
        .collect();
    for (i, (c, _)) in clients.iter().enumerate() {
        let mut c = c;
        c.write_all(format!("hello from {i}\n").as_bytes()).unwrap();
    }
    for (i, (_, mut r)) in clients.into_iter().enumerate() {
        let mut heard: Vec<String> = (0..4).map(|_| read_line(&mut r)).collect();
        heard.sort();
        let mut want: Vec<String> = (0..5)
            .filter(|&j| j != i)
            .map(|j| format!("{}: hello from {j}\n", names[j]))
            .collect();
        want.sort();
        assert_eq!(heard, want, "client {i}");
    }
}

fn line_example_answers_pipelined_lines(setup: Setup) {
    let server = setup
        .builder()
        .build(line::Upper { max_line: 1024 })
        .unwrap();
    let mut c = connect(server.local_addr());
    let mut msg = Vec::new();
    let mut want = Vec::new();
    for i in 0..1000 {
        msg.extend_from_slice(format!("line {i} of many\n").as_bytes());
        want.extend_from_slice(format!("LINE {i} OF MANY\n").as_bytes());
    }
    c.write_all(&msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c), want);
}

/// Echoes lines, four at a time: after every fourth it stops consuming and reading until
/// its output drained, as a service with big answers does. Its input limit is far below
/// the pipeline it is sent.
struct Paced;

const PACED_LIMIT: usize = 64 * 1024;

impl Service for Paced {
    /// Lines answered since output last drained.
    type Session = u32;
    fn input_limit(&self) -> usize {
        PACED_LIMIT
    }
    fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) -> u32 {
        0
    }
    fn data(&self, lines: &mut u32, input: &[u8], conn: &mut Conn<'_>) -> usize {
        if *lines == 4 {
            return 0;
        }
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        conn.write(&input[..=end]);
        *lines += 1;
        if *lines == 4 {
            conn.pause_reading_until_drained();
        }
        end + 1
    }
    fn drained(&self, lines: &mut u32, _: &mut Conn<'_>) {
        *lines = 0;
    }
}

/// 60,000 pipelined lines (420 KB, over six times the service's input limit), written
/// while the answers are read: every one answered, in order. The lines wait in the socket
/// while the service holds four; reading resumes only after it has gone through what it
/// holds (it used to resume at the drain, before that, and the held input outgrew the
/// limit: the connection closed).
fn pipeline_deeper_than_the_input_limit_waits_in_the_socket(setup: Setup) {
    let server = setup.builder().build(Paced).unwrap();
    let c = connect(server.local_addr());
    let msg: Vec<u8> = (0..60_000)
        .flat_map(|i| format!("{i:06}\n").into_bytes())
        .collect();
    assert!(msg.len() > 6 * PACED_LIMIT);
    let mut w = c.try_clone().unwrap();
    let sent = msg.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent));
    let mut got = vec![0; msg.len()];
    (&c).read_exact(&mut got).expect("every line answered");
    assert!(got == msg, "answers differ from the lines");
    writer.join().unwrap().unwrap();
    assert_eq!(server.stats().service_panics, 0);
}

/// Answers the first input with `bye\n` and closes.
struct Bye;

impl Service for Bye {
    type Session = ();
    fn open(&self, _: &ConnInfo, _: &mut Conn<'_>) {}
    fn data(&self, _: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
        conn.write(b"bye\n");
        conn.close();
        input.len()
    }
}

/// A connection the service closes lingers only until the peer's EOF, however long the
/// linger allows: with a linger of an hour, every server-side socket is gone once its
/// clients read the answer and closed. Rounds of several connections at once, so that
/// closes queued in the same turn are covered too.
fn closed_connection_ends_at_the_peers_eof(setup: Setup) {
    let mut b = setup.builder();
    b.linger(Duration::from_secs(3600));
    let server = b.build(Bye).unwrap();
    for round in 0..5 {
        let mut clients: Vec<TcpStream> =
            (0..=round).map(|_| connect(server.local_addr())).collect();
        for c in &mut clients {
            c.write_all(b"hello\n").unwrap();
        }
        for c in &mut clients {
            assert_eq!(read_to_eof(c), b"bye\n", "round {round}");
        }
        drop(clients);
        wait_until("every closed connection to end at its peer's EOF", || {
            server.stats().open == 0
        });
    }
    let st = server.stats();
    assert_eq!(st.closed, 15, "{st}");
    assert_eq!(st.timed_out, 0, "{st}");
}

/// With no linger a connection the service closes is closed as soon as its answer is
/// written, without waiting for the peer's EOF: the server's count is back to 0 while the
/// client still holds its end, and the client reads the whole answer, then EOF.
fn zero_linger_closes_without_waiting_for_the_peer(setup: Setup) {
    let mut b = setup.builder();
    b.linger(Duration::ZERO);
    let server = b.build(Bye).unwrap();
    let mut c = connect(server.local_addr());
    c.write_all(b"hello\n").unwrap();
    wait_until("the server to close without the client's EOF", || {
        let st = server.stats();
        st.closed == 1 && st.open == 0
    });
    assert_eq!(read_to_eof(&mut c), b"bye\n");
}

/// Answers any input with a head and a file range that promises more than the file holds.
struct ShortFile {
    file: Arc<std::fs::File>,
}

impl Service for ShortFile {
    type Session = ();

    fn open(&self, _info: &ConnInfo, _conn: &mut Conn<'_>) {}

    fn data(&self, _s: &mut (), input: &[u8], conn: &mut Conn<'_>) -> usize {
        conn.write(b"head\n");
        conn.send_file(self.file.clone(), 0, 1 << 20);
        input.len()
    }
}

/// A file shorter than its promised range (it shrank on disk, say): the connection closes
/// after what there is, and that is not counted as a failed call.
fn file_shorter_than_promised_closes_after_what_there_is(setup: Setup) {
    let dir = common::TempDir::new("short-file");
    let path = dir.0.join("short.bin");
    let body = common::Rng::new(5).bytes(10_000);
    std::fs::write(&path, &body).unwrap();
    let file = Arc::new(std::fs::File::open(&path).unwrap());
    let server = setup.builder().build(ShortFile { file }).unwrap();
    let mut c = connect(server.local_addr());
    c.write_all(b"x").unwrap();
    let got = read_to_eof(&mut c);
    let mut want = b"head\n".to_vec();
    want.extend_from_slice(&body);
    assert!(got == want, "got {} bytes, want {}", got.len(), want.len());
    wait_until("closed", || server.stats().open == 0);
    let st = server.stats();
    assert_eq!(
        st.errors_of(ringport::fallback::Disposition::Fatal),
        0,
        "{st}"
    );
    assert_eq!(st.service_panics, 0);
}
