//! The portable half of ringport.
//!
//! - [`errno`]: the one classifier that decides what a failed system call means;
//! - [`event`]: the contract between I/O drivers and the worker pool ([`event::Dispatch`],
//!   [`event::ConnId`], [`event::Command`], [`event::Waker`]);
//! - [`driver`]: the readiness driver on `polling`, which runs everywhere;
//! - [`net`]: listeners and socket options.
//!
//! | OS | readiness backend used by `polling` |
//! |---|---|
//! | Linux, Android | epoll |
//! | macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly | kqueue |
//! | illumos, Solaris | event ports |
//! | Windows | IOCP with AFD |
//!
//! The io_uring completion driver lives in the root crate (Linux only); it imports the
//! classifier and the contract from here.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod driver;
pub mod errno;
pub mod event;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod net;
pub mod outq;

pub use driver::{PollDriver, Registered};
pub use errno::{classify, Disposition, Site};
pub use event::{
    Command, ConnId, ConnInfo, Dispatch, DriverConfig, FileRange, Shared, Stats, Waker,
};
