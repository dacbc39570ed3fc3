//! Starting child processes, with the one retry Wine needs.

use std::io;
use std::process::{Child, Command, Output};
use std::time::Duration;

/// Windows' `ERROR_INTERNAL_ERROR`: what Wine's `CreateProcess` now and then answers on a
/// loaded machine, for a program that starts fine a moment later.
const WINE_INTERNAL_ERROR: i32 = 1359;

/// Tries a start gets before its error is returned.
const TRIES: u32 = 5;

/// [`Command::spawn`] and [`Command::output`], retried (on Windows only, with a growing
/// pause) when process creation fails with [`WINE_INTERNAL_ERROR`]; any other error, and
/// every error elsewhere, is returned at once.
pub trait Start {
    /// Like [`Command::spawn`].
    fn start(&mut self) -> io::Result<Child>;
    /// Like [`Command::output`].
    fn run(&mut self) -> io::Result<Output>;
}

impl Start for Command {
    fn start(&mut self) -> io::Result<Child> {
        retrying(|| self.spawn())
    }

    fn run(&mut self) -> io::Result<Output> {
        retrying(|| self.output())
    }
}

fn retrying<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 1;
    loop {
        match f() {
            Err(e)
                if cfg!(windows)
                    && e.raw_os_error() == Some(WINE_INTERNAL_ERROR)
                    && tries < TRIES =>
            {
                // A pause between tries of process creation, not a wait on a condition.
                std::thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                tries += 1;
            }
            r => return r,
        }
    }
}
