//! Scripted system-call failures for tests (cargo feature `fault-injection`).
//!
//! Each driver has one choke point per site where a syscall or completion result is handed
//! to the classifier. With a [`FaultPlan`] in the driver's config, the N-th call at a site
//! can be replaced by a scripted result: `EINTR`, `EAGAIN`, `ECONNRESET`, `ENOTCONN`, `EMFILE`
//! at accept, `ENOBUFS` at the buffer ring, or a short read or write. Without the feature, none of this
//! is compiled into the drivers.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::errno::Site;

/// A scripted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The call fails with `EINTR`.
    Interrupted,
    /// The call fails with `EAGAIN` although it could have gone on.
    WouldBlock,
    /// The call fails with `ECONNRESET`: the peer is gone.
    Reset,
    /// The call fails with `ENOTCONN` (what Wine's accept reports for a connection reset in
    /// the backlog).
    NotConnected,
    /// `accept` fails with `EMFILE`.
    OutOfDescriptors,
    /// A buffer-select receive fails with `ENOBUFS`.
    NoBuffers,
    /// A read or write moves at most this many bytes (at least one).
    Short(usize),
}

impl Fault {
    /// The error this fault stands for (`None` for a short transfer).
    pub fn error(self) -> Option<io::Error> {
        #[cfg(unix)]
        let code = match self {
            Fault::Interrupted => libc::EINTR,
            Fault::WouldBlock => libc::EAGAIN,
            Fault::Reset => libc::ECONNRESET,
            Fault::NotConnected => libc::ENOTCONN,
            Fault::OutOfDescriptors => libc::EMFILE,
            Fault::NoBuffers => libc::ENOBUFS,
            Fault::Short(_) => return None,
        };
        #[cfg(windows)]
        let code = match self {
            Fault::Interrupted => crate::errno::windows::WSAEINTR,
            Fault::WouldBlock => crate::errno::windows::WSAEWOULDBLOCK,
            Fault::Reset => crate::errno::windows::WSAECONNRESET,
            Fault::NotConnected => crate::errno::windows::WSAENOTCONN,
            Fault::OutOfDescriptors => crate::errno::windows::WSAEMFILE,
            Fault::NoBuffers => crate::errno::windows::WSAENOBUFS,
            Fault::Short(_) => return None,
        };
        #[cfg(not(any(unix, windows)))]
        let code = 0;
        Some(io::Error::from_raw_os_error(code))
    }
}

/// Which fault to inject at which call of which site, and what was injected.
#[derive(Debug, Default)]
pub struct FaultPlan {
    script: Mutex<BTreeMap<(SiteKey, u64), Fault>>,
    counters: [AtomicU64; SITES],
    injected: Mutex<Vec<(Site, Fault)>>,
    disarmed: AtomicBool,
}

const SITES: usize = 4;
type SiteKey = usize;

fn key(site: Site) -> Option<SiteKey> {
    match site {
        Site::Accept => Some(0),
        Site::Recv => Some(1),
        Site::Send => Some(2),
        Site::BufferRing => Some(3),
        _ => None,
    }
}

impl FaultPlan {
    /// An empty plan.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Inject `fault` at the `call`-th call (counting from 0) at `site`.
    pub fn at(&self, site: Site, call: u64, fault: Fault) -> &Self {
        if let Some(k) = key(site) {
            self.script
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((k, call), fault);
        }
        self
    }

    /// Stop injecting (the rest of the script is ignored).
    pub fn disarm(&self) {
        self.disarmed.store(true, Ordering::SeqCst);
    }

    /// Count a call at `site` and return the fault scripted for it, if any.
    pub fn next(&self, site: Site) -> Option<Fault> {
        let k = key(site)?;
        let n = self.counters[k].fetch_add(1, Ordering::Relaxed);
        if self.disarmed.load(Ordering::SeqCst) {
            return None;
        }
        let fault = self
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(k, n))?;
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((site, fault));
        Some(fault)
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<(Site, Fault)> {
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many calls were made at `site`.
    pub fn calls(&self, site: Site) -> u64 {
        key(site).map_or(0, |k| self.counters[k].load(Ordering::Relaxed))
    }
}

/// The choke point for a read or write: runs `call` (given a length cap, for short
/// transfers) unless the plan scripts a failure for this call.
pub fn intercept(
    plan: Option<&FaultPlan>,
    site: Site,
    call: impl FnOnce(Option<usize>) -> io::Result<usize>,
) -> io::Result<usize> {
    match plan.and_then(|p| p.next(site)) {
        None => call(None),
        Some(Fault::Short(n)) => call(Some(n.max(1))),
        Some(f) => Err(f.error().unwrap_or_else(|| io::Error::other("fault"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::{classify, Disposition};

    #[test]
    fn scripted_calls_fail_in_order() {
        let plan = FaultPlan::new();
        plan.at(Site::Recv, 1, Fault::Interrupted)
            .at(Site::Recv, 2, Fault::Short(3))
            .at(Site::Accept, 0, Fault::OutOfDescriptors);
        let ok = intercept(Some(&plan), Site::Recv, |cap| Ok(cap.unwrap_or(10)));
        assert_eq!(ok.unwrap(), 10);
        let e = intercept(Some(&plan), Site::Recv, |_| Ok(10)).unwrap_err();
        assert_eq!(classify(Site::Recv, &e), Disposition::Retry);
        let short = intercept(Some(&plan), Site::Recv, |cap| Ok(cap.unwrap_or(10)));
        assert_eq!(short.unwrap(), 3);
        let e = intercept(Some(&plan), Site::Accept, |_| Ok(0)).unwrap_err();
        assert_eq!(classify(Site::Accept, &e), Disposition::Exhausted);
        assert_eq!(plan.injected().len(), 3);
        assert_eq!(plan.calls(Site::Recv), 3);
        plan.at(Site::Send, 0, Fault::Reset);
        plan.disarm();
        assert!(intercept(Some(&plan), Site::Send, |_| Ok(1)).is_ok());
    }

    #[test]
    fn faults_classify_as_their_errno() {
        let cases = [
            (Site::Recv, Fault::WouldBlock, Disposition::WouldBlock),
            (Site::Send, Fault::Reset, Disposition::PeerGone),
            (Site::BufferRing, Fault::NoBuffers, Disposition::Exhausted),
            (Site::Accept, Fault::Interrupted, Disposition::Retry),
            (Site::Accept, Fault::Reset, Disposition::SkipPeer),
            (Site::Accept, Fault::NotConnected, Disposition::SkipPeer),
            (Site::Recv, Fault::NotConnected, Disposition::PeerGone),
        ];
        for (site, f, want) in cases {
            assert_eq!(classify(site, &f.error().unwrap()), want, "{f:?}");
        }
        assert!(Fault::Short(1).error().is_none());
    }
}
