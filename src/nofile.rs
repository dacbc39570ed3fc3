//! The limit of open files (`RLIMIT_NOFILE`, `ulimit -n`): `serve` raises its soft limit at
//! start as far as `--max-connections` needs, never past the hard limit and never lower, and
//! says in one warning at start when that is not enough.
//!
//! A shell's soft limit is often 1024 (and systemd gives services 1024 unless the unit sets
//! `LimitNOFILE=`), while `--max-connections` defaults to 100000: without the raise, accepting
//! would pause out of descriptors at about a thousand connections.
//!
//! What the server needs is counted from its options ([`Need`]): a descriptor per connection
//! (two for HTTP with `--root`: the socket and the file being sent), plus what it holds
//! besides: [`BASE`], [`PER_IO_THREAD`] for each I/O thread and [`METRICS`] with metrics.
//!
//! Windows has no such limit (sockets are handles): [`raise`] does nothing there. macOS and
//! FreeBSD cap the soft limit below an unlimited hard one (`kern.maxfilesperproc`; macOS
//! refuses more with `EINVAL`, FreeBSD lowers it in silence), so the limit asked for is
//! approached by halving until the system takes it, and the one in force is read back.

// Windows compiles (and tests) the counting only.
#![cfg_attr(not(unix), allow(dead_code))]

/// Descriptors the process holds whatever its options: the standard streams, the service's
/// files (the HTTP root directory and a directory being listed, the access log and its
/// reopened successor; the store's snapshot, its temporary file and directory), and what
/// start-up reads and probes (cgroup files for the core count, the io_uring probe), with room
/// to spare.
pub(crate) const BASE: u64 = 32;
/// Descriptors per I/O thread: its listener, its ring or poller (with the poller's wake-up
/// and timer descriptors, or the ring's wake-up eventfd), and a connection accepted over
/// `--max-connections` on its way to being closed; rounded up.
pub(crate) const PER_IO_THREAD: u64 = 8;
/// Descriptors of `--metrics`: its listener, up to 128 scrape connections, and the
/// connection that wakes its accept at shutdown (both ends); rounded up.
pub(crate) const METRICS: u64 = 160;

/// The open files a server needs, from its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    /// `--max-connections`.
    pub(crate) connections: u64,
    /// Descriptors each connection holds: its socket, and with HTTP `--root` the file it
    /// sends (a client that pipelines requests for several large files may hold up to 8).
    pub(crate) per_connection: u64,
    /// `--io-threads`.
    pub(crate) io_threads: u16,
    /// Whether metrics are served (`--metrics`, or a passed socket).
    pub(crate) metrics: bool,
}

impl Need {
    /// Descriptors held besides the connections'.
    pub(crate) fn fixed(&self) -> u64 {
        BASE + PER_IO_THREAD * u64::from(self.io_threads) + if self.metrics { METRICS } else { 0 }
    }

    /// Descriptors in all: the soft limit the server asks for.
    pub(crate) fn total(&self) -> u64 {
        self.connections
            .saturating_mul(self.per_connection)
            .saturating_add(self.fixed())
    }

    /// Connections a soft limit of `limit` open files has room for.
    pub(crate) fn room(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.fixed()) / self.per_connection.max(1)
    }
}

/// What raising the limit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The soft limit was high enough already.
    Enough,
    /// Raised from `from` to `to`, which is enough.
    Raised { from: u64, to: u64 },
    /// Not enough: the soft limit is `soft` (raised from `from` when they differ) under a
    /// hard limit of `hard` (`u64::MAX`: unlimited).
    Short { from: u64, soft: u64, hard: u64 },
}

/// The soft limit a system takes, between `from` (in force, so taken) and `want`, with
/// `take(n)` asking for `n`: `want` if it is taken, else the highest taken, found by halving
/// the distance (about 20 calls at most). When `take` succeeds the limit is `n`, when it fails
/// the limit stays as it was; so the one in force at the end is the one returned.
pub(crate) fn highest(from: u64, want: u64, mut take: impl FnMut(u64) -> bool) -> u64 {
    if want <= from || take(want) {
        return want.max(from);
    }
    // `lo` is taken, `hi` is not.
    let (mut lo, mut hi) = (from, want);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if take(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The one start-up warning of an [`Outcome::Short`]: the limit, the connections it has room
/// for, and how to raise it.
pub(crate) fn short_warning(need: &Need, from: u64, soft: u64, hard: u64) -> String {
    let total = need.total();
    let hard_text = limit_text(hard);
    let state = if soft > from {
        format!("raised from {from} to {soft}, hard limit {hard_text}")
    } else {
        format!("is {soft}, hard limit {hard_text}")
    };
    let how = if hard < total {
        format!(
            "raise the hard limit to {total} (`ulimit -n {total}` as root before starting \
             ringport, LimitNOFILE={total} in its systemd unit) or lower --max-connections"
        )
    } else {
        "the system refused more (on macOS and FreeBSD, kern.maxfilesperproc caps it): raise \
         that, or lower --max-connections"
            .to_string()
    };
    format!(
        "open files limit (RLIMIT_NOFILE) {state}: room for about {} connections, not the {} \
         of --max-connections, which need {total}; {how}",
        need.room(soft),
        need.connections,
    )
}

/// A limit as the warnings write it.
fn limit_text(n: u64) -> String {
    if n == u64::MAX {
        "unlimited".to_string()
    } else {
        n.to_string()
    }
}

/// What the warnings say when the limit cannot be read.
fn unreadable(e: &std::io::Error) -> String {
    format!("cannot read the open files limit (RLIMIT_NOFILE): {e}; it is left as it is")
}

/// Raise the soft limit of open files towards `need`'s total, as far as the hard limit and
/// the system allow, and log what came of it: a line (INFO) when it was raised enough, a
/// warning when it is short, nothing when it was enough already.
#[cfg(unix)]
pub(crate) fn raise(need: &Need) {
    match raise_to(need.total()) {
        Ok(Outcome::Enough) => {}
        Ok(Outcome::Raised { from, to }) => tracing::info!(
            "open files limit (RLIMIT_NOFILE) raised from {from} to {to} for --max-connections {}",
            need.connections
        ),
        Ok(Outcome::Short { from, soft, hard }) => {
            tracing::warn!("{}", short_warning(need, from, soft, hard));
        }
        Err(e) => tracing::warn!("{}", unreadable(&e)),
    }
}

/// Windows has no limit of open files per process: nothing to raise.
#[cfg(not(unix))]
pub(crate) fn raise(_: &Need) {}

/// Room for `ringport bench`'s client connections, after [`raise_for_clients`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientRoom {
    /// The soft limit is high enough (raised if it had to be).
    Enough,
    /// Probably short: the warning to print (the run may fail when connecting).
    Short(String),
    /// Fewer descriptors than connections: the run cannot work; why.
    Impossible(String),
}

/// Raise the soft limit for `ringport bench`: a descriptor per client connection, plus the
/// fixed ones of `threads` event loops.
#[cfg(unix)]
pub(crate) fn raise_for_clients(connections: u64, threads: u16) -> ClientRoom {
    let need = Need {
        connections,
        per_connection: 1,
        io_threads: threads,
        metrics: false,
    };
    let total = need.total();
    match raise_to(total) {
        Ok(Outcome::Enough | Outcome::Raised { .. }) => ClientRoom::Enough,
        Ok(Outcome::Short { soft, hard, .. }) => {
            let text = format!(
                "open files limit (RLIMIT_NOFILE) is {soft}, hard limit {}: room for \
                 about {} connections, not the {connections} of --connections, which need \
                 {total}; raise the hard limit (`ulimit -n {total}` as root) or lower \
                 --connections",
                limit_text(hard),
                need.room(soft)
            );
            if soft <= connections {
                ClientRoom::Impossible(text)
            } else {
                ClientRoom::Short(text)
            }
        }
        Err(e) => ClientRoom::Short(unreadable(&e)),
    }
}

/// Windows has no limit of open files per process: nothing to raise.
#[cfg(not(unix))]
pub(crate) fn raise_for_clients(_: u64, _: u16) -> ClientRoom {
    ClientRoom::Enough
}

/// Raise the soft limit to `total`, or as close as the hard limit and the system allow.
///
/// # Errors
///
/// `getrlimit` failed: the limit is not known, and left as it is.
#[cfg(unix)]
fn raise_to(total: u64) -> std::io::Result<Outcome> {
    let (from, hard) = sys::get()?;
    if from >= total {
        return Ok(Outcome::Enough);
    }
    highest(from, total.min(hard), |n| sys::set(n, hard).is_ok());
    // Read back what is in force: FreeBSD lowers a soft limit over its cap without a word.
    let soft = sys::get().map_or(from, |(soft, _)| soft).max(from);
    Ok(if soft >= total {
        Outcome::Raised { from, to: soft }
    } else {
        Outcome::Short { from, soft, hard }
    })
}

/// `getrlimit`/`setrlimit` of `RLIMIT_NOFILE`, limits as counts (`u64::MAX`: unlimited).
#[cfg(unix)]
mod sys {
    use std::io;

    /// A limit as a count (`rlim_t` is unsigned on Linux and macOS, `i64` on FreeBSD, where
    /// the conversion is not the identity it is here).
    #[allow(clippy::useless_conversion)]
    fn count(v: libc::rlim_t) -> u64 {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            u64::try_from(v).unwrap_or(u64::MAX)
        }
    }

    /// A count as a limit; the hard limit's own value when it is unlimited.
    fn limit(n: u64) -> libc::rlim_t {
        if n == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            libc::rlim_t::try_from(n).unwrap_or(libc::RLIM_INFINITY)
        }
    }

    /// The soft and hard limits.
    ///
    /// # Errors
    ///
    /// `getrlimit` failed.
    pub(super) fn get() -> io::Result<(u64, u64)> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit for the call to fill.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((count(lim.rlim_cur), count(lim.rlim_max)))
    }

    /// Set the soft limit to `soft`, the hard one staying `hard`.
    ///
    /// # Errors
    ///
    /// `setrlimit` refused: over the hard limit, over the system's cap (`EINVAL` on macOS),
    /// or not allowed (`EPERM` under a seccomp filter).
    pub(super) fn set(soft: u64, hard: u64) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: limit(soft),
            rlim_max: limit(hard),
        };
        // SAFETY: `lim` is a valid rlimit, only read by the call.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(connections: u64, per_connection: u64, io_threads: u16, metrics: bool) -> Need {
        Need {
            connections,
            per_connection,
            io_threads,
            metrics,
        }
    }

    #[test]
    fn need_counts_connections_threads_and_metrics() {
        assert_eq!(need(100_000, 1, 2, false).total(), 100_000 + 32 + 16);
        assert_eq!(need(500, 1, 2, false).total(), 548);
        assert_eq!(need(1000, 1, 1, true).total(), 1000 + 32 + 8 + 160);
        // HTTP with --root: the socket and the file being sent.
        assert_eq!(need(100_000, 2, 16, false).total(), 200_000 + 32 + 128);
        assert_eq!(need(u64::MAX, 2, 255, true).total(), u64::MAX);
        assert_eq!(need(1000, 1, 1, false).room(128), 88);
        assert_eq!(need(1000, 2, 1, false).room(128), 44);
        // A limit below the fixed part has room for none.
        assert_eq!(need(1000, 1, 255, true).room(1024), 0);
    }

    #[test]
    fn highest_takes_the_limit_asked_for_when_it_can() {
        let mut asked = Vec::new();
        let got = highest(1024, 100_048, |n| {
            asked.push(n);
            true
        });
        assert_eq!((got, asked), (100_048, vec![100_048]));
        // Nothing to ask when the limit in force is as high.
        assert_eq!(highest(4096, 1024, |_| panic!("asked")), 4096);
    }

    /// macOS: a soft limit above `kern.maxfilesperproc` is refused (`EINVAL`), whatever the
    /// hard limit says.
    #[test]
    fn highest_finds_a_cap_below_the_hard_limit() {
        let cap = 24_576;
        let mut limit = 256;
        let mut calls = 0;
        let got = highest(256, 100_048, |n| {
            calls += 1;
            if n <= cap {
                limit = n;
            }
            n <= cap
        });
        assert_eq!((got, limit), (cap, cap));
        assert!(calls <= 20, "{calls} calls");
    }

    /// Not allowed at all (a seccomp filter): the limit in force stays.
    #[test]
    fn highest_keeps_the_limit_when_every_raise_is_refused() {
        assert_eq!(highest(1024, 1_048_576, |_| false), 1024);
    }

    #[test]
    fn short_warning_says_the_limit_the_room_and_how_to_raise_it() {
        let n = need(1000, 1, 1, false);
        assert_eq!(
            short_warning(&n, 64, 128, 128),
            "open files limit (RLIMIT_NOFILE) raised from 64 to 128, hard limit 128: room for \
             about 88 connections, not the 1000 of --max-connections, which need 1040; raise \
             the hard limit to 1040 (`ulimit -n 1040` as root before starting ringport, \
             LimitNOFILE=1040 in its systemd unit) or lower --max-connections"
        );
        assert!(short_warning(&n, 128, 128, 128)
            .starts_with("open files limit (RLIMIT_NOFILE) is 128, hard limit 128: room"));
        // The hard limit allows it but the system does not (macOS, FreeBSD).
        assert_eq!(
            short_warning(&n, 256, 1024, u64::MAX),
            "open files limit (RLIMIT_NOFILE) raised from 256 to 1024, hard limit unlimited: \
             room for about 984 connections, not the 1000 of --max-connections, which need \
             1040; the system refused more (on macOS and FreeBSD, kern.maxfilesperproc caps \
             it): raise that, or lower --max-connections"
        );
    }

    /// The process's own limit: raising to what is in force already changes nothing.
    #[cfg(unix)]
    #[test]
    fn raising_to_the_limit_in_force_changes_nothing() {
        let (soft, _) = sys::get().unwrap();
        assert_eq!(raise_to(soft).unwrap(), Outcome::Enough);
        assert_eq!(sys::get().unwrap().0, soft);
    }
}
