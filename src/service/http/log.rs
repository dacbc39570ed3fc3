//! The access log: one line per response in the combined log format,
//! `peer - - [time] "request line" status bytes "referer" "user agent"`.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use super::date;

/// Where the access log goes.
enum Sink {
    Stdout,
    File {
        file: File,
        path: PathBuf,
        /// The value of [`REOPEN`] when `file` was opened.
        opened_at: u64,
    },
}

/// Bumped for every request to reopen the access logs ([`request_reopen`]); a file log
/// whose `opened_at` differs opens its path again before its next line.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Ask every access log file to be opened again, by its path, before its next line: after
/// log rotation renamed it, lines go to a new file at the configured path. Safe to call
/// from a signal handler (it only adds to an atomic counter).
pub fn request_reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
}

/// An open access log, shared by every thread that serves.
pub(crate) struct AccessLog {
    sink: Mutex<Sink>,
}

/// The request part of a log line.
pub(crate) struct Line<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) major: u8,
    pub(crate) minor: u8,
    pub(crate) referer: Option<&'a [u8]>,
    pub(crate) user_agent: Option<&'a [u8]>,
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AccessLog {
    /// Log to standard output (`-`) or append to the file at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub(crate) fn open(path: &Path) -> io::Result<AccessLog> {
        let sink = if path == Path::new("-") {
            Sink::Stdout
        } else {
            Sink::File {
                opened_at: REOPEN.load(Ordering::Relaxed),
                file: append(path)?,
                path: path.to_path_buf(),
            }
        };
        Ok(AccessLog {
            sink: Mutex::new(sink),
        })
    }

    /// Write one line: `request` is `None` for a request that could not be read.
    pub(crate) fn record(&self, peer: IpAddr, request: Option<&Line<'_>>, status: u16, bytes: u64) {
        LINE.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            format_line(
                &mut buf,
                peer,
                date::unix_secs(SystemTime::now()),
                request,
                status,
                bytes,
            );
            let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
            // A full disk or a closed stdout must not stop the serving: the line is lost.
            let _ = match &mut *sink {
                Sink::Stdout => io::stdout().lock().write_all(&buf),
                Sink::File {
                    file,
                    path,
                    opened_at,
                } => {
                    let due = REOPEN.load(Ordering::Relaxed);
                    if *opened_at != due {
                        *opened_at = due;
                        match append(path) {
                            Ok(f) => *file = f,
                            Err(e) => tracing::warn!(
                                "access log {}: cannot open it again ({e}); lines go on to the file open before",
                                path.display()
                            ),
                        }
                    }
                    file.write_all(&buf)
                }
            };
        });
    }
}

/// Open `path` for appending, created if missing.
fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn format_line(
    out: &mut Vec<u8>,
    peer: IpAddr,
    secs: i64,
    request: Option<&Line<'_>>,
    status: u16,
    bytes: u64,
) {
    let _ = write!(out, "{peer} - - [");
    out.extend_from_slice(&date::log_date(secs));
    out.extend_from_slice(b"] \"");
    match request {
        Some(r) => {
            escaped(out, r.method.as_bytes());
            out.push(b' ');
            escaped(out, r.target.as_bytes());
            let _ = write!(out, " HTTP/{}.{}", r.major, r.minor);
        }
        None => out.push(b'-'),
    }
    let _ = write!(out, "\" {status} {bytes} \"");
    escaped(out, request.and_then(|r| r.referer).unwrap_or(b"-"));
    out.extend_from_slice(b"\" \"");
    escaped(out, request.and_then(|r| r.user_agent).unwrap_or(b"-"));
    out.extend_from_slice(b"\"\n");
}

/// Bytes a log reader could misread (quotes, backslashes, controls, non-ASCII) as `\xHH`.
fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format() {
        let mut out = Vec::new();
        let line = Line {
            method: "GET",
            target: "/a\"b",
            major: 1,
            minor: 1,
            referer: None,
            user_agent: Some(b"curl/8"),
        };
        format_line(
            &mut out,
            "127.0.0.1".parse().unwrap(),
            784_111_777,
            Some(&line),
            200,
            612,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a\\x22b HTTP/1.1\" 200 612 \"-\" \"curl/8\"\n"
        );
        let mut out = Vec::new();
        format_line(&mut out, "::1".parse().unwrap(), 0, None, 400, 12);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "::1 - - [01/Jan/1970:00:00:00 +0000] \"-\" 400 12 \"-\" \"-\"\n"
        );
    }
}
