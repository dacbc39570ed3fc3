//! Sockets: listeners for every I/O thread, options on accepted connections.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog used for every listener.
pub const BACKLOG: i32 = 4096;

/// Create `count` listeners on `addr`, one per I/O thread, that no other process shares
/// (see [`listeners_with`]).
///
/// # Errors
/// Fails when the address cannot be bound (in use, not local, no permission).
pub fn listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    listeners_with(addr, count, false)
}

/// Create `count` listeners on `addr`, one per I/O thread.
///
/// On Linux each thread gets its own socket bound with `SO_REUSEPORT`, so the kernel spreads
/// connections across threads. Elsewhere (where `SO_REUSEPORT` does not balance) every thread
/// shares one socket through `try_clone`. Port 0 works: the port the first listener got is
/// used for the others.
///
/// `SO_REUSEPORT` lets any socket of the same user join the group, another process's
/// included, and the kernel would then split connections between the processes. Unless
/// `share` is set, a socket without `SO_REUSEPORT` is first bound and put in listening
/// state on the address and closed again: when anything listens there already, that fails
/// with "address in use", whatever `count` is; and the group gets a BPF program that
/// gives a socket joining later no connections (where the kernel takes it; a warning is
/// logged where not). With `share`, every socket gets `SO_REUSEPORT`
/// (one I/O thread included), so another process started with it can listen on the same
/// address at the same time (a zero-downtime restart).
///
/// # Errors
/// Fails when the address cannot be bound (in use, not local, no permission).
pub fn listeners_with(addr: SocketAddr, count: usize, share: bool) -> io::Result<Vec<TcpListener>> {
    let count = count.max(1);
    let group = cfg!(target_os = "linux") && count > 1;
    let first = if group && !share && addr.port() != 0 {
        // Fails with EADDRINUSE when a listener of any process holds the address; a
        // `SO_REUSEPORT` group of another process included.
        drop(bind(addr, false)?);
        bind(addr, true)?
    } else if group && !share {
        // Port 0: the port picked for a probe is free of other listeners; the group takes
        // it once the probe is closed. Something else may take it in that moment (an
        // outgoing connection's local port, another bind): then another probe.
        let mut tries = 0;
        loop {
            let picked = bind(addr, false)?.local_addr()?;
            match bind(picked, true) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 16 => tries += 1,
                bound => break bound?,
            }
        }
    } else {
        bind(addr, share)?
    };
    let bound = first.local_addr()?;
    let mut out = Vec::with_capacity(count);
    out.push(first);
    for _ in 1..count {
        let l = if cfg!(target_os = "linux") {
            bind(bound, true)?
        } else {
            out[0].try_clone()?
        };
        out.push(l);
    }
    #[cfg(target_os = "linux")]
    if group && !share {
        if let Err(e) = keep_group(&out[0], count) {
            tracing::warn!(
                "listen {bound}: cannot keep the SO_REUSEPORT group of the {count} I/O threads \
                 to this process ({e}): a process started with --reuse-port on this address \
                 could take a share of its connections"
            );
        }
    }
    Ok(out)
}

/// Deliver the connections of a `SO_REUSEPORT` group only to the first `count` sockets that
/// joined it (this process's, put in listening state one after the other just before), so
/// a socket another process adds later gets none.
///
/// A classic BPF program attached to the group picks the socket for each new connection:
/// a hash of the client's port (the TCP header follows the IPv4 header of the length it
/// states, or the fixed 40-byte IPv6 header), modulo `count`. The kernel's own choice would
/// include any socket in the group. A multiplicative hash spreads the consecutive ports a
/// client's connections get about evenly over the sockets. Classic BPF needs no privilege.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn keep_group(listener: &TcpListener, count: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    use libc::{
        sock_filter, sock_fprog, BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JA,
        BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_MOD, BPF_MSH, BPF_MUL, BPF_RET, BPF_RSH,
        BPF_W, SKF_NET_OFF,
    };
    /// `SO_ATTACH_REUSEPORT_CBPF` (Linux 4.5; for TCP, 4.6).
    const ATTACH_REUSEPORT_CBPF: libc::c_int =
        if cfg!(any(target_arch = "sparc", target_arch = "sparc64")) {
            0x35
        } else {
            51
        };
    let op = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let net = SKF_NET_OFF as u32;
    let program = [
        // A = IP version (the high nibble of the network header's first byte).
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, net),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 6),
        // IPv6: X = 40.
        op(BPF_LDX | BPF_W | BPF_IMM, 0, 0, 40),
        op(BPF_JMP | BPF_JA, 0, 0, 1),
        // IPv4: X = 4 * IHL.
        op(BPF_LDX | BPF_B | BPF_MSH, 0, 0, net),
        // A = the TCP source port, hashed, modulo count: the socket's index in the group.
        op(BPF_LD | BPF_H | BPF_IND, 0, 0, net),
        op(BPF_ALU | BPF_MUL | BPF_K, 0, 0, 0x9E37_79B1),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, count as u32),
        op(BPF_RET | BPF_A, 0, 0, 0),
    ];
    let fprog = sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, both alive for the call; the kernel copies the
    // program and keeps no pointer to either.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind one non-blocking listener.
///
/// # Errors
/// Fails when the socket cannot be created, bound or put in listening state.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// What every connection accepted from one listener shares with it, found once when a
/// driver takes the listener, so that each accept costs fewer calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptDefaults {
    /// The listener is bound to one address (not a wildcard, not `IP_TRANSPARENT`): that
    /// is every connection's local address, no `getsockname` needed.
    pub local: Option<SocketAddr>,
    /// `TCP_NODELAY` is set on the listener and accepted sockets inherit it (Linux, where a
    /// new connection is a copy of its listener): no `setsockopt` per connection.
    pub nodelay: bool,
}

impl AcceptDefaults {
    /// Look at `listener` (and set `TCP_NODELAY` on it where connections inherit it).
    pub fn of(listener: &TcpListener) -> AcceptDefaults {
        let sock = socket2::SockRef::from(listener);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let nodelay = sock.set_tcp_nodelay(true).is_ok();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let nodelay = false;
        let local = listener
            .local_addr()
            .ok()
            .filter(|a| !a.ip().is_unspecified())
            .filter(|a| !transparent(&sock, a));
        AcceptDefaults { local, nodelay }
    }

    /// The local address of a connection accepted from this listener.
    ///
    /// # Errors
    /// `getsockname` failed (the listener is a wildcard one and the peer is gone).
    pub fn local_of(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        match self.local {
            Some(a) => Ok(a),
            None => stream.local_addr(),
        }
    }
}

/// Whether a listener takes connections for addresses it is not bound to (Linux's
/// `IP_TRANSPARENT`, which systemd's `Transparent=yes` sets on a passed socket); unknown
/// counts as yes.
fn transparent(sock: &socket2::SockRef<'_>, addr: &SocketAddr) -> bool {
    #[cfg(target_os = "linux")]
    {
        let on = if addr.is_ipv4() {
            sock.ip_transparent_v4()
        } else {
            sock.ip_transparent_v6()
        };
        on.unwrap_or(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, addr);
        false
    }
}

/// Options every accepted connection gets: non-blocking (when `nonblocking`), no Nagle
/// delay (unless `defaults` says it is inherited), and no SIGPIPE on Apple systems
/// (`SO_NOSIGPIPE`). On Linux and the other Unixes `TcpStream::write` sends with
/// `MSG_NOSIGNAL`, so a write to a closed peer is an `EPIPE` error, never a signal.
///
/// # Errors
/// Fails when an option cannot be set (the peer may already be gone).
pub fn prepare_stream(
    stream: &TcpStream,
    nonblocking: bool,
    defaults: &AcceptDefaults,
) -> io::Result<()> {
    if nonblocking {
        stream.set_nonblocking(true)?;
    }
    if !defaults.nodelay {
        stream.set_nodelay(true)?;
    }
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos",
        target_os = "visionos"
    ))]
    socket2::SockRef::from(stream).set_nosigpipe(true)?;
    Ok(())
}

/// Write `buf` to `stream`. With `before_file` (the bytes come just before a file range: a
/// response head), on Linux the bytes are sent with `MSG_MORE`, so they wait for the body
/// and leave in its first segment; the `sendfile` that follows pushes both when it ends.
/// Elsewhere a plain write.
///
/// # Errors
/// The call's errors, for the caller to classify at `Site::Send`.
pub fn write_output(stream: &TcpStream, buf: &[u8], before_file: bool) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if before_file {
        return socket2::SockRef::from(stream)
            .send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL);
    }
    let _ = before_file;
    io::Write::write(&mut &*stream, buf)
}

/// Send up to `max` bytes of `range`, from its start, with `sendfile(2)` (the bytes never
/// pass through user space). Returns the bytes sent; 0 means the file ended before the
/// range did. On a non-blocking socket a full send buffer gives `WouldBlock`.
///
/// # Errors
/// The call's errors, for the caller to classify at `Site::Send`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn sendfile(stream: &TcpStream, range: &crate::FileRange, max: usize) -> io::Result<usize> {
    let want = usize::try_from(range.len).unwrap_or(usize::MAX).min(max);
    let mut offset = range.offset;
    rustix::fs::sendfile(stream, &*range.file, Some(&mut offset), want).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accepted connection ends up with `TCP_NODELAY` (inherited from the listener
    /// where the system copies it, set otherwise) and with its true local address: the
    /// listener's when it is bound to one address, else from `getsockname` (the wildcard
    /// case, taken here on a loopback listener by defaults that know nothing).
    #[test]
    fn accepted_connections_get_nodelay_and_their_local_address() {
        for found in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let defaults = if found {
                AcceptDefaults::of(&listener)
            } else {
                AcceptDefaults::default()
            };
            assert_eq!(defaults.local.is_some(), found);
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (stream, peer) = listener.accept().unwrap();
            assert_eq!(peer, client.local_addr().unwrap());
            prepare_stream(&stream, true, &defaults).unwrap();
            assert!(stream.nodelay().unwrap(), "TCP_NODELAY ({found})");
            let local = defaults.local_of(&stream).unwrap();
            assert_eq!(local, client.peer_addr().unwrap(), "({found})");
        }
    }
}
