//! The errno classifier: what a failed system call means, decided in one place.
//!
//! Every driver decision on a failed call goes through [`classify`]. No other module of
//! ringport compares errno values. The [`Site`] matters: `ENOBUFS` from a buffer-select
//! receive means "refill the buffer ring and re-arm", from `accept` it means "back off".
//!
//! Two tables exist: the Unix table (on `libc` constants, consulted on Unix) and the Windows
//! table (on plain WSA / Win32 numbers, compiled and unit-tested on every OS, consulted only
//! on Windows). A Linux errno is never compared with a WSA code.

use std::io;

/// Where a call failed. The same errno can mean different things at different sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Site {
    /// Accepting a connection from a listener.
    Accept,
    /// Reading from a connected socket.
    Recv,
    /// A receive that selects its buffer from a provided-buffer ring (io_uring).
    BufferRing,
    /// Writing to a connected socket.
    Send,
    /// Creating an io_uring instance or registering its resources.
    RingSetup,
    /// Submitting to or waiting on the event queue (io_uring enter, epoll/kqueue wait).
    Wait,
    /// Closing a descriptor.
    Close,
    /// A timer operation (io_uring timeout).
    Timer,
    /// Setting a socket option or another configuration call on a socket.
    Configure,
    /// Cancelling an operation in flight (io_uring `ASYNC_CANCEL`).
    Cancel,
    /// Reading the driver's own wake-up eventfd.
    Wake,
    /// Opening a file a service serves: only `Exhausted` (out of descriptors or memory:
    /// a moment later the same request may succeed) is told apart from the rest, which
    /// the service answers as it sees fit (missing, forbidden).
    Open,
}

/// What the driver does about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// Interrupted: call again now (never for close).
    Retry,
    /// Nothing to do yet: wait for readiness, or re-arm.
    WouldBlock,
    /// `accept` only: an error about that one pending peer (gone before we got it); accept
    /// the next one at once. Never pauses the listener.
    SkipPeer,
    /// The peer is gone: drop queued output, close quietly, tell the worker.
    PeerGone,
    /// Out of a resource (descriptors, buffers, memory): back off or refill, never spin.
    Exhausted,
    /// The facility is not available here (io_uring forbidden or too old): fall back.
    Unsupported,
    /// The operation was cancelled by the driver itself (io_uring `ECANCELED`).
    Canceled,
    /// A timer reached its deadline (io_uring timeout `ETIME`): not a failure.
    Expired,
    /// A bug: log loudly, close that connection, never spin.
    Fatal,
}

impl Disposition {
    /// Every disposition, in a fixed order (for counters indexed by disposition).
    pub const ALL: [Disposition; 9] = [
        Disposition::Retry,
        Disposition::WouldBlock,
        Disposition::SkipPeer,
        Disposition::PeerGone,
        Disposition::Exhausted,
        Disposition::Unsupported,
        Disposition::Canceled,
        Disposition::Expired,
        Disposition::Fatal,
    ];

    /// Position of this disposition in [`Disposition::ALL`].
    pub fn index(self) -> usize {
        Disposition::ALL
            .iter()
            .position(|d| *d == self)
            .expect("ALL lists every disposition")
    }

    /// A short lowercase name, as printed in stats.
    pub fn name(self) -> &'static str {
        match self {
            Disposition::Retry => "retry",
            Disposition::WouldBlock => "would_block",
            Disposition::SkipPeer => "skip_peer",
            Disposition::PeerGone => "peer_gone",
            Disposition::Exhausted => "exhausted",
            Disposition::Unsupported => "unsupported",
            Disposition::Canceled => "canceled",
            Disposition::Expired => "expired",
            Disposition::Fatal => "fatal",
        }
    }
}

/// Classify a failed call made at `site`.
///
/// Errors that carry an OS code are looked up in this OS's table; errors made by Rust
/// itself (no OS code) are classified by their [`io::ErrorKind`].
pub fn classify(site: Site, err: &io::Error) -> Disposition {
    match err.raw_os_error() {
        Some(code) => classify_code(site, code),
        None => classify_kind(site, err.kind()),
    }
}

/// Classify a raw OS error code of this platform (an errno on Unix, a WSA / Win32 code on
/// Windows). io_uring completions carry `-errno`; pass the positive value.
pub fn classify_code(site: Site, code: i32) -> Disposition {
    #[cfg(unix)]
    {
        unix::classify(site, code)
    }
    #[cfg(windows)]
    {
        windows::classify(site, code)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (site, code);
        Disposition::Fatal
    }
}

/// Classify an error that carries no OS code.
fn classify_kind(site: Site, kind: io::ErrorKind) -> Disposition {
    use io::ErrorKind as K;
    match kind {
        // close(2) is never retried: the descriptor is released already.
        K::Interrupted if site == Site::Close => Disposition::PeerGone,
        K::Interrupted => Disposition::Retry,
        K::WouldBlock => Disposition::WouldBlock,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::NotConnected
        | K::TimedOut
            if site == Site::Accept =>
        {
            Disposition::SkipPeer
        }
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::NotConnected => {
            Disposition::PeerGone
        }
        K::TimedOut if site != Site::Timer => Disposition::PeerGone,
        K::TimedOut => Disposition::Expired,
        K::OutOfMemory => Disposition::Exhausted,
        K::Unsupported => Disposition::Unsupported,
        K::PermissionDenied if site == Site::RingSetup => Disposition::Unsupported,
        _ => Disposition::Fatal,
    }
}

/// Returns true when `err` is the "descriptor table full" kind of exhaustion
/// (`EMFILE`/`ENFILE`), which is worth naming in a log line.
pub fn is_out_of_descriptors(err: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }
    #[cfg(windows)]
    {
        matches!(err.raw_os_error(), Some(windows::WSAEMFILE))
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = err;
        false
    }
}

/// The oldest Linux the io_uring driver runs on (multishot receive came with 6.0); on older
/// kernels `--backend auto` runs the readiness driver.
pub const MIN_LINUX: &str = "6.0";

/// What to tell a user whose io_uring setup failed with `err` (one clause, no errno
/// numbers needed by the caller).
pub fn ring_setup_hint(err: &io::Error) -> String {
    if classify(Site::RingSetup, err) != Disposition::Unsupported {
        return "io_uring setup failed".to_string();
    }
    #[cfg(unix)]
    {
        match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "io_uring is forbidden here (seccomp filter such as Docker's default profile, \
                 or sysctl kernel.io_uring_disabled); allow io_uring_setup or use --backend poll"
                    .to_string()
            }
            Some(libc::ENOMEM) => {
                "the kernel refused the memory the ring asked for; use fewer --ring-buffers or \
                 a smaller --buffer-size"
                    .to_string()
            }
            Some(libc::ENOSYS) => {
                format!("this kernel has no io_uring (Linux {MIN_LINUX} or newer is needed)")
            }
            _ => format!(
                "this kernel lacks an io_uring feature ringport needs (Linux {MIN_LINUX} or newer \
                 is needed)"
            ),
        }
    }
    #[cfg(not(unix))]
    {
        "io_uring exists only on Linux".to_string()
    }
}

/// Build the `io::Error` for an io_uring completion result (`res < 0` is `-errno`).
pub fn from_completion(res: i32) -> io::Error {
    io::Error::from_raw_os_error(res.saturating_neg())
}

/// The Unix table, on `libc` constants.
#[cfg(unix)]
pub mod unix {
    use super::{Disposition, Site};

    /// Classify errno `code` at `site`.
    pub fn classify(site: Site, code: i32) -> Disposition {
        use libc::*;
        use Disposition as D;

        // Platform-independent meanings first.
        if code == EINTR {
            // close(2) must never be retried: on Linux the descriptor is gone already.
            return if site == Site::Close {
                D::PeerGone
            } else {
                D::Retry
            };
        }
        if code == EAGAIN || code == EWOULDBLOCK || code == EINPROGRESS {
            return D::WouldBlock;
        }
        if code == ECANCELED {
            return D::Canceled;
        }
        if code == ENOSYS {
            return D::Unsupported;
        }

        match site {
            Site::Accept => {
                // An error about one pending connection (including every "peer gone" errno,
                // which some kernels report at accept for a connection reset in the
                // backlog) skips that peer: it never pauses the listener for everyone.
                if accept_skip(code) || peer_gone(code) {
                    D::SkipPeer
                } else if exhausted(code) {
                    D::Exhausted
                } else {
                    D::Fatal
                }
            }
            Site::Recv | Site::Send | Site::BufferRing => {
                if peer_gone(code) {
                    D::PeerGone
                } else if exhausted(code) {
                    D::Exhausted
                } else if code == EOPNOTSUPP {
                    D::Unsupported
                } else {
                    D::Fatal
                }
            }
            Site::RingSetup => {
                if code == EPERM
                    || code == EACCES
                    || code == EOPNOTSUPP
                    || code == EINVAL
                    || code == ENOMEM
                {
                    // seccomp (Docker), kernel.io_uring_disabled, an old kernel that does not
                    // know a flag or an opcode, or RLIMIT_MEMLOCK too small for the ring.
                    D::Unsupported
                } else if code == EMFILE || code == ENFILE {
                    D::Exhausted
                } else {
                    D::Fatal
                }
            }
            Site::Wait => {
                if timer_expired(code) {
                    // A wait with a timeout that ran out.
                    D::Expired
                } else if code == EBUSY || exhausted(code) {
                    // io_uring_enter: completion queue overflow backlog, or no memory for
                    // the submission: reap completions and submit again.
                    D::Exhausted
                } else {
                    D::Fatal
                }
            }
            Site::Close => {
                if code == EBADF {
                    D::Fatal
                } else {
                    // EIO and friends: the descriptor is released anyway.
                    D::PeerGone
                }
            }
            Site::Timer => {
                if timer_expired(code) {
                    D::Expired
                } else {
                    D::Fatal
                }
            }
            Site::Cancel => {
                if code == ENOENT || code == EALREADY {
                    // Nothing left to cancel: it completed, or is completing now.
                    D::Canceled
                } else {
                    D::Fatal
                }
            }
            Site::Wake | Site::Open => {
                if exhausted(code) {
                    D::Exhausted
                } else {
                    D::Fatal
                }
            }
            Site::Configure => {
                if peer_gone(code) {
                    D::PeerGone
                } else if code == EOPNOTSUPP || code == ENOPROTOOPT {
                    D::Unsupported
                } else if exhausted(code) {
                    D::Exhausted
                } else {
                    D::Fatal
                }
            }
        }
    }

    /// accept(2): the pending connection failed, the listener is fine.
    fn accept_skip(code: i32) -> bool {
        use libc::*;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if code == ENONET {
            return true;
        }
        code == ECONNABORTED
            || code == EPROTO
            || code == ENETDOWN
            || code == ENOPROTOOPT
            || code == EHOSTDOWN
            || code == EHOSTUNREACH
            || code == EOPNOTSUPP
            || code == ENETUNREACH
            || code == EPERM
    }

    /// The peer or the path to it is gone.
    fn peer_gone(code: i32) -> bool {
        use libc::*;
        code == ECONNRESET
            || code == EPIPE
            || code == ECONNABORTED
            || code == ETIMEDOUT
            || code == ENOTCONN
            || code == EHOSTUNREACH
            || code == ENETUNREACH
            || code == ENETDOWN
            || code == ESHUTDOWN
    }

    /// `ETIME`: an io_uring timeout, or a ring wait with one, ran out. Only Linux reports it
    /// (FreeBSD's libc does not even define it).
    fn timer_expired(code: i32) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return code == libc::ETIME;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = code;
            false
        }
    }

    /// Out of descriptors, buffers or memory.
    fn exhausted(code: i32) -> bool {
        use libc::*;
        code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM
    }
}

/// The Windows table, on plain WSA / Win32 numbers as `WSAGetLastError` reports them.
/// Compiled and tested everywhere, consulted only on Windows.
#[cfg_attr(not(windows), allow(dead_code))]
pub mod windows {
    use super::{Disposition, Site};

    #[allow(missing_docs)]
    pub const ERROR_TOO_MANY_OPEN_FILES: i32 = 4;
    #[allow(missing_docs)]
    pub const ERROR_NOT_ENOUGH_MEMORY: i32 = 8;
    #[allow(missing_docs)]
    pub const ERROR_OUTOFMEMORY: i32 = 14;
    #[allow(missing_docs)]
    pub const ERROR_NETNAME_DELETED: i32 = 64;
    #[allow(missing_docs)]
    pub const ERROR_BROKEN_PIPE: i32 = 109;
    #[allow(missing_docs)]
    pub const ERROR_OPERATION_ABORTED: i32 = 995;
    #[allow(missing_docs)]
    pub const WSAEINTR: i32 = 10004;
    #[allow(missing_docs)]
    pub const WSAEBADF: i32 = 10009;
    #[allow(missing_docs)]
    pub const WSAEACCES: i32 = 10013;
    #[allow(missing_docs)]
    pub const WSAEFAULT: i32 = 10014;
    #[allow(missing_docs)]
    pub const WSAEINVAL: i32 = 10022;
    #[allow(missing_docs)]
    pub const WSAEMFILE: i32 = 10024;
    #[allow(missing_docs)]
    pub const WSAEWOULDBLOCK: i32 = 10035;
    #[allow(missing_docs)]
    pub const WSAEINPROGRESS: i32 = 10036;
    #[allow(missing_docs)]
    pub const WSAENOTSOCK: i32 = 10038;
    #[allow(missing_docs)]
    pub const WSAEOPNOTSUPP: i32 = 10045;
    #[allow(missing_docs)]
    pub const WSAENETDOWN: i32 = 10050;
    #[allow(missing_docs)]
    pub const WSAENETUNREACH: i32 = 10051;
    #[allow(missing_docs)]
    pub const WSAENETRESET: i32 = 10052;
    #[allow(missing_docs)]
    pub const WSAECONNABORTED: i32 = 10053;
    #[allow(missing_docs)]
    pub const WSAECONNRESET: i32 = 10054;
    #[allow(missing_docs)]
    pub const WSAENOBUFS: i32 = 10055;
    #[allow(missing_docs)]
    pub const WSAENOTCONN: i32 = 10057;
    #[allow(missing_docs)]
    pub const WSAESHUTDOWN: i32 = 10058;
    #[allow(missing_docs)]
    pub const WSAETIMEDOUT: i32 = 10060;
    #[allow(missing_docs)]
    pub const WSAEHOSTDOWN: i32 = 10064;
    #[allow(missing_docs)]
    pub const WSAEHOSTUNREACH: i32 = 10065;
    #[allow(missing_docs)]
    pub const WSAEPROVIDERFAILEDINIT: i32 = 10106;

    /// Classify WSA / Win32 `code` at `site`.
    pub fn classify(site: Site, code: i32) -> Disposition {
        use Disposition as D;
        match code {
            WSAEINTR if site == Site::Close => D::PeerGone,
            WSAEINTR => D::Retry,
            WSAEWOULDBLOCK | WSAEINPROGRESS => D::WouldBlock,
            ERROR_OPERATION_ABORTED => D::Canceled,
            // At accept, an error about one pending connection skips that peer and never
            // pauses the listener: Windows reports WSAECONNRESET for a connection reset
            // while it waited in the backlog, Wine WSAENOTCONN.
            WSAEHOSTDOWN | WSAEACCES if site == Site::Accept => D::SkipPeer,
            c if site == Site::Accept && peer_gone(c) => D::SkipPeer,
            c if peer_gone(c) => D::PeerGone,
            WSAEMFILE | WSAENOBUFS | ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY => D::Exhausted,
            // Win32 codes of file calls, not of sockets.
            ERROR_TOO_MANY_OPEN_FILES if site == Site::Open => D::Exhausted,
            WSAEOPNOTSUPP | WSAEPROVIDERFAILEDINIT => D::Unsupported,
            WSAEBADF | WSAEFAULT | WSAEINVAL | WSAENOTSOCK => D::Fatal,
            _ => D::Fatal,
        }
    }

    /// The peer or the path to it is gone.
    fn peer_gone(code: i32) -> bool {
        matches!(
            code,
            WSAECONNRESET
                | ERROR_NETNAME_DELETED
                | WSAECONNABORTED
                | WSAENETRESET
                | WSAETIMEDOUT
                | WSAENOTCONN
                | WSAESHUTDOWN
                | WSAEHOSTUNREACH
                | WSAENETUNREACH
                | WSAENETDOWN
                | ERROR_BROKEN_PIPE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Disposition as D;

    #[test]
    fn kinds_without_os_code() {
        let e = io::Error::new(io::ErrorKind::WouldBlock, "x");
        assert_eq!(classify(Site::Recv, &e), D::WouldBlock);
        let e = io::Error::new(io::ErrorKind::ConnectionReset, "x");
        assert_eq!(classify(Site::Send, &e), D::PeerGone);
        let e = io::Error::new(io::ErrorKind::Interrupted, "x");
        assert_eq!(classify(Site::Recv, &e), D::Retry);
        assert_eq!(classify(Site::Close, &e), D::PeerGone);
        let e = io::Error::other("x");
        assert_eq!(classify(Site::Recv, &e), D::Fatal);
    }

    #[test]
    fn disposition_index_matches_all() {
        for (i, d) in Disposition::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
            assert!(!d.name().is_empty());
        }
    }

    #[test]
    fn completion_result_is_negated_errno() {
        let e = from_completion(-11);
        assert_eq!(e.raw_os_error(), Some(11));
    }

    #[cfg(unix)]
    #[test]
    fn unix_table() {
        use libc::*;
        let accept = [
            (EINTR, D::Retry),
            (EAGAIN, D::WouldBlock),
            (EWOULDBLOCK, D::WouldBlock),
            (ECONNABORTED, D::SkipPeer),
            (EPROTO, D::SkipPeer),
            (ENETDOWN, D::SkipPeer),
            (ENOPROTOOPT, D::SkipPeer),
            (EHOSTDOWN, D::SkipPeer),
            (EHOSTUNREACH, D::SkipPeer),
            (EOPNOTSUPP, D::SkipPeer),
            (ENETUNREACH, D::SkipPeer),
            (EPERM, D::SkipPeer),
            (EMFILE, D::Exhausted),
            (ENFILE, D::Exhausted),
            (ENOBUFS, D::Exhausted),
            (ENOMEM, D::Exhausted),
            (EBADF, D::Fatal),
            (EFAULT, D::Fatal),
            (ENOTSOCK, D::Fatal),
            (EINVAL, D::Fatal),
            (ENOSYS, D::Unsupported),
            (ECANCELED, D::Canceled),
        ];
        for (code, want) in accept {
            assert_eq!(
                unix::classify(Site::Accept, code),
                want,
                "accept errno {code}"
            );
        }
        #[cfg(target_os = "linux")]
        assert_eq!(unix::classify(Site::Accept, ENONET), D::SkipPeer);

        let stream = [
            (EINTR, D::Retry),
            (EAGAIN, D::WouldBlock),
            (EINPROGRESS, D::WouldBlock),
            (ECONNRESET, D::PeerGone),
            (EPIPE, D::PeerGone),
            (ECONNABORTED, D::PeerGone),
            (ETIMEDOUT, D::PeerGone),
            (ENOTCONN, D::PeerGone),
            (EHOSTUNREACH, D::PeerGone),
            (ENETUNREACH, D::PeerGone),
            (ENOBUFS, D::Exhausted),
            (ENOMEM, D::Exhausted),
            (EOPNOTSUPP, D::Unsupported),
            (EBADF, D::Fatal),
            (EFAULT, D::Fatal),
            (ENOTSOCK, D::Fatal),
            (EINVAL, D::Fatal),
            (ECANCELED, D::Canceled),
        ];
        for site in [Site::Recv, Site::Send, Site::BufferRing] {
            for (code, want) in stream {
                assert_eq!(unix::classify(site, code), want, "{site:?} errno {code}");
            }
        }

        let setup = [
            (ENOSYS, D::Unsupported),
            (EPERM, D::Unsupported),
            (EACCES, D::Unsupported),
            (EOPNOTSUPP, D::Unsupported),
            (EINVAL, D::Unsupported),
            (ENOMEM, D::Unsupported),
            (EMFILE, D::Exhausted),
            (EINTR, D::Retry),
            (EFAULT, D::Fatal),
        ];
        for (code, want) in setup {
            assert_eq!(
                unix::classify(Site::RingSetup, code),
                want,
                "setup errno {code}"
            );
        }

        assert_eq!(
            unix::classify(Site::Close, EINTR),
            D::PeerGone,
            "never retry close"
        );
        assert_eq!(unix::classify(Site::Close, EIO), D::PeerGone);
        assert_eq!(unix::classify(Site::Close, EBADF), D::Fatal);
        #[cfg(target_os = "linux")]
        assert_eq!(unix::classify(Site::Timer, ETIME), D::Expired);
        assert_eq!(unix::classify(Site::Timer, ECANCELED), D::Canceled);
        assert_eq!(unix::classify(Site::Wait, EBUSY), D::Exhausted);
        assert_eq!(unix::classify(Site::Wait, EINTR), D::Retry);
        assert_eq!(unix::classify(Site::Wait, EBADF), D::Fatal);
        #[cfg(target_os = "linux")]
        assert_eq!(unix::classify(Site::Wait, ETIME), D::Expired);
        assert_eq!(unix::classify(Site::Cancel, ENOENT), D::Canceled);
        assert_eq!(unix::classify(Site::Cancel, EALREADY), D::Canceled);
        assert_eq!(unix::classify(Site::Cancel, EINVAL), D::Fatal);
        assert_eq!(unix::classify(Site::Wake, EAGAIN), D::WouldBlock);
        assert_eq!(unix::classify(Site::Wake, EBADF), D::Fatal);
        assert_eq!(unix::classify(Site::Configure, ENOPROTOOPT), D::Unsupported);
        for code in [EMFILE, ENFILE, ENOMEM, ENOBUFS] {
            assert_eq!(
                unix::classify(Site::Open, code),
                D::Exhausted,
                "open {code}"
            );
        }
        for code in [ENOENT, EACCES, ELOOP, EXDEV, EIO] {
            assert_eq!(unix::classify(Site::Open, code), D::Fatal, "open {code}");
        }
    }

    /// An error about one peer, at accept, skips that peer; only `Exhausted` pauses the
    /// listener. Regression: a connection reset in the backlog (Unix ECONNRESET and friends,
    /// Windows WSAECONNRESET, Wine WSAENOTCONN) used to pause accepting for every client.
    #[cfg(unix)]
    #[test]
    fn unix_peer_errors_at_accept_skip_the_peer() {
        use libc::*;
        for code in [
            ECONNRESET,
            EPIPE,
            ENOTCONN,
            ETIMEDOUT,
            ECONNABORTED,
            EHOSTUNREACH,
            ENETUNREACH,
            ENETDOWN,
            ESHUTDOWN,
        ] {
            assert_eq!(
                unix::classify(Site::Accept, code),
                D::SkipPeer,
                "accept errno {code}"
            );
            let e = io::Error::from_raw_os_error(code);
            assert_eq!(classify(Site::Accept, &e), D::SkipPeer, "accept {e}");
        }
        // Whatever errno means "peer gone" on a stream means "skip it" at accept, and
        // accept never answers PeerGone.
        for code in 1..4096 {
            let at_accept = unix::classify(Site::Accept, code);
            assert_ne!(at_accept, D::PeerGone, "accept errno {code}");
            if unix::classify(Site::Recv, code) == D::PeerGone {
                assert_eq!(at_accept, D::SkipPeer, "accept errno {code}");
            }
        }
    }

    #[test]
    fn windows_peer_errors_at_accept_skip_the_peer() {
        use windows::*;
        for code in [
            WSAECONNRESET,
            WSAENOTCONN,
            WSAECONNABORTED,
            WSAETIMEDOUT,
            WSAENETRESET,
            WSAESHUTDOWN,
            WSAEHOSTUNREACH,
            WSAEHOSTDOWN,
            WSAENETUNREACH,
            WSAENETDOWN,
            WSAEACCES,
            ERROR_NETNAME_DELETED,
            ERROR_BROKEN_PIPE,
        ] {
            assert_eq!(
                windows::classify(Site::Accept, code),
                D::SkipPeer,
                "accept code {code}"
            );
        }
        for code in (0..16_000).chain([ERROR_NETNAME_DELETED, ERROR_BROKEN_PIPE]) {
            let at_accept = windows::classify(Site::Accept, code);
            assert_ne!(at_accept, D::PeerGone, "accept code {code}");
            if windows::classify(Site::Recv, code) == D::PeerGone {
                assert_eq!(at_accept, D::SkipPeer, "accept code {code}");
            }
        }
    }

    #[test]
    fn peer_error_kinds_at_accept_skip_the_peer() {
        use io::ErrorKind as K;
        for kind in [
            K::ConnectionReset,
            K::ConnectionAborted,
            K::BrokenPipe,
            K::NotConnected,
            K::TimedOut,
        ] {
            let e = io::Error::new(kind, "x");
            assert_eq!(classify(Site::Accept, &e), D::SkipPeer, "{kind:?}");
            assert_eq!(classify(Site::Recv, &e), D::PeerGone, "{kind:?}");
        }
        let e = io::Error::new(K::OutOfMemory, "x");
        assert_eq!(classify(Site::Accept, &e), D::Exhausted);
    }

    #[cfg(unix)]
    #[test]
    fn ring_setup_hints_name_the_cause() {
        let hint = |code| ring_setup_hint(&io::Error::from_raw_os_error(code));
        assert!(hint(libc::EPERM).contains("seccomp"));
        assert_eq!(
            hint(libc::ENOMEM),
            "the kernel refused the memory the ring asked for; use fewer --ring-buffers or a \
             smaller --buffer-size"
        );
        // The one minimum kernel, wherever it is named.
        assert_eq!(
            hint(libc::ENOSYS),
            "this kernel has no io_uring (Linux 6.0 or newer is needed)"
        );
        assert_eq!(
            hint(libc::EINVAL),
            "this kernel lacks an io_uring feature ringport needs (Linux 6.0 or newer is needed)"
        );
        assert_eq!(hint(libc::EBADF), "io_uring setup failed");
    }

    /// On Windows: the hint names Linux, whatever the error.
    #[cfg(windows)]
    #[test]
    fn ring_setup_hints_name_the_cause() {
        let e = io::Error::new(io::ErrorKind::Unsupported, "x");
        assert_eq!(ring_setup_hint(&e), "io_uring exists only on Linux");
        let e = io::Error::from_raw_os_error(windows::WSAEBADF);
        assert_eq!(ring_setup_hint(&e), "io_uring setup failed");
    }

    /// Say why a test does not run on this OS, where the test output shows it (stderr is
    /// not captured when written to directly).
    #[cfg(not(unix))]
    fn skip(test: &str, reason: &str) {
        use std::io::Write;
        let _ = writeln!(io::stderr(), "skipped: {test}: {reason}");
    }

    #[cfg(not(unix))]
    #[test]
    fn unix_table() {
        skip(
            "unix_table",
            "the Unix table is built on libc's errno constants and compiled only on Unix; \
             windows_table covers this OS's table",
        );
    }

    #[cfg(not(unix))]
    #[test]
    fn unix_peer_errors_at_accept_skip_the_peer() {
        skip(
            "unix_peer_errors_at_accept_skip_the_peer",
            "the Unix table is compiled only on Unix; \
             windows_peer_errors_at_accept_skip_the_peer covers this OS's table",
        );
    }

    #[cfg(windows)]
    #[test]
    fn classify_uses_the_os_code() {
        use windows::{WSAECONNRESET, WSAEMFILE, WSAENOBUFS};
        let e = io::Error::from_raw_os_error(WSAEMFILE);
        assert_eq!(classify(Site::Accept, &e), D::Exhausted);
        assert!(is_out_of_descriptors(&e));
        let e = io::Error::from_raw_os_error(WSAENOBUFS);
        assert_eq!(classify(Site::Accept, &e), D::Exhausted);
        assert!(!is_out_of_descriptors(&e));
        let e = io::Error::from_raw_os_error(WSAECONNRESET);
        assert_eq!(classify(Site::Recv, &e), D::PeerGone);
        assert_eq!(classify(Site::Accept, &e), D::SkipPeer);
    }

    #[cfg(unix)]
    #[test]
    fn classify_uses_the_os_code() {
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(classify(Site::Accept, &e), D::Exhausted);
        assert!(is_out_of_descriptors(&e));
        let e = io::Error::from_raw_os_error(libc::ENOBUFS);
        assert_eq!(classify(Site::BufferRing, &e), D::Exhausted);
        assert!(!is_out_of_descriptors(&e));
        assert_eq!(
            classify(Site::Recv, &from_completion(-libc::ECONNRESET)),
            D::PeerGone
        );
    }

    #[test]
    fn windows_table() {
        use windows::*;
        let stream = [
            (WSAEINTR, D::Retry),
            (WSAEWOULDBLOCK, D::WouldBlock),
            (WSAEINPROGRESS, D::WouldBlock),
            (WSAECONNRESET, D::PeerGone),
            (ERROR_NETNAME_DELETED, D::PeerGone),
            (WSAECONNABORTED, D::PeerGone),
            (WSAENETRESET, D::PeerGone),
            (WSAETIMEDOUT, D::PeerGone),
            (WSAENOTCONN, D::PeerGone),
            (WSAESHUTDOWN, D::PeerGone),
            (WSAEHOSTUNREACH, D::PeerGone),
            (WSAENETUNREACH, D::PeerGone),
            (ERROR_BROKEN_PIPE, D::PeerGone),
            (WSAENOBUFS, D::Exhausted),
            (WSAEMFILE, D::Exhausted),
            (ERROR_NOT_ENOUGH_MEMORY, D::Exhausted),
            (WSAEOPNOTSUPP, D::Unsupported),
            (ERROR_OPERATION_ABORTED, D::Canceled),
            (WSAEBADF, D::Fatal),
            (WSAEFAULT, D::Fatal),
            (WSAEINVAL, D::Fatal),
            (WSAENOTSOCK, D::Fatal),
        ];
        for site in [Site::Recv, Site::Send] {
            for (code, want) in stream {
                assert_eq!(windows::classify(site, code), want, "{site:?} code {code}");
            }
        }
        let accept = [
            (WSAECONNRESET, D::SkipPeer),
            (WSAECONNABORTED, D::SkipPeer),
            (WSAENETDOWN, D::SkipPeer),
            (WSAEHOSTUNREACH, D::SkipPeer),
            (WSAEMFILE, D::Exhausted),
            (WSAENOBUFS, D::Exhausted),
            (WSAEWOULDBLOCK, D::WouldBlock),
            (WSAENOTSOCK, D::Fatal),
        ];
        for (code, want) in accept {
            assert_eq!(
                windows::classify(Site::Accept, code),
                want,
                "accept code {code}"
            );
        }
        assert_eq!(windows::classify(Site::Close, WSAEINTR), D::PeerGone);
        for code in [
            ERROR_TOO_MANY_OPEN_FILES,
            ERROR_NOT_ENOUGH_MEMORY,
            ERROR_OUTOFMEMORY,
        ] {
            assert_eq!(
                windows::classify(Site::Open, code),
                D::Exhausted,
                "open {code}"
            );
        }
        // File-call codes mean nothing at a socket: 4 is not a socket error.
        assert_eq!(
            windows::classify(Site::Recv, ERROR_TOO_MANY_OPEN_FILES),
            D::Fatal
        );
    }
}
