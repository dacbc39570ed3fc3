//! `cargo bench --bench micro`: the hot-path pieces on their own.
//!
//! - `classify`: the errno classifier on the outcomes a driver sees most (would-block,
//!   interrupted, peer gone) and on an error without an OS code.
//!
//! The pool hand-off is measured through a real server by `cargo bench --bench echo`
//! (pool and inline modes side by side).

use std::hint::black_box;
use std::io;

use criterion::{criterion_group, criterion_main, Criterion};
use ringport::fallback::errno::{classify, Site};

fn classifier(c: &mut Criterion) {
    // Raw codes are this OS's errno values: the Unix table is the one consulted here.
    #[cfg(unix)]
    let cases = [
        (
            "recv would-block",
            Site::Recv,
            io::Error::from(io::ErrorKind::WouldBlock),
        ),
        (
            "recv EAGAIN",
            Site::Recv,
            io::Error::from_raw_os_error(libc::EAGAIN),
        ),
        (
            "send EPIPE",
            Site::Send,
            io::Error::from_raw_os_error(libc::EPIPE),
        ),
        (
            "accept EMFILE",
            Site::Accept,
            io::Error::from_raw_os_error(libc::EMFILE),
        ),
        (
            "buffer ring ENOBUFS",
            Site::BufferRing,
            io::Error::from_raw_os_error(libc::ENOBUFS),
        ),
        (
            "wait EINTR",
            Site::Wait,
            io::Error::from_raw_os_error(libc::EINTR),
        ),
    ];
    #[cfg(not(unix))]
    let cases = [
        (
            "recv would-block",
            Site::Recv,
            io::Error::from(io::ErrorKind::WouldBlock),
        ),
        (
            "send broken pipe",
            Site::Send,
            io::Error::from(io::ErrorKind::BrokenPipe),
        ),
    ];
    let mut g = c.benchmark_group("classify");
    for (name, site, err) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| classify(black_box(*site), black_box(err)))
        });
    }
    g.finish();
}

criterion_group!(benches, classifier);
criterion_main!(benches);
