//! ringport: a TCP server engine. On Linux it reads and writes by completion through
//! io_uring; everywhere else (and on Linux when io_uring is not allowed) it runs a portable
//! readiness driver on `polling`. Both drivers feed one worker pool and decide what a failed
//! call means with one errno classifier ([`fallback::errno`]).
//!
//! ```no_run
//! use ringport::{Backend, Server, service::Echo};
//!
//! let mut builder = Server::builder();
//! builder.listen("127.0.0.1:0".parse().unwrap()).backend(Backend::Auto).workers(2);
//! let server = builder.build(Echo)?;
//! println!("{}", server.banner());
//! server.shutdown();
//! let stats = server.wait()?;
//! println!("{stats}");
//! # Ok::<(), std::io::Error>(())
//! ```

#![warn(missing_docs)]
// Unsafe code lives only in the io_uring driver, where every block says why it is sound.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod activation;
pub mod metrics;
mod pool;
pub mod proxy;
pub mod server;
pub mod service;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod uring;

pub use ringport_fallback as fallback;
pub use server::{available_backends, Backend, Server, ServerBuilder, ServerStats, ShutdownHandle};
pub use service::{Conn, ConnInfo, Handle, HandleError, Service};
