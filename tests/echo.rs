//! Echo behaviour, on every backend this machine has, in pool and inline modes.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::{assert_echo, connect, echo_exchange, wait_until, Rng, Setup};
use ringport::fallback::Disposition;

every_backend!(
    concurrent_random_payloads_are_echoed_byte_exact,
    half_close_flushes_output_then_eof,
    peer_reset_mid_stream_leaves_others_served,
    many_short_lived_connections,
    two_thousand_concurrent_connections,
    recycled_slots_never_get_old_bytes,
    graceful_shutdown_closes_everything,
);

/// 200 connections at once, each a random payload up to 1 MiB sent in random chunks.
fn concurrent_random_payloads_are_echoed_byte_exact(setup: Setup) {
    let server = setup.echo();
    let addr = server.local_addr();
    let mut total = 0u64;
    let sizes: Vec<usize> = {
        let mut rng = Rng::new(42);
        (0..200).map(|_| rng.range(0, 1 << 20)).collect()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                s.spawn(move || {
                    let payload = Rng::new(i as u64 + 1).bytes(n);
                    let got = echo_exchange(addr, &payload, i as u64 + 1000, true);
                    assert_eq!(got.len(), payload.len(), "connection {i}: length");
                    assert!(got == payload, "connection {i}: bytes differ");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client");
        }
    });
    total += sizes.iter().map(|&n| n as u64).sum::<u64>();
    wait_until("all connections closed", || server.stats().open == 0);
    let st = server.stats();
    assert_eq!(st.accepted, 200);
    assert_eq!(st.closed, 200);
    assert_eq!(st.bytes_in, total);
    assert_eq!(st.bytes_out, total);
    assert_eq!(st.backend, setup.backend.name());
}

/// half_close_flushes_output: the client sends, shuts down writing, and still gets every
/// byte, then EOF.
fn half_close_flushes_output_then_eof(setup: Setup) {
    let server = setup.echo();
    let payload = Rng::new(7).bytes(3 * 1024 * 1024 + 17);
    let mut s = connect(server.local_addr());
    // Send everything before reading anything: the server must queue what the socket
    // does not take, pause reading over the output limit, and lose nothing.
    let mut w = s.try_clone().unwrap();
    let sent = payload.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
    wait_until("connection closed", || server.stats().open == 0);
}

/// A peer that resets mid-stream (SO_LINGER 0) is closed; others go on byte-exact.
fn peer_reset_mid_stream_leaves_others_served(setup: Setup) {
    let server = setup.echo();
    let addr = server.local_addr();
    for round in 0..20u64 {
        let victim = connect(addr);
        let mut v = victim.try_clone().unwrap();
        // Write a lot without reading, so output is queued when the reset arrives.
        let junk = vec![0xAAu8; 512 * 1024];
        let _ = v.write_all(&junk);
        socket2::SockRef::from(&victim)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(v);
        drop(victim);
        let payload = Rng::new(round).bytes(100_000);
        let got = echo_exchange(addr, &payload, round, true);
        assert!(got == payload, "round {round}: bystander echo differs");
    }
    // A victim may reset before the server accepted it: Linux still accepts it (its first
    // read fails), Windows fails that accept and the server skips the peer.
    wait_until("every connection accepted or skipped, and closed", || {
        let st = server.stats();
        st.accepted + st.errors_of(Disposition::SkipPeer) == 40 && st.open == 0
    });
    let st = server.stats();
    assert_eq!(st.closed, st.accepted, "{st}");
    assert_eq!(st.accept_pauses, 0, "{st}");
}

/// Connect, echo a line, close; many times, a few clients at once.
fn many_short_lived_connections(setup: Setup) {
    let server = setup.echo();
    let addr = server.local_addr();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..250 {
                    let mut c = connect(addr);
                    assert_echo(&mut c, format!("client {t} message {i}\n").as_bytes());
                }
            });
        }
    });
    wait_until("all closed", || server.stats().open == 0);
    assert_eq!(server.stats().accepted, 1000);
}

/// 2,000 connections open at once, each echoing several messages, round-robin.
fn two_thousand_concurrent_connections(setup: Setup) {
    let server = setup.echo();
    let addr = server.local_addr();
    let per_thread = 250;
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                let mut conns: Vec<TcpStream> = (0..per_thread).map(|_| connect(addr)).collect();
                for round in 0..4 {
                    for (i, c) in conns.iter_mut().enumerate() {
                        let msg = format!("{t}/{i}/{round};");
                        c.write_all(msg.as_bytes()).unwrap();
                    }
                    for (i, c) in conns.iter_mut().enumerate() {
                        let msg = format!("{t}/{i}/{round};");
                        let mut buf = vec![0; msg.len()];
                        c.read_exact(&mut buf).unwrap();
                        assert_eq!(buf, msg.as_bytes(), "conn {t}/{i} round {round}");
                    }
                }
            });
        }
    });
    wait_until("all closed", || server.stats().open == 0);
    let st = server.stats();
    assert_eq!(st.accepted, 2000);
    assert_eq!(st.closed, 2000);
}

/// Slots are reused quickly; each connection sees only its own bytes.
fn recycled_slots_never_get_old_bytes(setup: Setup) {
    let server = setup.echo();
    let addr = server.local_addr();
    for i in 0..300u32 {
        let mut a = connect(addr);
        let tag = format!("conn-{i}-");
        let body = tag.repeat(200);
        a.write_all(body.as_bytes()).unwrap();
        // Close without reading: its echo must never reach the next connection.
        drop(a);
        let mut b = connect(addr);
        let probe = format!("probe-{i}");
        b.write_all(probe.as_bytes()).unwrap();
        let mut buf = vec![0; probe.len()];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(buf, probe.as_bytes(), "round {i}");
        b.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "round {i}: extra bytes {rest:?}");
    }
    wait_until("all closed", || server.stats().open == 0);
}

/// Shutdown: stop accepting, flush what is owed, close, every thread exits.
fn graceful_shutdown_closes_everything(setup: Setup) {
    let server = setup.echo();
    let addr = server.local_addr();
    let mut idle = connect(addr);
    let mut busy = connect(addr);
    busy.write_all(b"owed bytes").unwrap();
    let mut buf = [0u8; 10];
    busy.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"owed bytes");
    wait_until("two open", || server.stats().open == 2);
    server.shutdown();
    let stats = server.wait().expect("clean exit");
    assert_eq!(stats.open, 0);
    assert_eq!(stats.closed, 2);
    let mut rest = Vec::new();
    assert_eq!(
        idle.read_to_end(&mut rest).unwrap(),
        0,
        "idle client sees EOF"
    );
}
