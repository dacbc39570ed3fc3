//! File bodies on the ring: a file range goes to the socket through a pipe, by two splice
//! requests per chunk (file to pipe, pipe to socket), so its bytes never pass through user
//! space.
//!
//! One pipe per connection, made when its first file range is sent and closed with the
//! connection. One output request is in flight per connection at a time (a send or one of
//! the two splices), which keeps bytes and file ranges in the order they were queued.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Pipe capacity asked for; the kernel may grant less (its `pipe-max-size`, the user's
/// pipe quota), and then the default of 64 KiB is used.
const WANTED_PIPE_SIZE: i32 = 1 << 20;

/// The pipe a connection's file bodies pass through.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// How many bytes the pipe holds at most: the largest chunk spliced into it.
    pub(super) capacity: usize,
    /// Bytes in the pipe, not yet spliced to the socket.
    pub(super) filled: usize,
}

impl Pipe {
    /// A new pipe, as large as the kernel grants up to [`WANTED_PIPE_SIZE`].
    ///
    /// # Errors
    /// Fails when the process is out of descriptors or memory.
    pub(super) fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are new descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor this function owns, with an integer argument.
        let granted =
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, WANTED_PIPE_SIZE) };
        let capacity = if granted > 0 {
            granted as usize
        } else {
            64 * 1024
        };
        Ok(Pipe {
            read,
            write,
            capacity,
            filled: 0,
        })
    }

    /// The read end (spliced to the socket).
    pub(super) fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The write end (spliced into from the file).
    pub(super) fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }
}
