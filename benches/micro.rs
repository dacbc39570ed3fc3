//! `cargo bench --bench micro`: the hot-path pieces on their own.
//!
//! - `classify`: the errno classifier on the outcomes a driver sees most (would-block,
//!   interrupted, peer gone) and on an error without an OS code.
//! - `pool hand-off`: a batch of data events for N connections goes to one worker and the
//!   echoed answers come back, through `Pool::start` + `PoolLink` (what a driver does in
//!   one turn in pool mode); the same batch through `Inline` for comparison.

use std::hint::black_box;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringport::fallback::errno::{classify, Site};
use ringport::fallback::{Command, ConnId, Dispatch, Waker};
use ringport::pool::{Inline, Pool};
use ringport::service::Echo;

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

/// Echo every event of one batch and collect the answers; returns the bytes echoed.
fn round_trip(d: &mut dyn Dispatch, conns: &[ConnId], msg: &[u8]) -> usize {
    for &c in conns {
        d.data(c, msg);
    }
    d.flush();
    let want = conns.len() * msg.len();
    let mut got = 0;
    while got < want {
        d.commands(&mut |_, cmd| {
            if let Command::Send(b) = cmd {
                got += b.len();
            }
        });
        if got < want {
            // Yield rather than spin: the worker may share this core.
            std::thread::yield_now();
        }
    }
    got
}

fn hand_off(c: &mut Criterion) {
    let msg = [7u8; 64];
    let mut g = c.benchmark_group("pool hand-off");
    g.measurement_time(Duration::from_secs(3));
    for batch in [1usize, 16, 256] {
        let conns: Vec<ConnId> = (0..batch as u32).map(|s| ConnId::new(0, s, 1)).collect();
        g.throughput(Throughput::Elements(batch as u64));

        let waker = Waker::new();
        let (pool, mut links) =
            Pool::start(Arc::new(Echo), 1, std::slice::from_ref(&waker)).expect("pool starts");
        let mut link = links.pop().expect("one link");
        for &c in &conns {
            link.open(c);
        }
        g.bench_with_input(BenchmarkId::new("pool, 1 worker", batch), &batch, |b, _| {
            b.iter(|| round_trip(&mut link, &conns, &msg))
        });
        for &c in &conns {
            link.closed(c);
        }
        link.flush();
        drop(link);
        pool.join();

        let mut inline = Inline::new(Arc::new(Echo));
        for &c in &conns {
            inline.open(c);
        }
        g.bench_with_input(BenchmarkId::new("inline", batch), &batch, |b, _| {
            b.iter(|| round_trip(&mut inline, &conns, &msg))
        });
    }
    g.finish();
}

criterion_group!(benches, classifier, hand_off);
criterion_main!(benches);
