//! systemd socket activation: listeners passed in by the service manager.
//!
//! systemd (or `systemd-socket-activate`) starts the process with its listening sockets
//! open from descriptor 3 on, and says so in the environment: `LISTEN_PID` (the process
//! they are meant for), `LISTEN_FDS` (how many) and `LISTEN_FDNAMES` (their names, from
//! `FileDescriptorName=`, separated by `:`). A socket named `metrics` serves the Prometheus
//! metrics; the other one serves the service. Any further socket is refused (it would hold
//! connections nobody accepts). The variables are removed once read, so child processes do
//! not take the sockets for theirs.

use std::io;
use std::net::TcpListener;

/// The listeners systemd passed.
#[derive(Debug, Default)]
pub struct Activated {
    /// The service's listener (the socket not named `metrics`).
    pub service: Option<TcpListener>,
    /// The socket named `metrics`, if any.
    pub metrics: Option<TcpListener>,
}

/// The listeners passed to this process, or `None` when none were (`LISTEN_PID` unset or
/// naming another process, or `LISTEN_FDS` unset or 0).
///
/// # Errors
/// `LISTEN_FDS` is not a number, or a passed descriptor is not a TCP socket, or (where the
/// system says) not a listening one, or one more than a socket for the service and one
/// named `metrics`.
pub fn take() -> io::Result<Option<Activated>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let ours = pid
        .as_deref()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let Some(fds) = fds.filter(|_| ours) else {
        return Ok(None);
    };
    let count: usize = fds.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS='{fds}' is not a number of descriptors"),
        )
    })?;
    if count == 0 {
        return Ok(None);
    }
    let names: Vec<&str> = names.split(':').collect();
    let mut passed = listenfd::ListenFd::from_env();
    std::env::remove_var("LISTEN_FDNAMES");
    let mut out = Activated::default();
    for i in 0..count {
        let name = names
            .get(i)
            .copied()
            .filter(|n| !n.is_empty())
            .unwrap_or("unknown");
        let listener = passed
            .take_tcp_listener(i)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("passed socket {} ({name}): {e}", 3 + i))
            })?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("passed socket {} ({name}) is missing", 3 + i),
                )
            })?;
        let slot = if name == "metrics" {
            if out.metrics.is_some() {
                // systemd names every socket of a unit with its FileDescriptorName=: two
                // sockets in one unit are both `metrics` when that is the last name given.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "passed socket {} is a second one named `metrics` (systemd gives every \
                         socket of a unit the unit's one FileDescriptorName=: put the metrics \
                         socket in a unit of its own)",
                        3 + i
                    ),
                ));
            }
            &mut out.metrics
        } else if out.service.is_none() {
            &mut out.service
        } else {
            // One process serves one listening socket (and the metrics one): a socket left
            // unserved would take connections that nobody accepts (the service manager
            // keeps it open), so this is refused, not ignored.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "passed socket {} ({name}) would not be served: a process serves one \
                     listening socket and one named `metrics` (for IPv4 and IPv6 on one \
                     port, pass one socket on [::]:PORT, or run a process per socket)",
                    3 + i
                ),
            ));
        };
        // A connected socket (systemd's `Accept=yes`) or one never put to `listen` would
        // fail every accept: refuse it here, where the error can say why.
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        if !socket2::SockRef::from(&listener).is_listener()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "passed socket {} ({name}) is not listening: pass a listening socket \
                     (with systemd, Accept=no, the default)",
                    3 + i
                ),
            ));
        }
        *slot = Some(listener);
    }
    Ok(Some(out))
}
