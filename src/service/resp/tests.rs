//! Property tests: the parser on random and mutated bytes, and commands on random
//! arguments, never panic; every command answers with exactly one well-formed reply; the
//! running memory estimate always equals a recount.

use std::sync::Arc;

use proptest::prelude::*;
use ringport_fallback::{ConnId, Waker};

use super::commands::TABLE;
use super::protocol::{Frame, ProtoError, Step, INLINE_MAX};
use super::{Client, Listed, Resp, Route, Session, Shown};
use crate::service::handle::{Handle, Mailbox};

/// Bytes a strict RESP2 reply parser consumes for one reply at the start of `b`.
fn reply_len(b: &[u8]) -> Result<usize, String> {
    let cr = b
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("reply line without CRLF")?;
    let line = &b[1..cr];
    let num = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(line)))
    };
    match b.first() {
        Some(b'+') | Some(b'-') => {
            if line.contains(&b'\r') || line.contains(&b'\n') {
                return Err("newline inside a status line".into());
            }
            Ok(cr + 2)
        }
        Some(b':') => num().map(|_| cr + 2),
        Some(b'$') => {
            let n = num()?;
            if n < 0 {
                return Ok(cr + 2);
            }
            let end = cr + 2 + n as usize;
            if b.get(end..end + 2) != Some(b"\r\n") {
                return Err("bulk not followed by CRLF".into());
            }
            Ok(end + 2)
        }
        Some(b'*') => {
            let n = num()?;
            let mut at = cr + 2;
            for _ in 0..n.max(0) {
                at += reply_len(&b[at..])?;
            }
            Ok(at)
        }
        _ => Err(format!(
            "bad reply type in {:?}",
            String::from_utf8_lossy(b)
        )),
    }
}

/// Replies in `b`, each checked; an error if anything is left over or malformed.
fn count_replies(mut b: &[u8]) -> Result<usize, String> {
    let mut n = 0;
    while !b.is_empty() {
        let len = reply_len(b)?;
        b = &b[len..];
        n += 1;
    }
    Ok(n)
}

fn session(resp: &Resp) -> Session {
    let mailbox = Mailbox::new(Waker::new(), 1 << 20);
    let id = ConnId::new(0, 1, 1);
    mailbox.opened(id);
    Session {
        client: Client {
            id: 1,
            listed: Listed::new(
                1,
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ),
            shown: Shown::NEW,
            handle: Handle::new(id, Arc::clone(&mailbox)),
            subs: None,
            subs_changed: false,
            multi: None,
            quit: false,
            reply_off: false,
            reply_skip: 0,
            last: None,
        },
        frame: Frame::default(),
        route: Route::Conn,
        notifies: 0,
        window_out: 0,
        window_in: 0,
        drain_asked: false,
        after_eof: None,
        // Never counted nor listed: `open` did not run.
        left: true,
        shared: Arc::clone(&resp.shared),
    }
}

/// Arguments drawn from what commands look for: keys, numbers, floats, option words.
fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c", "k1", "k2"]).prop_map(|s| s.as_bytes().to_vec()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        (-5i64..20).prop_map(|n| n.to_string().into_bytes()),
        prop::sample::select(vec![
            "1.5",
            "-inf",
            "+inf",
            "(1",
            "nan",
            "0",
            "-1",
            "NX",
            "XX",
            "GT",
            "LT",
            "CH",
            "INCR",
            "EX",
            "PX",
            "KEEPTTL",
            "GET",
            "WITHSCORES",
            "LIMIT",
            "BYSCORE",
            "REV",
            "MATCH",
            "COUNT",
            "TYPE",
            "*",
            "a*",
            "[a-",
            "\\",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let specs: Vec<(&'static str, i32)> = TABLE
        .iter()
        .filter(|s| !["save", "bgsave", "quit"].contains(&s.name))
        .map(|s| (s.name, s.arity))
        .collect();
    (
        prop::sample::select(specs),
        prop::collection::vec(arg(), 0..8),
        0usize..10,
    )
        .prop_map(|((name, arity), mut args, pick)| {
            // Mostly the right number of arguments, so commands get past the arity check.
            if pick < 8 {
                let want = if arity >= 0 {
                    arity as usize - 1
                } else {
                    (-arity) as usize - 1 + pick % 3
                };
                args.resize(want, b"a".to_vec());
            }
            let mut v = vec![name.as_bytes().to_vec()];
            v.extend(args);
            v
        })
}

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_survives_random_bytes(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut f = Frame::default();
        let mut at = 0;
        while at < input.len() {
            match f.parse(&input[at..], 64) {
                Step::Complete(n) => {
                    prop_assert!(n > 0 && at + n <= input.len());
                    let args = f.view(&input[at..]);
                    for a in args.iter_from(0) {
                        // A bulk is bounded by the bulk limit; an inline argument by its
                        // line, which came whole.
                        let bound = if f.is_inline { n } else { 64 };
                        prop_assert!(a.len() <= bound);
                    }
                    f.reset();
                    at += n;
                }
                Step::Incomplete | Step::Error(_) => break,
            }
        }
    }

    #[test]
    fn split_requests_parse_like_whole_ones(
        reqs in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let wire: Vec<u8> = reqs.iter().flat_map(|r| encode(r)).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        // Feed growing prefixes, as the engine does, keeping only what is not consumed.
        let mut f = Frame::default();
        let mut got: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut start = 0;
        for &cut in &cuts {
            loop {
                match f.parse(&wire[start..cut], 1 << 20) {
                    Step::Complete(n) => {
                        let args = f.view(&wire[start..cut]);
                        got.push(args.iter_from(0).map(<[u8]>::to_vec).collect());
                        f.reset();
                        start += n;
                    }
                    Step::Incomplete => break,
                    Step::Error(e) => prop_assert!(false, "error {e} on valid input"),
                }
            }
        }
        prop_assert_eq!(start, wire.len());
        prop_assert_eq!(got, reqs);
    }

    #[test]
    fn mutated_requests_never_panic(
        reqs in prop::collection::vec(command(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut wire: Vec<u8> = reqs.iter().flat_map(|r| encode(r)).collect();
        for (at, b) in flips {
            let i = at.index(wire.len());
            wire[i] = b;
        }
        let resp = Resp::builder().build().unwrap();
        let mut s = session(&resp);
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            match s.frame.parse(&wire[at..], 1 << 16) {
                Step::Complete(n) => {
                    let args = s.frame.view(&wire[at..]);
                    if !args.is_empty() {
                        resp.execute(&mut s.client, args, &mut out, super::store::unix_ms());
                    }
                    s.frame.reset();
                    at += n;
                }
                Step::Incomplete | Step::Error(_) => break,
            }
        }
        prop_assert!(count_replies(&out).is_ok(), "{:?}", String::from_utf8_lossy(&out));
        prop_assert_eq!(resp.shared.ks.used(), resp.shared.ks.recount());
    }

    #[test]
    fn every_command_answers_once_and_memory_adds_up(cmds in prop::collection::vec(command(), 1..40)) {
        let resp = Resp::builder().build().unwrap();
        let mut s = session(&resp);
        let now = super::store::unix_ms();
        for c in &cmds {
            let ranges: Vec<(usize, usize)> = {
                let mut at = 0;
                c.iter().map(|a| { let r = (at, at + a.len()); at += a.len(); r }).collect()
            };
            let buf: Vec<u8> = c.concat();
            let args = super::protocol::Args::new(&buf, &ranges);
            let mut out = Vec::new();
            resp.execute(&mut s.client, args, &mut out, now);
            let n = count_replies(&out);
            prop_assert!(n.is_ok(), "{:?} -> {:?}: {:?}", c, String::from_utf8_lossy(&out), n);
            let n = n.unwrap();
            let name = String::from_utf8_lossy(&c[0]).to_string();
            if name.contains("subscribe") {
                prop_assert!(n >= 1);
            } else {
                prop_assert_eq!(n, 1, "{:?} -> {:?}", c, String::from_utf8_lossy(&out));
            }
            prop_assert_eq!(resp.shared.ks.used(), resp.shared.ks.recount());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Redis's inline limit: input held without a newline may not pass `INLINE_MAX`, and
    /// a line whose newline has arrived is served whatever its length, however the line
    /// was cut into pieces.
    #[test]
    fn inline_lines_are_limited_only_while_their_newline_is_missing(
        len in 0usize..3 * INLINE_MAX,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut wire = b"ECHO ".to_vec();
        wire.resize(wire.len() + len, b'x');
        wire.extend_from_slice(b"\r\n");
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len())).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        // Only the last prefix holds the newline.
        let too_big = cuts.iter().any(|&c| c < wire.len() && c > INLINE_MAX);
        let mut f = Frame::default();
        let mut outcome = None;
        for &cut in &cuts {
            match f.parse(&wire[..cut], 1 << 20) {
                Step::Incomplete => continue,
                step => {
                    outcome = Some(step);
                    break;
                }
            }
        }
        if too_big {
            prop_assert_eq!(outcome, Some(Step::Error(ProtoError::InlineTooBig)));
        } else {
            prop_assert_eq!(outcome, Some(Step::Complete(wire.len())));
            let args = f.view(&wire);
            prop_assert_eq!(args.len(), 2);
            prop_assert_eq!(args.get(1).len(), len);
        }
    }
}

#[test]
fn reply_checker_rejects_malformed_replies() {
    assert_eq!(
        count_replies(b"+OK\r\n:1\r\n$1\r\na\r\n*2\r\n$-1\r\n*0\r\n"),
        Ok(4)
    );
    assert!(count_replies(b"$3\r\nab\r\n").is_err());
    assert!(count_replies(b"*2\r\n:1\r\n").is_err());
    assert!(count_replies(b"x").is_err());
}

/// Run `cmd` on session `s` of `resp`; its reply.
fn run(resp: &Resp, s: &mut Session, cmd: &[&str]) -> Vec<u8> {
    let wire = encode(
        &cmd.iter()
            .map(|a| a.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    );
    let Step::Complete(_) = s.frame.parse(&wire, 1 << 16) else {
        panic!("{cmd:?} does not parse");
    };
    let mut out = Vec::new();
    resp.execute(
        &mut s.client,
        s.frame.view(&wire),
        &mut out,
        super::store::unix_ms(),
    );
    s.frame.reset();
    out
}

#[test]
fn incrbyfloat_reads_back_what_it_wrote() {
    let resp = Resp::builder().build().unwrap();
    let mut s = session(&resp);
    // Plain decimal past 64 characters, large and small, is read back by the next one.
    let big = format!("{}", 1e64f64);
    assert_eq!(big.len(), 65);
    let reply = |text: &str| format!("${}\r\n{text}\r\n", text.len()).into_bytes();
    assert_eq!(
        run(&resp, &mut s, &["INCRBYFLOAT", "k", "1e64"]),
        reply(&big)
    );
    assert_eq!(run(&resp, &mut s, &["INCRBYFLOAT", "k", "0"]), reply(&big));
    let max = format!("{}", f64::MAX);
    assert_eq!(run(&resp, &mut s, &["INCRBYFLOAT", "m", &max]), reply(&max));
    assert_eq!(run(&resp, &mut s, &["INCRBYFLOAT", "m", "-1"]), reply(&max));
    let tiny = format!("{}", 1e-63f64);
    assert_eq!(
        run(&resp, &mut s, &["INCRBYFLOAT", "t", "1e-63"]),
        reply(&tiny)
    );
    assert_eq!(run(&resp, &mut s, &["INCRBYFLOAT", "t", "0"]), reply(&tiny));
}
