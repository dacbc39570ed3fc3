//! The io_uring completion driver (Linux only). Placeholder until the driver lands.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use ringport_fallback::{Dispatch, DriverConfig, Shared, Stats, Waker};

/// The completion driver for one I/O thread.
pub struct UringDriver {
    _private: (),
}

impl UringDriver {
    /// Build the ring and arm accepting on `listener`.
    ///
    /// # Errors
    /// Ring setup failures, classified by the caller with `Site::RingSetup`.
    pub fn new(
        _listener: TcpListener,
        _cfg: DriverConfig,
        _stats: Arc<Stats>,
        _shared: Arc<Shared>,
        waker: Arc<Waker>,
    ) -> io::Result<UringDriver> {
        let _ = waker;
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    /// Build a ring with the flags and buffer ring `cfg` asks for, then drop it: tells
    /// whether this kernel and its policy allow io_uring.
    ///
    /// # Errors
    /// The setup error; classify it with `Site::RingSetup`.
    pub fn probe(_cfg: &DriverConfig) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }

    /// Run until shutdown.
    ///
    /// # Errors
    /// A ring failure that is not an interrupt.
    pub fn run<D: Dispatch>(self, _dispatch: &mut D) -> io::Result<()> {
        Ok(())
    }
}
