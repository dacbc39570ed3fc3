//! The choke points of the completion driver: every accept, receive and send result the
//! driver classifies is looked at here first.
//!
//! With the `fault-injection` feature and a [`FaultPlan`] in the config, a scripted result
//! can stand in for part of the real one. A completion reports what the kernel already did
//! (an accepted descriptor, bytes copied into a provided buffer, bytes sent), so a script
//! can never undo it; each choke point says what it simulates instead. Without the feature
//! every function here returns "nothing scripted" and [`ScriptedSend`] is empty, so the
//! driver's fault branches are dead code the compiler removes.
//!
//! [`FaultPlan`]: ringport_fallback::fault::FaultPlan

use std::io;

#[cfg(feature = "fault-injection")]
use ringport_fallback::errno::Site;
#[cfg(feature = "fault-injection")]
use ringport_fallback::fault::Fault;
use ringport_fallback::DriverConfig;

/// A scripted stand-in for (part of) a real result. Never made without the
/// `fault-injection` feature.
#[derive(Debug)]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
pub(super) enum Injected {
    /// Move at most this many bytes at once (at least 1).
    Short(usize),
    /// Fail with this error, classified where a real one would be.
    Error(io::Error),
}

/// Count one call at `site` and return what the plan scripted for it.
#[cfg(feature = "fault-injection")]
fn next(cfg: &DriverConfig, site: Site) -> Option<Injected> {
    Some(match cfg.fault_plan()?.next(site)? {
        Fault::Short(n) => Injected::Short(n.max(1)),
        f => Injected::Error(f.error().unwrap_or_else(|| io::Error::other("fault"))),
    })
}

/// An accept completion (`Site::Accept`), counted for every completion.
///
/// A scripted error stands in for a failed completion's error. A completion that carried a
/// new descriptor keeps it (the connection is admitted as usual) and the driver then acts on
/// the error as well: what is simulated is the failure of the next accept, reported with
/// this completion.
#[inline]
pub(super) fn accept(cfg: &DriverConfig) -> Option<io::Error> {
    #[cfg(feature = "fault-injection")]
    return match next(cfg, Site::Accept)? {
        Injected::Error(e) => Some(e),
        Injected::Short(_) => None,
    };
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = cfg;
        None
    }
}

/// What was scripted for one receive completion.
#[derive(Debug, Default)]
pub(super) struct RecvFaults {
    /// Deliver the completion's bytes in pieces of at most this many.
    pub(super) piece: Option<usize>,
    /// After the completion's bytes are delivered, act as if the receive then ended with
    /// this error (scripted at `Site::Recv`).
    pub(super) recv: Option<io::Error>,
    /// The same, scripted at `Site::BufferRing` (`ENOBUFS`: the ring ran dry).
    pub(super) ring: Option<io::Error>,
}

/// A receive completion, counted at `Site::Recv` and at `Site::BufferRing` (every receive
/// selects its buffer from the provided-buffer ring) for every completion.
///
/// The bytes a completion carries are already out of the socket: they are always delivered,
/// in order (in short pieces if scripted), unless a scripted error closes the connection.
/// A scripted error replaces only an EOF (which stays in the socket: the next receive
/// reports it again); otherwise it is acted on after the real result.
#[inline]
pub(super) fn recv(cfg: &DriverConfig) -> RecvFaults {
    #[cfg(feature = "fault-injection")]
    {
        let mut out = RecvFaults::default();
        for site in [Site::Recv, Site::BufferRing] {
            match next(cfg, site) {
                None => {}
                Some(Injected::Short(n)) => out.piece = Some(out.piece.map_or(n, |p| p.min(n))),
                Some(Injected::Error(e)) if site == Site::Recv => out.recv = Some(e),
                Some(Injected::Error(e)) => out.ring = Some(e),
            }
        }
        out
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = cfg;
        RecvFaults::default()
    }
}

/// A send request (`Site::Send`), counted when the request is made: each has exactly one
/// completion, and a short send can only be scripted before the kernel moves any byte.
///
/// `Short(n)`: the request asks for at most `n` bytes, so the short-send path resubmits the
/// rest. An error: no send is made (a no-op request takes its place) and its completion
/// reports the error, so nothing was written and the same bytes are still owed.
#[inline]
pub(super) fn send(cfg: &DriverConfig) -> Option<Injected> {
    #[cfg(feature = "fault-injection")]
    return next(cfg, Site::Send);
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = cfg;
        None
    }
}

/// The error a connection's send request was scripted to fail with, reported by its
/// completion. Empty (zero-sized) without the `fault-injection` feature.
#[derive(Debug, Default)]
pub(super) struct ScriptedSend {
    #[cfg(feature = "fault-injection")]
    error: Option<io::Error>,
}

impl ScriptedSend {
    /// Keep `e` for the completion of the request being made.
    pub(super) fn set(&mut self, e: io::Error) {
        #[cfg(feature = "fault-injection")]
        {
            self.error = Some(e);
        }
        #[cfg(not(feature = "fault-injection"))]
        drop(e);
    }

    /// The scripted error of the request that just completed, if any.
    #[inline]
    pub(super) fn take(&mut self) -> Option<io::Error> {
        #[cfg(feature = "fault-injection")]
        return self.error.take();
        #[cfg(not(feature = "fault-injection"))]
        None
    }
}
