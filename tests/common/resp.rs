//! Helpers for the Redis-protocol tests: a minimal RESP client, the store on every backend,
//! and the real Redis clients (redis-cli, redis-benchmark, the Python `redis` package).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ringport::service::resp::{Resp, RespBuilder};
use ringport::Server;

use super::{connect, wait_exit, ChildGuard, Setup, Start};

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a bulk reply (panics otherwise).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Reply::Bulk(Some(b)) => b,
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    /// The integer of an integer reply (panics otherwise).
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    /// A bulk string reply.
    pub fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }
}

/// Encode a request as a multibulk.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Read one reply; `Err` on EOF or a malformed reply.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bad reply line {:?}", String::from_utf8_lossy(&line)),
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let num = || {
        body.parse::<i64>()
            .map_err(|_| io::Error::other(format!("bad number {body:?}")))
    };
    Ok(match line[0] {
        b'+' => Reply::Simple(body),
        b'-' => Reply::Error(body),
        b':' => Reply::Int(num()?),
        b'$' => {
            let n = num()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut b = vec![0; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Reply::Bulk(Some(b))
            }
        }
        b'*' => {
            let n = num()?;
            if n < 0 {
                Reply::Array(None)
            } else {
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(read_reply(r)?);
                }
                Reply::Array(Some(v))
            }
        }
        other => return Err(io::Error::other(format!("bad reply type {other:?}"))),
    })
}

/// A plain RESP connection.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = connect(addr);
        Client {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    /// Send one command and read its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.writer.write_all(&encode(&raw)).expect("send");
        read_reply(&mut self.reader).expect("reply")
    }

    /// Send raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Read one reply.
    pub fn read(&mut self) -> Reply {
        read_reply(&mut self.reader).expect("reply")
    }

    /// Read until EOF; returns what came.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.reader.read_to_end(&mut v);
        v
    }
}

/// A store server on this setup, with `io_threads` and the store configured by `f`.
pub fn server(setup: Setup, io_threads: usize, f: impl FnOnce(&mut RespBuilder)) -> (Server, Resp) {
    let mut rb = Resp::builder();
    f(&mut rb);
    let resp = rb.build().expect("store opens");
    let mut b = setup.builder();
    b.io_threads(io_threads);
    let server = b.build(resp.clone()).expect("server starts");
    (server, resp)
}

/// The path of a Redis client program (`name`, `name.exe` on Windows), or `None` (with a
/// note) when it is not installed. On Linux with `RINGPORT_REQUIRE_REDIS_CLIENTS=1` (CI) a
/// missing program fails the test instead.
pub fn tool(name: &str) -> Option<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(&file))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !required(),
            "{name} is required (RINGPORT_REQUIRE_REDIS_CLIENTS is set) but not installed"
        );
        eprintln!("skipped: {name} is not installed");
    }
    found
}

/// True when the Redis clients must be there: on Linux, when CI says so.
fn required() -> bool {
    cfg!(target_os = "linux") && std::env::var_os("RINGPORT_REQUIRE_REDIS_CLIENTS").is_some()
}

/// True when Python 3 with the `redis` package is available (same rules as [`tool`]).
pub fn python_redis() -> Option<PathBuf> {
    let py = tool("python3")?;
    let ok = Command::new(&py)
        .args(["-c", "import redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !required(),
            "the Python redis package is required but not installed"
        );
        eprintln!("skipped: the Python redis package is not installed");
        return None;
    }
    Some(py)
}

/// Run a program with `input` on its standard input, killing it if it outlives the
/// deadline; returns its exit status, standard output and standard error.
pub fn run_program(cmd: &mut Command, input: &[u8]) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .start()
        .expect("start program");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut guard = ChildGuard { child };
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut guard.child);
    feeder.join().unwrap();
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Run `redis-cli` against `addr` with `script` on its standard input; its standard output.
pub fn redis_cli(cli: &PathBuf, addr: SocketAddr, script: &str) -> String {
    let mut cmd = Command::new(cli);
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]);
    let (status, out, err) = run_program(&mut cmd, script.as_bytes());
    assert!(status.success(), "redis-cli failed: {status} {err}");
    out
}
