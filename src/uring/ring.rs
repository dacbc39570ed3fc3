//! Ring setup: flags tried strongest first, the features the driver needs, the wake eventfd.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::{opcode, IoUring, Probe};
use ringport_fallback::errno::{classify, Disposition, Site};
use ringport_fallback::DriverConfig;

/// Which setup flags the ring got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`: completions run only when this thread waits.
    DeferTaskrun,
    /// `COOP_TASKRUN | TASKRUN_FLAG`: no interrupt to run completions, a flag instead.
    CoopTaskrun,
    /// No optional flags.
    Plain,
}

impl Flavor {
    const ALL: [Flavor; 3] = [Flavor::DeferTaskrun, Flavor::CoopTaskrun, Flavor::Plain];
}

/// Build a ring of `entries` submission entries (completion queue four times that), with
/// the strongest flags this kernel accepts.
///
/// A flag set that setup rejects as `Unsupported` (`EINVAL` from a kernel that does not
/// know a flag; the classifier decides) is dropped and the next weaker one tried. The error
/// of the last attempt is returned; the caller classifies it at `Site::RingSetup`.
///
/// # Errors
/// The setup error of the plain ring (`EPERM` under seccomp, `ENOSYS`, `ENOMEM`, ...).
pub(crate) fn build(entries: u32) -> io::Result<(IoUring, Flavor)> {
    let entries = entries.clamp(8, 32768);
    let mut last = None;
    for flavor in Flavor::ALL {
        let mut b = IoUring::builder();
        b.setup_cqsize(entries.saturating_mul(4)).setup_clamp();
        match flavor {
            Flavor::DeferTaskrun => {
                b.setup_single_issuer().setup_defer_taskrun();
            }
            Flavor::CoopTaskrun => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            Flavor::Plain => {}
        }
        match b.build(entries) {
            Ok(ring) => return Ok((ring, flavor)),
            Err(e) => match classify(Site::RingSetup, &e) {
                Disposition::Unsupported => last = Some(e),
                _ => return Err(e),
            },
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::Unsupported)))
}

/// Check that the ring can do what the driver asks of it.
///
/// # Errors
/// `EOPNOTSUPP` (classified `Unsupported` at `Site::RingSetup`) when a feature is missing.
pub(crate) fn check_features(ring: &IoUring) -> io::Result<()> {
    let params = ring.params();
    // Waits with a timeout (EXT_ARG, 5.11) and no lost completions on overflow (NODROP, 5.5).
    if !params.is_feature_ext_arg() || !params.is_feature_nodrop() {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    // Multishot receive came with Linux 6.0, like SEND_ZC, which the probe can see: its
    // presence stands for "multishot receive and accept work here".
    let needed = [
        opcode::AcceptMulti::CODE,
        opcode::RecvMulti::CODE,
        opcode::Send::CODE,
        opcode::Read::CODE,
        opcode::AsyncCancel2::CODE,
        opcode::SendZc::CODE,
    ];
    if needed.iter().all(|&op| probe.is_supported(op)) {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}

/// Register an empty table of descriptors for the connections' slots: as many as
/// `cfg.registered_files`, `cfg.max_connections` and the open-files limit (which the kernel
/// holds a table to) allow. Returns its length; 0 when the kernel refused one or is older
/// than 6.13 (the connections then use their descriptors as they are, which only costs a
/// lookup per request).
pub(crate) fn file_table(ring: &IoUring, cfg: &DriverConfig) -> u32 {
    if !releases_at_once() {
        return 0;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which `limit` is.
    let open_files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        0
    };
    let len = (cfg.registered_files as usize)
        .min(cfg.max_connections)
        .min(open_files) as u32;
    if len == 0 {
        return 0;
    }
    match ring.submitter().register_files_sparse(len) {
        Ok(()) => len,
        Err(e) => {
            tracing::debug!("no table of registered descriptors ({e}): using descriptors");
            0
        }
    }
}

/// Whether a file taken out of the table is released as soon as nothing uses it (Linux
/// 6.13, which gave each entry its own reference). Before, removals were batched behind
/// references held by every request issued since: a connection's multishot receive lives
/// as long as it does, so a socket taken out at close stayed open — no FIN or reset for
/// its peer — until receives on other connections ended.
fn releases_at_once() -> bool {
    // SAFETY: uname writes one utsname, which `u` is; all-zero bytes are a valid utsname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    // SAFETY: uname wrote the release as a NUL-terminated string within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    kernel_at_least(release.to_bytes(), (6, 13))
}

/// Whether a kernel release string (`6.18.44-fc-v669`) is at least `major.minor`.
fn kernel_at_least(release: &[u8], (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(|&c| c == b'.').map(|p| {
        let digits = p.iter().take_while(|c| c.is_ascii_digit()).count();
        std::str::from_utf8(&p[..digits]).ok()?.parse::<u32>().ok()
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// A blocking eventfd (an io_uring read on a non-blocking one would fail with `EAGAIN`
/// instead of waiting), close-on-exec.
///
/// # Errors
/// `eventfd(2)` failures (out of descriptors).
pub(crate) fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd, is valid and owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::kernel_at_least;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least(b"6.18.44-fc-v669", (6, 13)));
        assert!(kernel_at_least(b"6.13", (6, 13)));
        assert!(kernel_at_least(b"7.0.1", (6, 13)));
        assert!(!kernel_at_least(b"6.12.9-amd64", (6, 13)));
        assert!(!kernel_at_least(b"6.1.0-28-cloud-amd64", (6, 13)));
        assert!(!kernel_at_least(b"5.19.0", (6, 13)));
        assert!(!kernel_at_least(b"", (6, 13)));
        assert!(!kernel_at_least(b"six.thirteen", (6, 13)));
        assert!(!kernel_at_least(b"6", (6, 13)));
    }
}
