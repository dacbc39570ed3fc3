//! Memory bounds of the Service API, on every backend this machine has: idle connections
//! hold no input buffer, a body streamed through the drain callback and a file body sent as
//! a file range stay within a few times the output limit.
//!
//! One test, run case after case: the servers run in this process (the streaming and file
//! services exist only here) and their memory is this process's RSS, which other tests
//! running beside them would disturb.
//!
//! Memory is read from `/proc`, so the bounds are checked on Linux only; elsewhere the same
//! bodies are still sent and checked byte for byte (smaller ones: there the file body takes
//! the copying path, and under Wine every byte crosses an emulated socket), and the idle
//! connections part says why it is skipped.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::{available, connect, serve_process, try_echo, wait_until};
use ringport::{Backend, Conn, ConnInfo, Server, Service};

fn backends() -> Vec<Backend> {
    [Backend::Uring, Backend::Poll]
        .into_iter()
        .filter(|b| {
            let ok = available(*b);
            if !ok {
                eprintln!("skipped on {b}: not available on this machine");
            }
            ok
        })
        .collect()
}

/// Resident memory of a process, where the OS tells it (Linux), else 0.
fn rss_bytes(pid: u32) -> u64 {
    #[cfg(target_os = "linux")]
    return common::rss_bytes(pid);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        0
    }
}

fn own_rss() -> u64 {
    rss_bytes(std::process::id())
}

/// True where memory bounds can be checked.
const MEASURED: bool = cfg!(target_os = "linux");

/// The bytes of every test body repeat with this period, a prime: no read or chunk size
/// lines up with it, so a shifted, repeated or dropped piece shows.
const PERIOD: usize = 65_521;

/// One period of the test body's bytes.
fn period() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut rng = common::Rng::new(7);
        rng.bytes(PERIOD)
    })
}

/// The byte at `offset` of every test body.
fn pattern(offset: u64) -> u8 {
    period()[(offset % PERIOD as u64) as usize]
}

/// Fill `buf` with the body's bytes from `offset` on.
fn fill_pattern(buf: &mut [u8], offset: u64) {
    let table = period();
    let mut at = (offset % PERIOD as u64) as usize;
    let mut done = 0;
    while done < buf.len() {
        let n = (PERIOD - at).min(buf.len() - done);
        buf[done..done + n].copy_from_slice(&table[at..at + n]);
        done += n;
        at = 0;
    }
}

/// True when `got` is the body's bytes from `offset` on (compared a period piece at a
/// time, so a debug build checks gigabytes quickly).
fn is_pattern(got: &[u8], offset: u64) -> bool {
    let table = period();
    let mut at = (offset % PERIOD as u64) as usize;
    let mut done = 0;
    while done < got.len() {
        let n = (PERIOD - at).min(got.len() - done);
        if got[done..done + n] != table[at..at + n] {
            return false;
        }
        done += n;
        at = 0;
    }
    true
}

/// Read until EOF, checking every byte against [`pattern`]; returns the byte count. Calls
/// `tick` every few MiB.
fn read_pattern(mut c: TcpStream, tick: &mut dyn FnMut()) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    let mut next_tick = 0u64;
    loop {
        let n = match c.read(&mut buf) {
            Ok(n) => n,
            // A signal meant for another thread of this process (the in-process server's)
            // may interrupt the read: try again, as `read_exact` would.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read body: {e}"),
        };
        if n == 0 {
            return at;
        }
        assert!(
            is_pattern(&buf[..n], at),
            "bytes {at}..{} differ",
            at + n as u64
        );
        at += n as u64;
        if at >= next_tick {
            tick();
            next_tick = at + (8 << 20);
        }
    }
}

/// Streams `len` bytes of [`pattern`] to each connection, a piece at a time from the drain
/// callback, then closes.
struct Streamer {
    len: u64,
    piece: usize,
}

impl Streamer {
    fn produce(&self, at: &mut u64, conn: &mut Conn<'_>) {
        let end = (*at + self.piece as u64).min(self.len);
        let mut bytes = vec![0; (end - *at) as usize];
        fill_pattern(&mut bytes, *at);
        conn.write(&bytes);
        *at = end;
        if *at == self.len {
            conn.close();
        } else {
            conn.notify_drained();
        }
    }
}

impl Service for Streamer {
    type Session = u64;
    fn open(&self, _: &ConnInfo, conn: &mut Conn<'_>) -> u64 {
        let mut at = 0;
        self.produce(&mut at, conn);
        at
    }
    fn data(&self, _: &mut u64, input: &[u8], _: &mut Conn<'_>) -> usize {
        input.len()
    }
    fn drained(&self, at: &mut u64, conn: &mut Conn<'_>) {
        self.produce(at, conn);
    }
}

/// Sends the whole file as a file range, between a head and a tail of bytes, then closes.
struct FileBody {
    file: Arc<File>,
    len: u64,
}

impl Service for FileBody {
    type Session = ();
    fn open(&self, _: &ConnInfo, conn: &mut Conn<'_>) {
        // Bytes before and after the range stay in order around it: the first and last
        // bytes of the pattern come from the buffer, the rest from the file.
        conn.write(&[pattern(0)]);
        conn.send_file(self.file.clone(), 1, self.len - 2);
        conn.write(&[pattern(self.len - 1)]);
        conn.close();
    }
    fn data(&self, _: &mut (), input: &[u8], _: &mut Conn<'_>) -> usize {
        input.len()
    }
}

fn temp_file(len: u64) -> (std::path::PathBuf, Arc<File>) {
    let path = std::env::temp_dir().join(format!("ringport-body-{}.bin", std::process::id()));
    let mut f = File::create(&path).expect("create the body file");
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(chunk.len() as u64) as usize;
        fill_pattern(&mut chunk[..n], at);
        f.write_all(&chunk[..n]).unwrap();
        at += n as u64;
    }
    drop(f);
    let f = File::open(&path).expect("open the body file");
    (path, Arc::new(f))
}

#[test]
fn memory_stays_bounded() {
    const IDLE: usize = 9_000;
    let (stream_len, file_len, clients) = if MEASURED {
        (256u64 << 20, 1u64 << 30, 20usize)
    } else {
        (32 << 20, 64 << 20, 4)
    };
    let (path, file) = temp_file(file_len);
    for backend in backends() {
        if !MEASURED {
            common::skip(format_args!(
                "{backend}: idle connections' memory: resident memory is read from /proc (Linux)"
            ));
        } else {
            // Idle connections: the real program, so its RSS is its own.
            // One I/O thread, as the README's figure: the cost of a connection, not of how
            // the kernel spread them over threads.
            let p = serve_process(&["--backend", backend.name(), "--io-threads", "1"]).unwrap();
            let pid = p.guard.child.id();
            try_echo(p.addr, b"warm").unwrap();
            let before = rss_bytes(pid);
            let conns: Vec<TcpStream> = (0..IDLE).map(|_| connect(p.addr)).collect();
            // Every connection is admitted and has been sent a byte and had it echoed.
            for mut c in conns.iter() {
                c.write_all(b"x").unwrap();
            }
            for mut c in conns.iter() {
                let mut b = [0u8; 1];
                c.read_exact(&mut b).unwrap();
            }
            let per_conn = rss_bytes(pid).saturating_sub(before) / IDLE as u64;
            eprintln!("{backend}: {IDLE} idle connections cost {per_conn} B each");
            assert!(
                per_conn <= 512,
                "{backend}: {per_conn} B per idle connection"
            );
            drop(conns);
            drop(p);
        }

        let mut b = Server::builder();
        b.listen("127.0.0.1:0".parse().unwrap())
            .backend(backend)
            .output_limit(1 << 20);
        let limit = 1u64 << 20;

        // A 256 MiB body produced piece by piece from the drain callback.
        let server = b
            .build(Streamer {
                len: stream_len,
                piece: 256 * 1024,
            })
            .unwrap();
        let base = own_rss();
        let mut peak = base;
        let got = read_pattern(connect(server.local_addr()), &mut || {
            peak = peak.max(own_rss());
        });
        assert_eq!(got, stream_len, "{backend}: streamed body length");
        let growth = peak.saturating_sub(base);
        eprintln!(
            "{backend}: streaming {} MiB grew RSS by {} KiB",
            stream_len >> 20,
            growth >> 10
        );
        assert!(
            !MEASURED || growth < 8 * limit + (8 << 20),
            "{backend}: streaming grew RSS by {} KiB",
            growth >> 10
        );
        server.shutdown();
        server.wait().unwrap();

        // A 1 GiB file body to 20 clients at once.
        let server = b
            .build(FileBody {
                file: file.clone(),
                len: file_len,
            })
            .unwrap();
        let addr = server.local_addr();
        let base = own_rss();
        let peak = std::sync::atomic::AtomicU64::new(base);
        std::thread::scope(|s| {
            for i in 0..clients {
                let peak = &peak;
                s.spawn(move || {
                    let c = connect(addr);
                    let got = read_pattern(c, &mut || {
                        peak.fetch_max(own_rss(), std::sync::atomic::Ordering::Relaxed);
                    });
                    assert_eq!(got, file_len, "{backend}: client {i} body length");
                });
            }
        });
        let growth = peak.into_inner().saturating_sub(base);
        eprintln!(
            "{backend}: {clients} clients x {} MiB file grew RSS by {} KiB",
            file_len >> 20,
            growth >> 10
        );
        assert!(
            !MEASURED || growth < 64 << 20,
            "{backend}: file bodies grew RSS by {} KiB",
            growth >> 10
        );
        let stats = server.stats();
        assert!(
            stats.file_bytes >= clients as u64 * (file_len - 2) || !cfg!(target_os = "linux"),
            "{backend}: file bytes sent without a copy: {}",
            stats.file_bytes
        );
        wait_until("every client closed", || server.stats().open == 0);
        server.shutdown();
        server.wait().unwrap();
    }
    let _ = std::fs::remove_file(path);
}
