//! The Redis-protocol store, on every backend this machine has, in pool and inline modes:
//! the real clients (redis-cli, redis-benchmark, the Python `redis` package), atomicity
//! across I/O threads, protocol errors and garbage, expiry, memory limits, pub/sub, and
//! snapshots across restarts.
//!
//! On Windows (under Wine in CI) the tests run as everywhere, the server stopped by Ctrl+C
//! in its console where Unix sends SIGTERM; those that need the Redis clients skip where
//! they are not installed (they are looked up as `NAME.exe`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::resp::{encode, python_redis, redis_cli, run_program, server, tool, Client, Reply};
use common::{connect, wait_until, ChildGuard, Rng, Setup, Start};
use ringport::service::resp::EvictionPolicy;

every_backend!(
    redis_cli_command_families,
    redis_cli_pubsub_across_io_threads,
    subscribed_connection_replies_stay_in_order,
    python_client_compatibility,
    redis_benchmark_finishes_without_errors,
    concurrent_incr_ends_at_the_exact_sum,
    transactions_apply_as_one_step,
    protocol_errors_answer_and_close_only_that_connection,
    client_reply_off_and_skip_silence_replies_as_redis,
    replies_many_times_the_data_held_are_refused,
    inline_line_over_64k_with_its_newline_is_served,
    command_count_list_and_info_answer_as_redis,
    help_and_unknown_subcommands_answer_as_redis,
    hello_option_errors_answer_as_redis,
    garbage_and_mutated_input_never_stop_the_server,
    large_values_and_pipelines_arrive_in_pieces,
    unread_big_replies_stop_running_commands,
    commands_held_for_output_run_after_eof,
    long_pipeline_of_small_replies_read_late_is_answered,
    expired_keys_are_reclaimed_without_reads,
    rename_keeps_the_time_to_live,
    maxmemory_noeviction_refuses_writes,
    maxmemory_policies_evict,
    subscriber_that_stops_reading_is_dropped_and_closed,
    client_list_shows_every_connection,
    subscribers_are_exempt_from_the_idle_timeout,
    quit_leaves_the_channels_at_once,
    snapshot_round_trip_and_corrupt_file_refused,
    sigterm_under_write_load_loses_no_acknowledged_write,
);

/// Command scripts and what redis-cli prints for them (checked against redis-server 7.0,
/// except where this store differs on purpose: SELECT of a database other than 0, and
/// `HELLO 3`, which answers `-NOPROTO`).
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "strings",
        include_str!("resp_cli/strings.in"),
        include_str!("resp_cli/strings.out"),
    ),
    (
        "keys",
        include_str!("resp_cli/keys.in"),
        include_str!("resp_cli/keys.out"),
    ),
    (
        "lists",
        include_str!("resp_cli/lists.in"),
        include_str!("resp_cli/lists.out"),
    ),
    (
        "hashes",
        include_str!("resp_cli/hashes.in"),
        include_str!("resp_cli/hashes.out"),
    ),
    (
        "sets",
        include_str!("resp_cli/sets.in"),
        include_str!("resp_cli/sets.out"),
    ),
    (
        "zsets",
        include_str!("resp_cli/zsets.in"),
        include_str!("resp_cli/zsets.out"),
    ),
    (
        "server",
        include_str!("resp_cli/server.in"),
        include_str!("resp_cli/server.out"),
    ),
    (
        "introspection",
        include_str!("resp_cli/introspection.in"),
        include_str!("resp_cli/introspection.out"),
    ),
];

fn redis_cli_command_families(setup: Setup) {
    let Some(cli) = tool("redis-cli") else {
        return;
    };
    let (server, _) = server(setup, 1, |_| {});
    let addr = server.local_addr();
    for (name, script, expected) in FAMILIES {
        assert_eq!(redis_cli(&cli, addr, "FLUSHALL\n"), "OK\n");
        let got = redis_cli(&cli, addr, script);
        if got != *expected {
            for (i, (g, e)) in got.lines().zip(expected.lines()).enumerate() {
                assert_eq!(g, e, "{name}: line {} differs", i + 1);
            }
            assert_eq!(got, *expected, "{name}: output differs");
        }
    }
    // Arguments are passed through as given on the command line too.
    let mut c = Command::new(&cli);
    c.args(["-p", &addr.port().to_string(), "SET", "spaced key", "a\nb"]);
    let (status, out, _) = run_program(&mut c, b"");
    assert!(status.success());
    assert_eq!(out, "OK\n");
    let mut raw = Client::connect(addr);
    assert_eq!(raw.cmd(&["GET", "spaced key"]), Reply::bulk("a\nb"));
}

/// A redis-cli subscriber, its output read line by line.
struct CliSubscriber {
    _guard: ChildGuard,
    lines: BufReader<std::process::ChildStdout>,
}

impl CliSubscriber {
    fn start(cli: &PathBuf, addr: SocketAddr, args: &[&str]) -> CliSubscriber {
        let mut child = Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .start()
            .expect("start redis-cli");
        let lines = BufReader::new(child.stdout.take().unwrap());
        CliSubscriber {
            _guard: ChildGuard { child },
            lines,
        }
    }

    fn expect(&mut self, want: &[&str]) {
        for w in want {
            let mut line = String::new();
            self.lines.read_line(&mut line).expect("subscriber output");
            assert_eq!(line.trim_end_matches('\n'), *w);
        }
    }
}

fn redis_cli_pubsub_across_io_threads(setup: Setup) {
    let Some(cli) = tool("redis-cli") else {
        return;
    };
    let (server, _) = server(setup, 4, |_| {});
    let addr = server.local_addr();
    let mut sub = CliSubscriber::start(&cli, addr, &["SUBSCRIBE", "news"]);
    sub.expect(&["subscribe", "news", "1"]);
    let mut psub = CliSubscriber::start(&cli, addr, &["PSUBSCRIBE", "n*"]);
    psub.expect(&["psubscribe", "n*", "1"]);
    // Once the confirmation is out, a publish from any connection reaches the subscriber.
    let mut publisher = Client::connect(addr);
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hello"]), Reply::Int(2));
    assert_eq!(publisher.cmd(&["PUBLISH", "other", "x"]), Reply::Int(0));
    sub.expect(&["message", "news", "hello"]);
    psub.expect(&["pmessage", "n*", "news", "hello"]);
    // Many publishers, spread over the I/O threads: every message arrives once, and each
    // publisher's messages arrive in the order it published them.
    std::thread::scope(|s| {
        for p in 0..8 {
            s.spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..25 {
                    let msg = format!("{p}:{i}");
                    assert_eq!(c.cmd(&["PUBLISH", "news", &msg]), Reply::Int(2));
                }
            });
        }
    });
    let mut next = [0; 8];
    for _ in 0..200 {
        let mut l = String::new();
        for _ in 0..3 {
            l.clear();
            sub.lines.read_line(&mut l).unwrap();
        }
        let (p, i) = l.trim().split_once(':').expect("p:i");
        let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[p], "publisher {p} out of order");
        next[p] += 1;
    }
    assert_eq!(next, [25; 8]);
    let mut c = Client::connect(addr);
    assert_eq!(
        c.cmd(&["PUBSUB", "NUMSUB", "news"]),
        Reply::Array(Some(vec![Reply::bulk("news"), Reply::Int(1)]))
    );
    assert_eq!(c.cmd(&["PUBSUB", "NUMPAT"]), Reply::Int(1));
}

fn arr(items: &[Reply]) -> Reply {
    Reply::Array(Some(items.to_vec()))
}

fn subscribed_connection_replies_stay_in_order(setup: Setup) {
    let (server, _) = server(setup, 2, |_| {});
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    let mut publisher = Client::connect(addr);
    for round in 0..20 {
        // Pipelined: a reply before the subscription, the confirmation, replies after it.
        c.send(&encode(&[b"SET", b"k", b"v"]));
        c.send(&encode(&[b"SUBSCRIBE", b"a", b"b"]));
        c.send(&encode(&[b"PING"]));
        c.send(&encode(&[b"GET", b"k"]));
        assert_eq!(c.read(), Reply::ok(), "round {round}");
        assert_eq!(
            c.read(),
            arr(&[Reply::bulk("subscribe"), Reply::bulk("a"), Reply::Int(1)])
        );
        assert_eq!(
            c.read(),
            arr(&[Reply::bulk("subscribe"), Reply::bulk("b"), Reply::Int(2)])
        );
        assert_eq!(c.read(), arr(&[Reply::bulk("pong"), Reply::bulk("")]));
        match c.read() {
            Reply::Error(e) => assert!(e.starts_with("ERR Can't execute 'get'"), "{e}"),
            other => panic!("expected an error, got {other:?}"),
        }
        // EXEC refused there is answered as Redis does, with EXECABORT.
        c.send(&encode(&[b"EXEC"]));
        match c.read() {
            Reply::Error(e) => assert!(
                e.starts_with("EXECABORT Transaction discarded because of: Can't execute 'exec'"),
                "{e}"
            ),
            other => panic!("expected an error, got {other:?}"),
        }
        assert_eq!(publisher.cmd(&["PUBLISH", "b", "m"]), Reply::Int(1));
        assert_eq!(
            c.read(),
            arr(&[Reply::bulk("message"), Reply::bulk("b"), Reply::bulk("m")])
        );
        c.send(&encode(&[b"UNSUBSCRIBE"]));
        c.send(&encode(&[b"GET", b"k"]));
        assert_eq!(
            c.read(),
            arr(&[Reply::bulk("unsubscribe"), Reply::bulk("a"), Reply::Int(1)])
        );
        assert_eq!(
            c.read(),
            arr(&[Reply::bulk("unsubscribe"), Reply::bulk("b"), Reply::Int(0)])
        );
        assert_eq!(c.read(), Reply::bulk("v"));
        assert_eq!(publisher.cmd(&["PUBLISH", "b", "m"]), Reply::Int(0));
        assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    }
    // QUIT while subscribed: the reply, then the close.
    c.cmd(&["SUBSCRIBE", "x"]);
    c.send(&encode(&[b"QUIT"]));
    assert_eq!(c.read(), Reply::ok());
    assert!(c.read_to_end().is_empty());
    wait_until("the subscriber is gone", || {
        publisher.cmd(&["PUBLISH", "x", "m"]) == Reply::Int(0)
    });
}

const PYTHON_CHECKS: &str = r#"
import sys, time
import redis
# RESP2: this store answers HELLO 3 with -NOPROTO (redis-py 8 asks for RESP3 unless told).
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), decode_responses=True,
                socket_timeout=60, protocol=2)
assert r.ping()
assert r.set("a", "1") is True and r.get("a") == "1" and r.incr("a") == 2
p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"k{i}", i)
p.get("k5")
res = p.execute()
assert res[-1] == "5" and all(x is True for x in res[:-1]), res
t = r.pipeline(transaction=True)
t.incr("ctr"); t.incr("ctr"); t.lpush("l", "x"); t.get("ctr")
assert t.execute() == [1, 2, 1, "2"]
r.set("tmp", "v", px=1500)
assert 0 < r.pttl("tmp") <= 1500
deadline = time.time() + 60
while r.exists("tmp"):
    assert time.time() < deadline, "key did not expire"
    time.sleep(0.01)
r.set("tmp2", "v", ex=100)
assert r.ttl("tmp2") == 100 and r.persist("tmp2") and r.ttl("tmp2") == -1
assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
assert r.hgetall("h") == {"a": "1", "b": "2"} and r.hincrby("h", "a", 5) == 6
assert r.sadd("s", "x", "y") == 2 and r.smembers("s") == {"x", "y"}
assert r.zadd("z", {"a": 1, "b": 2.5}) == 2
assert r.zrange("z", 0, -1, withscores=True) == [("a", 1.0), ("b", 2.5)]
assert r.zpopmin("z") == [("a", 1.0)]
assert r.rpush("q", 1, 2, 3) == 3 and r.lpop("q", 2) == ["1", "2"]
try:
    r.lpush("a", "x")
    raise SystemExit("no WRONGTYPE")
except redis.ResponseError as e:
    assert str(e).startswith("WRONGTYPE"), e
ps = r.pubsub()
ps.subscribe("ch")
m = ps.get_message(timeout=30)
assert m and m["type"] == "subscribe", m
assert r.publish("ch", "hi") == 1
m = ps.get_message(timeout=30)
assert m and m["data"] == "hi", m
ps.psubscribe("c*")
m = ps.get_message(timeout=30)
assert m and m["type"] == "psubscribe", m
assert r.publish("ch", "two") == 2
got = sorted(ps.get_message(timeout=30)["type"] for _ in range(2))
assert got == ["message", "pmessage"], got
ps.close()
keys = set(r.scan_iter(match="k*", count=7))
assert keys == {f"k{i}" for i in range(100)}, len(keys)
assert r.dbsize() >= 100
info = r.info()
assert "used_memory" in info and info["connected_clients"] >= 1
r.client_setname("py")
assert r.client_getname() == "py"
assert r.delete("k1", "k2", "nosuch") == 2
print("ok")
"#;

fn python_client_compatibility(setup: Setup) {
    let Some(py) = python_redis() else {
        return;
    };
    let (server, _) = server(setup, 2, |_| {});
    let mut cmd = Command::new(py);
    cmd.args(["-c", PYTHON_CHECKS, &server.local_addr().port().to_string()]);
    let (status, out, err) = run_program(&mut cmd, b"");
    assert!(
        status.success() && out == "ok\n",
        "python: {status} {out} {err}"
    );
}

const BENCH_TESTS: &str =
    "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange,mset";

fn redis_benchmark_finishes_without_errors(setup: Setup) {
    let Some(bench) = tool("redis-benchmark") else {
        return;
    };
    let (server, _) = server(setup, 2, |_| {});
    let addr = server.local_addr();
    let n = 1000;
    for pipeline in ["1", "16"] {
        let mut cmd = Command::new(&bench);
        cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-c", "10", "-n", &n.to_string(), "-P", pipeline])
            .args(["-t", BENCH_TESTS, "--csv"]);
        let (status, out, err) = run_program(&mut cmd, b"");
        assert!(
            status.success(),
            "redis-benchmark -P {pipeline}: {status} {err}"
        );
        for bad in ["ERR", "WARN", "Error", "error"] {
            assert!(
                !out.contains(bad) && !err.contains(bad),
                "-P {pipeline}: {out}{err}"
            );
        }
        let tests: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').next())
            .map(|t| t.trim_matches('"'))
            .collect();
        for want in [
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "LPUSH",
            "RPUSH",
            "LPOP",
            "RPOP",
            "SADD",
            "HSET",
            "SPOP",
            "ZADD",
            "ZPOPMIN",
            "LRANGE_100 (first 100 elements)",
            "LRANGE_600 (first 600 elements)",
            "MSET (10 keys)",
        ] {
            assert!(tests.contains(&want), "-P {pipeline}: no {want} in {out}");
        }
    }
    // Every INCR landed on the one counter key (a pipelined run may send up to one
    // pipeline per client more than asked).
    let mut c = Client::connect(addr);
    let count: u64 = String::from_utf8_lossy(c.cmd(&["GET", "counter:__rand_int__"]).bytes())
        .parse()
        .unwrap();
    assert!((2 * n..=2 * n + 10 * 16).contains(&count), "{count} INCRs");
}

fn concurrent_incr_ends_at_the_exact_sum(setup: Setup) {
    let (server, _) = server(setup, 4, |_| {});
    let addr = server.local_addr();
    let (clients, rounds, batch) = (50, 20, 20);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(move || {
                let mut c = Client::connect(addr);
                let req = encode(&[b"INCR", b"counter"]).repeat(batch);
                for _ in 0..rounds {
                    c.send(&req);
                    for _ in 0..batch {
                        assert!(matches!(c.read(), Reply::Int(_)));
                    }
                }
            });
        }
    });
    let mut c = Client::connect(addr);
    let want = (clients * rounds * batch).to_string();
    assert_eq!(c.cmd(&["GET", "counter"]), Reply::bulk(&want));
    wait_until("clients closed", || server.stats().open == 1);
}

fn transactions_apply_as_one_step(setup: Setup) {
    let (server, _) = server(setup, 2, |_| {});
    let addr = server.local_addr();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let done = &done;
        s.spawn(move || {
            let mut c = Client::connect(addr);
            for i in 1..=300 {
                c.send(&encode(&[b"MULTI"]));
                c.send(&encode(&[b"INCR", b"a"]));
                c.send(&encode(&[b"INCR", b"b"]));
                c.send(&encode(&[b"EXEC"]));
                assert_eq!(c.read(), Reply::ok());
                assert_eq!(c.read(), Reply::Simple("QUEUED".into()));
                assert_eq!(c.read(), Reply::Simple("QUEUED".into()));
                assert_eq!(c.read(), arr(&[Reply::Int(i), Reply::Int(i)]));
            }
            done.store(true, Ordering::SeqCst);
        });
        for _ in 0..2 {
            s.spawn(move || {
                let mut c = Client::connect(addr);
                while !done.load(Ordering::SeqCst) {
                    let Reply::Array(Some(v)) = c.cmd(&["MGET", "a", "b"]) else {
                        panic!("MGET")
                    };
                    assert_eq!(v[0], v[1], "a transaction was seen half-applied");
                }
            });
        }
    });
    let mut c = Client::connect(addr);
    // A command refused while queuing aborts the whole transaction.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "a", "0"]), Reply::Simple("QUEUED".into()));
    assert!(matches!(c.cmd(&["SET"]), Reply::Error(_)));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(c.cmd(&["GET", "a"]), Reply::bulk("300"));
    // A command failing at run time does not undo or stop the others.
    c.cmd(&["MULTI"]);
    c.cmd(&["INCR", "a"]);
    c.cmd(&["LPUSH", "a", "x"]);
    c.cmd(&["INCR", "a"]);
    let Reply::Array(Some(v)) = c.cmd(&["EXEC"]) else {
        panic!("EXEC")
    };
    assert_eq!(v[0], Reply::Int(301));
    assert!(matches!(&v[1], Reply::Error(e) if e.starts_with("WRONGTYPE")));
    assert_eq!(v[2], Reply::Int(302));
}

/// Send `bytes` on a fresh connection, read until EOF.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("read until the server closes");
    got
}

fn protocol_errors_answer_and_close_only_that_connection(setup: Setup) {
    let (server, _) = server(setup, 1, |b| {
        b.proto_max_bulk_len(1024);
    });
    let addr = server.local_addr();
    let mut bystander = Client::connect(addr);
    assert_eq!(bystander.cmd(&["SET", "k", "v"]), Reply::ok());
    let long_inline = vec![b'a'; 70 * 1024];
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$-2\r\n", "invalid bulk length"),
        (b"*1\r\n$1025\r\n", "invalid bulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*3000000000\r\n", "invalid multibulk length"),
        (b"*1\r\n:5\r\n", "expected '$', got ':'"),
        (b"SET \"a\r\n", "unbalanced quotes in request"),
        (&long_inline, "too big inline request"),
    ];
    for (bytes, why) in cases {
        let got = exchange(addr, bytes);
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("-ERR Protocol error: {why}\r\n"),
            "for {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(20)])
        );
        assert_eq!(bystander.cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    // Requests before the bad one are answered first; typed commands work.
    let got = exchange(addr, b"PING\r\nECHO hi\r\n*1\r\n$x\r\nPING\r\n");
    assert_eq!(
        got,
        b"+PONG\r\n$2\r\nhi\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    // A bulk of exactly the limit is fine.
    let big = "x".repeat(1024);
    assert_eq!(bystander.cmd(&["SET", "big", &big]), Reply::ok());
    // APPEND and SETRANGE cannot make a string longer than the limit either.
    let too_long =
        Reply::Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)".into());
    assert_eq!(bystander.cmd(&["APPEND", "big", "y"]), too_long);
    assert_eq!(bystander.cmd(&["SETRANGE", "s", "1024", "y"]), too_long);
    assert_eq!(
        bystander.cmd(&["SETRANGE", "s", "1023", "y"]),
        Reply::Int(1024)
    );
    assert_eq!(server.stats().service_panics, 0);
}

/// CLIENT REPLY OFF silences every reply (its own included) until CLIENT REPLY ON or
/// RESET; SKIP silences its own and the next command's; SKIP while OFF changes nothing.
/// Each script's answer is what redis-server 7.0.15 sent for it, but two: inside MULTI,
/// CLIENT REPLY OFF silences the whole EXEC reply, and SKIP leaves the EXEC reply whole
/// (with the SKIP's OK) and silences the command after it, where Redis sends the array's
/// header with replies missing, a reply no client can parse.
fn client_reply_off_and_skip_silence_replies_as_redis(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let addr = server.local_addr();
    let cases: &[(&str, &str)] = &[
        (
            "CLIENT REPLY OFF|SET a 1|GET a|CLIENT REPLY ON|GET a",
            "+OK\r\n$1\r\n1\r\n",
        ),
        ("CLIENT REPLY SKIP|SET b 2|GET b", "$1\r\n2\r\n"),
        ("CLIENT REPLY bogus|PING", "-ERR syntax error\r\n+PONG\r\n"),
        ("CLIENT REPLY OFF|NOSUCH|RESET|PING", "+RESET\r\n+PONG\r\n"),
        ("CLIENT REPLY SKIP|CLIENT REPLY ON|PING", "+OK\r\n+PONG\r\n"),
        (
            "CLIENT REPLY OFF|CLIENT REPLY SKIP|PING|CLIENT REPLY ON|PING",
            "+OK\r\n+PONG\r\n",
        ),
        ("CLIENT REPLY SKIP|CLIENT REPLY SKIP|PING|PING", "+PONG\r\n"),
        (
            "CLIENT REPLY",
            "-ERR wrong number of arguments for 'client|reply' command\r\n",
        ),
        ("CLIENT REPLY SKIP|RESET|PING", "+PONG\r\n"),
        (
            "MULTI|CLIENT REPLY OFF|SET c 1|EXEC|PING|CLIENT REPLY ON|PING",
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n+OK\r\n+PONG\r\n",
        ),
        (
            "MULTI|CLIENT REPLY SKIP|SET d 1|EXEC|PING|PING",
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n+PONG\r\n",
        ),
    ];
    for (script, want) in cases {
        let mut bytes = Vec::new();
        for line in script.split('|').chain(["QUIT"]) {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            bytes.extend(encode(&args));
        }
        let got = exchange(addr, &bytes);
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("{want}+OK\r\n"),
            "{script}"
        );
    }
    // A protocol error under OFF closes the connection without a word, as in Redis.
    let mut bytes = encode(&[b"CLIENT", b"REPLY", b"OFF"]);
    bytes.extend_from_slice(b"*1\r\n$x\r\n");
    assert_eq!(String::from_utf8_lossy(&exchange(addr, &bytes)), "");
    let mut c = Client::connect(addr);
    assert_eq!(c.cmd(&["GET", "c"]), Reply::bulk("1"), "EXEC ran silenced");
}

/// A command that repeats what it asks for (MGET of one key many times, SRANDMEMBER with a
/// large negative count, COMMAND DOCS of one name many times) is refused once its reply
/// passes the data the store holds plus 16 times the request plus 4 MiB, instead of
/// building a reply thousands of times its request; the same commands asking for distinct
/// things, however big, are answered whole, and the connection goes on after a refusal.
fn replies_many_times_the_data_held_are_refused(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let mut c = Client::connect(server.local_addr());
    let too_large = Reply::Error(
        "ERR reply too large: more than the data held (a key, name or pick repeated many times)"
            .into(),
    );
    let values: Vec<String> = (0..8u8)
        .map(|i| ((b'a' + i) as char).to_string().repeat(1 << 20))
        .collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(c.cmd(&["SET", &format!("big{i}"), v]), Reply::ok());
    }
    // 8 MiB of distinct values: answered byte-exact.
    let mut mget = vec!["MGET"];
    let names: Vec<String> = (0..8).map(|i| format!("big{i}")).collect();
    mget.extend(names.iter().map(String::as_str));
    let want = Reply::Array(Some(values.iter().map(|v| Reply::bulk(v)).collect()));
    assert_eq!(c.cmd(&mget), want);
    // One of them 100 times: 100 MiB from a 1 KB request.
    let mut repeated = vec!["MGET"];
    repeated.extend(std::iter::repeat_n("big0", 100));
    assert_eq!(c.cmd(&repeated), too_large);
    let mut hash = vec!["HMGET", "h"];
    assert_eq!(c.cmd(&["HSET", "h", "f", &values[0]]), Reply::Int(1));
    hash.extend(std::iter::repeat_n("f", 100));
    assert_eq!(c.cmd(&hash), too_large);
    assert_eq!(c.cmd(&["SADD", "s", &values[1]]), Reply::Int(1));
    assert_eq!(c.cmd(&["SRANDMEMBER", "s", "-100"]), too_large);
    // Counts go down to -LONG_MAX, as in Redis; one past it is out of range.
    let max = i64::MAX.to_string();
    assert_eq!(c.cmd(&["SRANDMEMBER", "s", &format!("-{max}")]), too_large);
    assert_eq!(
        c.cmd(&["SRANDMEMBER", "s", &i64::MIN.to_string()]),
        Reply::Error("ERR value is out of range".into())
    );
    let picks = c.cmd(&["SRANDMEMBER", "s", "-3"]);
    assert_eq!(picks, Reply::Array(Some(vec![Reply::bulk(&values[1]); 3])));
    let mut docs = vec!["COMMAND", "DOCS"];
    docs.extend(std::iter::repeat_n("client", 20_000));
    assert_eq!(c.cmd(&docs), too_large);
    let mut info = vec!["COMMAND", "INFO"];
    info.extend(std::iter::repeat_n("get", 3));
    match c.cmd(&info) {
        Reply::Array(Some(items)) => assert_eq!(items.len(), 3),
        other => panic!("COMMAND INFO get get get: {other:?}"),
    }
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(c.cmd(&["GET", "big7"]), Reply::bulk(&values[7]));
}

/// redis-server 7.0 serves an inline line of any length whose newline has arrived (here
/// 70 KB, read 16 KiB at a time): only input held without a newline is limited to 64 KiB.
/// The store refused every line over 64 KiB.
fn inline_line_over_64k_with_its_newline_is_served(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let addr = server.local_addr();
    let value = "a".repeat(70 * 1024);
    let mut c = Client::connect(addr);
    c.send(format!("ECHO {value}\r\nPING\r\n").as_bytes());
    assert_eq!(c.read(), Reply::bulk(&value));
    assert_eq!(c.read(), Reply::Simple("PONG".into()));
    c.send(format!("SET k {value}\r\n").as_bytes());
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.cmd(&["STRLEN", "k"]), Reply::Int(70 * 1024));
    assert_eq!(server.stats().service_panics, 0);
}

fn strings(r: Reply) -> Vec<String> {
    let Reply::Array(Some(v)) = r else {
        panic!("expected an array, got {r:?}")
    };
    v.iter()
        .map(|b| String::from_utf8(b.bytes().to_vec()).unwrap())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v
}

fn status(words: &[&str]) -> Reply {
    Reply::Array(Some(
        words.iter().map(|w| Reply::Simple(w.to_string())).collect(),
    ))
}

fn err(msg: &str) -> Reply {
    Reply::Error(msg.into())
}

/// COMMAND's subcommands answered as redis-server 7.0 answers them, over the commands this
/// store has: COUNT counts them (it took arguments Redis refuses), LIST names every command
/// and subcommand and applies FILTERBY (it ignored its arguments), INFO answers a null bulk
/// for an unknown name (it answered a null array) and everything with no names, and the
/// flags and ACL categories are Redis's. Subcommands are checked before a transaction
/// queues them or a subscriber is refused them.
fn command_count_list_and_info_answer_as_redis(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let mut c = Client::connect(server.local_addr());
    let list = strings(c.cmd(&["COMMAND", "LIST"]));
    let top: Vec<&String> = list.iter().filter(|n| !n.contains('|')).collect();
    assert_eq!(c.cmd(&["COMMAND", "COUNT"]), Reply::Int(top.len() as i64));
    let Reply::Array(Some(all)) = c.cmd(&["COMMAND"]) else {
        panic!("COMMAND")
    };
    assert_eq!(all.len(), top.len());
    assert_eq!(c.cmd(&["COMMAND", "INFO"]), Reply::Array(Some(all)));
    for name in [
        "get",
        "client",
        "client|id",
        "config|get",
        "command|list",
        "pubsub|help",
    ] {
        assert!(list.iter().any(|n| n == name), "{name} not listed");
    }
    assert_eq!(
        sorted(list.clone())
            .windows(2)
            .filter(|w| w[0] == w[1])
            .count(),
        0
    );
    assert_eq!(
        c.cmd(&["COMMAND", "COUNT", "x"]),
        err("ERR wrong number of arguments for 'command|count' command")
    );

    // FILTERBY: no modules; categories named without `@`, in any case; patterns over the
    // full name, in any case.
    let filter = |c: &mut Client, kind: &str, arg: &str| {
        sorted(strings(c.cmd(&["COMMAND", "LIST", "FILTERBY", kind, arg])))
    };
    assert!(filter(&mut c, "MODULE", "x").is_empty());
    assert!(filter(&mut c, "ACLCAT", "nosuch").is_empty());
    assert!(filter(&mut c, "ACLCAT", "@pubsub").is_empty());
    assert_eq!(
        filter(&mut c, "aclcat", "PubSub"),
        [
            "psubscribe",
            "publish",
            "pubsub|channels",
            "pubsub|numpat",
            "pubsub|numsub",
            "punsubscribe",
            "subscribe",
            "unsubscribe"
        ]
    );
    assert_eq!(
        filter(&mut c, "ACLCAT", "transaction"),
        ["discard", "exec", "multi"]
    );
    assert_eq!(
        filter(&mut c, "PATTERN", "PUBSUB*"),
        [
            "pubsub",
            "pubsub|channels",
            "pubsub|help",
            "pubsub|numpat",
            "pubsub|numsub"
        ]
    );
    assert_eq!(
        filter(&mut c, "pattern", "*|help"),
        ["client|help", "command|help", "config|help", "pubsub|help"]
    );
    assert!(filter(&mut c, "PATTERN", "zzz*").is_empty());
    for bad in [
        &["x"][..],
        &["FILTERBY"],
        &["FILTERBY", "PATTERN"],
        &["FILTERBY", "FOO", "x"],
        &["FILTERBY", "PATTERN", "a", "b"],
        &["FILTERBY", "PATTERN", "a", "FILTERBY", "PATTERN", "b"],
    ] {
        let mut cmd = vec!["COMMAND", "LIST"];
        cmd.extend_from_slice(bad);
        assert_eq!(c.cmd(&cmd), err("ERR syntax error"), "{bad:?}");
    }

    // INFO: a null bulk for each unknown name (`a|b` names a subcommand), Redis's shape.
    let get = arr(&[
        Reply::bulk("get"),
        Reply::Int(2),
        status(&["readonly", "fast"]),
        Reply::Int(1),
        Reply::Int(1),
        Reply::Int(1),
        status(&["@read", "@string", "@fast"]),
        arr(&[]),
        arr(&[]),
        arr(&[]),
    ]);
    let client_id = arr(&[
        Reply::bulk("client|id"),
        Reply::Int(2),
        status(&["noscript", "loading", "stale"]),
        Reply::Int(0),
        Reply::Int(0),
        Reply::Int(0),
        status(&["@slow", "@connection"]),
        arr(&[]),
        arr(&[]),
        arr(&[]),
    ]);
    let null = Reply::Bulk(None);
    assert_eq!(
        c.cmd(&[
            "COMMAND",
            "INFO",
            "nosuch",
            "GET",
            "Client|Id",
            "client|nosuch",
            "get|x"
        ]),
        arr(&[null.clone(), get, client_id, null.clone(), null])
    );
    let Reply::Array(Some(info)) = c.cmd(&["COMMAND", "INFO", "client"]) else {
        panic!("COMMAND INFO client")
    };
    let Reply::Array(Some(client)) = &info[0] else {
        panic!("COMMAND INFO client")
    };
    assert_eq!(client[6], status(&["@slow"]));
    let Reply::Array(Some(subs)) = &client[9] else {
        panic!("client's subcommands")
    };
    assert!(subs.len() >= 8, "{subs:?}");
    // DOCS: unknown names are left out.
    assert_eq!(c.cmd(&["COMMAND", "DOCS", "nosuch"]), arr(&[]));
    assert_eq!(
        c.cmd(&["COMMAND", "DOCS", "nosuch", "client|id"]),
        arr(&[
            Reply::bulk("client|id"),
            arr(&[
                Reply::bulk("summary"),
                Reply::bulk("Returns the client ID for the current connection"),
                Reply::bulk("since"),
                Reply::bulk("5.0.0"),
                Reply::bulk("group"),
                Reply::bulk("connection"),
                Reply::bulk("complexity"),
                Reply::bulk("O(1)"),
            ])
        ])
    );

    // A wrong subcommand is refused when it is queued, and aborts the transaction.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["CLIENT", "ID", "x"]),
        err("ERR wrong number of arguments for 'client|id' command")
    );
    assert_eq!(
        c.cmd(&["CLIENT", "nosuch"]),
        err("ERR unknown subcommand 'nosuch'. Try CLIENT HELP.")
    );
    assert_eq!(c.cmd(&["CLIENT", "ID"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    // A subscriber is refused a subcommand by its full name.
    c.cmd(&["SUBSCRIBE", "ch"]);
    assert_eq!(
        c.cmd(&["CLIENT", "ID"]),
        err(
            "ERR Can't execute 'client|id': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
             QUIT / RESET are allowed in this context"
        )
    );
}

/// `... HELP` answers Redis's array of help lines (it was an unknown subcommand), for the
/// subcommands this store has; an unknown subcommand and a known one with the wrong number
/// of arguments are worded as Redis words them.
fn help_and_unknown_subcommands_answer_as_redis(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let mut c = Client::connect(server.local_addr());
    assert_eq!(
        c.cmd(&["pubsub", "help"]),
        status(&[
            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "HELP",
            "    Prints this help.",
        ])
    );
    assert_eq!(
        c.cmd(&["Config", "HELP"]),
        status(&[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "HELP",
            "    Prints this help.",
        ])
    );
    for (container, line) in [
        ("CLIENT", "    Return the ID of the current connection."),
        (
            "COMMAND",
            "    Return a list of all commands in this Redis server.",
        ),
    ] {
        let Reply::Array(Some(lines)) = c.cmd(&[container, "HELP"]) else {
            panic!("{container} HELP")
        };
        assert_eq!(
            lines[0],
            Reply::Simple(format!(
                "{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
            ))
        );
        assert!(lines.contains(&Reply::Simple(line.into())), "{lines:?}");
        assert_eq!(
            arr(&lines[lines.len() - 2..]),
            status(&["HELP", "    Prints this help."])
        );
    }
    let cases: &[(&[&str], &str)] = &[
        (
            &["PUBSUB", "x"],
            "ERR unknown subcommand 'x'. Try PUBSUB HELP.",
        ),
        (
            &["pubsub", "Nosuch", "a"],
            "ERR unknown subcommand 'Nosuch'. Try PUBSUB HELP.",
        ),
        (
            &["PUBSUB"],
            "ERR wrong number of arguments for 'pubsub' command",
        ),
        (
            &["PUBSUB", "HELP", "x"],
            "ERR wrong number of arguments for 'pubsub|help' command",
        ),
        (
            &["PUBSUB", "NUMPAT", "x"],
            "ERR wrong number of arguments for 'pubsub|numpat' command",
        ),
        (
            &["PUBSUB", "CHANNELS", "a", "b"],
            "ERR unknown subcommand or wrong number of arguments for 'CHANNELS'. Try PUBSUB HELP.",
        ),
        (
            &["CLIENT", "x"],
            "ERR unknown subcommand 'x'. Try CLIENT HELP.",
        ),
        (
            &["CLIENT", "HELP", "x"],
            "ERR wrong number of arguments for 'client|help' command",
        ),
        (
            &["CONFIG", "x"],
            "ERR unknown subcommand 'x'. Try CONFIG HELP.",
        ),
        (
            &["CONFIG", "HELP", "x"],
            "ERR wrong number of arguments for 'config|help' command",
        ),
        (
            &["CONFIG", "RESETSTAT", "x"],
            "ERR wrong number of arguments for 'config|resetstat' command",
        ),
        (
            &["CONFIG", "SET", "x"],
            "ERR wrong number of arguments for 'config|set' command",
        ),
        (
            &["CONFIG", "GET"],
            "ERR wrong number of arguments for 'config|get' command",
        ),
        (
            &["COMMAND", "x"],
            "ERR unknown subcommand 'x'. Try COMMAND HELP.",
        ),
        (
            &["COMMAND", "HELP", "x"],
            "ERR wrong number of arguments for 'command|help' command",
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(c.cmd(cmd), err(want), "{cmd:?}");
    }
}

/// HELLO's options read as redis-server 7.0 reads them: in order, each applied as it is
/// read, a wrong one answered `-ERR Syntax error in HELLO option 'x'` (it was `-ERR syntax
/// error`, and AUTH was refused outright); `HELLO 3` answers `-NOPROTO` only once its
/// options passed (it answered it before reading them); AUTH as a Redis without users
/// configured (the `default` user, any password).
fn hello_option_errors_answer_as_redis(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let mut c = Client::connect(server.local_addr());
    let noproto = "NOPROTO unsupported protocol version";
    let wrongpass = "WRONGPASS invalid username-password pair or user is disabled.";
    let bad_name = "ERR Client names cannot contain spaces, newlines or special characters.";
    let cases: &[(&[&str], &str)] = &[
        (&["HELLO", "4"], noproto),
        (&["HELLO", "1"], noproto),
        (&["HELLO", "4", "FOO"], noproto),
        (
            &["HELLO", "x"],
            "ERR Protocol version is not an integer or out of range",
        ),
        (
            &["HELLO", "2", "AUTH"],
            "ERR Syntax error in HELLO option 'AUTH'",
        ),
        (
            &["HELLO", "2", "AUTH", "u"],
            "ERR Syntax error in HELLO option 'AUTH'",
        ),
        (
            &["HELLO", "3", "AUTH"],
            "ERR Syntax error in HELLO option 'AUTH'",
        ),
        (
            &["HELLO", "2", "SETNAME"],
            "ERR Syntax error in HELLO option 'SETNAME'",
        ),
        (
            &["HELLO", "3", "setname"],
            "ERR Syntax error in HELLO option 'setname'",
        ),
        (
            &["HELLO", "2", "FOO"],
            "ERR Syntax error in HELLO option 'FOO'",
        ),
        (
            &["HELLO", "3", "FOO"],
            "ERR Syntax error in HELLO option 'FOO'",
        ),
        (&["HELLO", "2", "AUTH", "u", "p"], wrongpass),
        (&["HELLO", "3", "AUTH", "Default", "p"], wrongpass),
        (&["HELLO", "2", "auth", "u", "p", "c"], wrongpass),
        (
            &["HELLO", "2", "AUTH", "u", "p", "SETNAME", "a b"],
            wrongpass,
        ),
        (
            &["HELLO", "2", "SETNAME", "a b", "AUTH", "u", "p"],
            bad_name,
        ),
        (&["HELLO", "3", "SETNAME", "a b"], bad_name),
        (&["HELLO", "3"], noproto),
        (
            &["HELLO", "3", "AUTH", "default", "p", "SETNAME", "n"],
            noproto,
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(c.cmd(cmd), err(want), "{cmd:?}");
    }
    // Nothing above set a name: HELLO 3 applies nothing.
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::Bulk(None));
    // An option read before a wrong one is applied, as in Redis.
    assert_eq!(
        c.cmd(&["HELLO", "2", "SETNAME", "first", "FOO"]),
        err("ERR Syntax error in HELLO option 'FOO'")
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("first"));
    assert_eq!(
        c.cmd(&["HELLO", "2", "SETNAME", "a", "b"]),
        err("ERR Syntax error in HELLO option 'b'")
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("a"));
    let Reply::Array(Some(hello)) =
        c.cmd(&["HELLO", "2", "AUTH", "default", "any", "SETNAME", "second"])
    else {
        panic!("HELLO 2")
    };
    assert_eq!(hello[4..6], [Reply::bulk("proto"), Reply::Int(2)]);
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("second"));
}

fn garbage_and_mutated_input_never_stop_the_server(setup: Setup) {
    let (server, _) = server(setup, 2, |b| {
        b.proto_max_bulk_len(4096);
    });
    let addr = server.local_addr();
    let valid: Vec<u8> = [
        encode(&[b"SET", b"a", b"1"]),
        encode(&[b"ZADD", b"z", b"1", b"m"]),
        encode(&[b"LPUSH", b"l", b"x", b"y"]),
        encode(&[b"HSET", b"h", b"f", b"v"]),
        encode(&[b"MULTI"]),
        encode(&[b"INCR", b"a"]),
        encode(&[b"EXEC"]),
        b"GET a\r\n".to_vec(),
    ]
    .concat();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let valid = &valid;
            s.spawn(move || {
                let mut rng = Rng::new(t + 1);
                for i in 0..40 {
                    let input = if i % 2 == 0 {
                        let n = rng.range(1, 2000);
                        rng.bytes(n)
                    } else {
                        let mut v = valid.clone();
                        for _ in 0..rng.range(1, 4) {
                            let at = rng.range(0, v.len() - 1);
                            v[at] = rng.next_u64() as u8;
                        }
                        v
                    };
                    let mut c = connect(addr);
                    let _ = c.write_all(&input);
                    let _ = c.shutdown(Shutdown::Write);
                    let mut sink = Vec::new();
                    c.read_to_end(&mut sink)
                        .expect("the server closes the connection");
                }
            });
        }
    });
    let mut c = Client::connect(addr);
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(server.stats().service_panics, 0);
    wait_until("all garbage connections closed", || {
        server.stats().open == 1
    });
}

fn large_values_and_pipelines_arrive_in_pieces(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let addr = server.local_addr();
    let mut rng = Rng::new(9);
    let value = rng.bytes(3 << 20);
    let mut req = encode(&[b"SET", b"big", &value]);
    for i in 0..2000 {
        req.extend_from_slice(&encode(&[b"RPUSH", b"list", format!("{i}").as_bytes()]));
    }
    req.extend_from_slice(&encode(&[b"GET", b"big"]));
    let mut c = Client::connect(addr);
    let mut w = c.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut off = 0;
        while off < req.len() {
            let n = rng.range(1, 70_000).min(req.len() - off);
            w.write_all(&req[off..off + n]).unwrap();
            off += n;
        }
    });
    assert_eq!(c.read(), Reply::ok());
    for i in 0..2000 {
        assert_eq!(c.read(), Reply::Int(i + 1));
    }
    assert!(c.read().bytes() == value.as_slice());
    sender.join().unwrap();
    assert_eq!(c.cmd(&["LINDEX", "list", "1999"]), Reply::bulk("1999"));
}

/// A client that pipelines 600 GETs of a 1 MiB value (13 KB of input) and never reads
/// them: the server stops running its commands once about 1 MiB of replies waits, instead
/// of building all 600 MiB.
fn unread_big_replies_stop_running_commands(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    assert_eq!(c.cmd(&["SET", "big", &"x".repeat(1 << 20)]), Reply::ok());
    let before = info_field(&mut c, "total_commands_processed");
    let mut silent = connect(addr);
    silent
        .write_all(&encode(&[b"GET", b"big"]).repeat(600))
        .unwrap();
    // The first GETs run (their replies fill the socket buffers); then the rest wait.
    wait_until("the first GETs to run", || {
        info_field(&mut c, "total_commands_processed") - before >= 3
    });
    let ran = info_field(&mut c, "total_commands_processed") - before;
    // INFO itself counts too; what the socket buffers took in bounds the rest.
    assert!(
        ran < 100,
        "{ran} commands ran for a client that reads nothing"
    );
    drop(silent);
}

/// Commands held back while their replies wait still run, in order, after the peer's EOF,
/// and every reply arrives whole before the close.
fn commands_held_for_output_run_after_eof(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    let mut rng = Rng::new(21);
    let value = rng.bytes(1 << 20);
    let mut req = encode(&[b"SET", b"big", &value]);
    for _ in 0..40 {
        req.extend_from_slice(&encode(&[b"GET", b"big"]));
        req.extend_from_slice(&encode(&[b"INCR", b"n"]));
    }
    // A SUBSCRIBE among the held commands: its reply, and the ones after it, still come.
    req.extend_from_slice(&encode(&[b"SUBSCRIBE", b"ch"]));
    req.extend_from_slice(&encode(&[b"PING"]));
    c.send(&req);
    c.writer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.read(), Reply::ok());
    for i in 0..40 {
        assert!(c.read().bytes() == value.as_slice(), "GET {i}");
        assert_eq!(c.read(), Reply::Int(i + 1));
    }
    assert_eq!(
        c.read(),
        Reply::Array(Some(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("ch"),
            Reply::Int(1)
        ]))
    );
    assert_eq!(
        c.read(),
        Reply::Array(Some(vec![Reply::bulk("pong"), Reply::bulk("")]))
    );
    assert!(c.read_to_end().is_empty());
}

/// 400,000 pipelined GETs of a small value (8.8 MB), their replies read only once over
/// 2.5 MB was sent: small replies do not hold commands back (their output pauses reading
/// as any output does), so the input never piles up to the limit (2 MiB here) and every
/// reply comes.
fn long_pipeline_of_small_replies_read_late_is_answered(setup: Setup) {
    let (server, _) = server(setup, 1, |b| {
        b.proto_max_bulk_len(1 << 20);
    });
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    let n = 400_000;
    let req = encode(&[b"GET", b"k"]).repeat(n);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut w = c.writer.try_clone().unwrap();
    let progress = sent.clone();
    let writer = std::thread::spawn(move || {
        for chunk in req.chunks(64 * 1024) {
            w.write_all(chunk).unwrap();
            progress.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    wait_until("2.5 MB sent", || sent.load(Ordering::Relaxed) >= 2_500_000);
    for i in 0..n {
        assert_eq!(c.read(), Reply::bulk("v"), "reply {i}");
    }
    writer.join().unwrap();
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

/// RENAME moves the key's time to live with it (it used to make the key permanent).
fn rename_keeps_the_time_to_live(setup: Setup) {
    let (server, _) = server(setup, 1, |_| {});
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.cmd(&["SET", "a", "v", "EX", "1000"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "b", "old"]), Reply::ok());
    assert_eq!(c.cmd(&["RENAME", "a", "b"]), Reply::ok());
    let ttl = c.cmd(&["TTL", "b"]).int();
    assert!((990..=1000).contains(&ttl), "TTL after RENAME: {ttl}");
    assert_eq!(c.cmd(&["RENAME", "b", "c"]), Reply::ok());
    let ttl = c.cmd(&["TTL", "c"]).int();
    assert!((990..=1000).contains(&ttl), "TTL after RENAME: {ttl}");
    // A short one still expires under its new name.
    assert_eq!(c.cmd(&["SET", "d", "v", "PX", "50"]), Reply::ok());
    assert_eq!(c.cmd(&["RENAME", "d", "e"]), Reply::ok());
    wait_until("the renamed key to expire", || {
        c.cmd(&["EXISTS", "e"]) == Reply::Int(0)
    });
    assert_eq!(c.cmd(&["TTL", "e"]), Reply::Int(-2));
}

fn info_field(c: &mut Client, field: &str) -> u64 {
    let info = c.cmd(&["INFO"]);
    let text = String::from_utf8_lossy(info.bytes()).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO"))
}

fn expired_keys_are_reclaimed_without_reads(setup: Setup) {
    let (server, resp) = server(setup, 1, |_| {});
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.cmd(&["SET", "keep", "v"]), Reply::ok());
    let base = resp.store().used_memory();
    let n = 5000;
    let mut req = Vec::new();
    for i in 0..n {
        let k = format!("tmp:{i}");
        // Long enough to be measured before it passes, on a slow machine too.
        req.extend_from_slice(&encode(&[
            b"SET",
            k.as_bytes(),
            &[b'x'; 100],
            b"PX",
            b"3000",
        ]));
    }
    c.send(&req);
    for _ in 0..n {
        assert_eq!(c.read(), Reply::ok());
    }
    assert!(resp.store().used_memory() > base + n * 100);
    // Nobody reads them again: active expiry must bring the memory back.
    wait_until("expired keys removed", || resp.store().len() == 1);
    assert_eq!(resp.store().used_memory(), base);
    assert_eq!(info_field(&mut c, "expired_keys"), n);
    assert_eq!(c.cmd(&["GET", "keep"]), Reply::bulk("v"));
}

fn maxmemory_noeviction_refuses_writes(setup: Setup) {
    let (server, _) = server(setup, 1, |b| {
        b.maxmemory(200_000);
    });
    let mut c = Client::connect(server.local_addr());
    let value = "v".repeat(1000);
    let mut written = 0;
    let refused = loop {
        match c.cmd(&["SET", &format!("k{written}"), &value]) {
            Reply::Simple(s) if s == "OK" => written += 1,
            Reply::Error(e) => break e,
            other => panic!("unexpected {other:?}"),
        }
        assert!(written < 1000, "never refused");
    };
    assert_eq!(
        refused,
        "OOM command not allowed when used memory > 'maxmemory'."
    );
    assert!(written > 100);
    // Reads and deletes still work; no key was evicted.
    assert_eq!(c.cmd(&["GET", "k0"]), Reply::bulk(&value));
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(written));
    assert_eq!(c.cmd(&["DEL", "k0", "k1", "k2"]), Reply::Int(3));
    assert_eq!(c.cmd(&["SET", "again", "x"]), Reply::ok());
    assert_eq!(info_field(&mut c, "evicted_keys"), 0);
}

fn maxmemory_policies_evict(setup: Setup) {
    for policy in [EvictionPolicy::AllKeysLru, EvictionPolicy::AllKeysRandom] {
        let (server, resp) = server(setup, 1, |b| {
            b.maxmemory(200_000).maxmemory_policy(policy);
        });
        let mut c = Client::connect(server.local_addr());
        let value = "v".repeat(1000);
        for i in 0..2000 {
            assert_eq!(c.cmd(&["SET", &format!("k{i}"), &value]), Reply::ok());
        }
        // Eviction runs before each write: at most one write over the limit.
        assert!(resp.store().used_memory() <= 200_000 + 2048);
        let Reply::Int(left) = c.cmd(&["DBSIZE"]) else {
            panic!("DBSIZE")
        };
        assert!(left > 50 && left < 2000, "{policy:?}: {left} keys left");
        assert_eq!(info_field(&mut c, "evicted_keys"), 2000 - left as u64);
    }
    // volatile-lru with no key that has a TTL has nothing to evict.
    let (server, _) = server(setup, 1, |b| {
        b.maxmemory(50_000)
            .maxmemory_policy(EvictionPolicy::VolatileLru);
    });
    let mut c = Client::connect(server.local_addr());
    let value = "v".repeat(1000);
    let mut i = 0;
    let refused = loop {
        match c.cmd(&["SET", &format!("k{i}"), &value]) {
            Reply::Error(e) => break e,
            _ => i += 1,
        }
        assert!(i < 1000, "never refused");
    };
    assert!(refused.starts_with("OOM"), "{refused}");
    // Keys with a TTL can be evicted: writing them past the limit succeeds.
    assert_eq!(c.cmd(&["FLUSHALL"]), Reply::ok());
    for j in 0..200 {
        let k = format!("t{j}");
        assert_eq!(
            c.cmd(&["SET", &k, &value, "EX", "1000"]),
            Reply::ok(),
            "{j}"
        );
    }
    assert!(info_field(&mut c, "evicted_keys") > 100);
}

fn subscriber_that_stops_reading_is_dropped_and_closed(setup: Setup) {
    let resp = ringport::service::resp::Resp::builder().build().unwrap();
    let mut b = setup.builder();
    b.io_threads(2)
        .output_limit(64 * 1024)
        .send_timeout(Some(Duration::from_millis(500)));
    let server = b.build(resp).unwrap();
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    socket2::SockRef::from(&sub.writer)
        .set_recv_buffer_size(4096)
        .unwrap();
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "flood"]),
        arr(&[
            Reply::bulk("subscribe"),
            Reply::bulk("flood"),
            Reply::Int(1)
        ])
    );
    // The subscriber reads nothing more.
    let mut publisher = Client::connect(addr);
    let msg = "m".repeat(16 * 1024);
    let mut sent = 0u64;
    loop {
        match publisher.cmd(&["PUBLISH", "flood", &msg]) {
            Reply::Int(1) => sent += 1,
            Reply::Int(0) => break,
            other => panic!("unexpected {other:?}"),
        }
        assert!(sent < 10_000, "the subscriber was never dropped");
    }

    // Dropped from the channel, then closed by the send timeout.
    assert_eq!(publisher.cmd(&["PUBLISH", "flood", "x"]), Reply::Int(0));
    wait_until("the subscriber is closed", || server.stats().open == 1);

    assert_eq!(publisher.cmd(&["PING"]), Reply::Simple("PONG".into()));
    drop(sub);
}

/// The lines of a CLIENT LIST reply, each as its fields.
fn client_list(c: &mut Client, args: &[&str]) -> Vec<std::collections::HashMap<String, String>> {
    let text = String::from_utf8(c.cmd(args).bytes().to_vec()).unwrap();
    text.lines()
        .map(|l| {
            l.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn client_list_shows_every_connection(setup: Setup) {
    let (server, _) = server(setup, 2, |_| {});
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    let mut s = Client::connect(addr);
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alpha"]), Reply::ok());
    let ids: Vec<String> = [&mut a, &mut b, &mut s]
        .into_iter()
        .map(|c| c.cmd(&["CLIENT", "ID"]).int().to_string())
        .collect();
    s.cmd(&["SUBSCRIBE", "ch", "other"]);
    let all = client_list(&mut b, &["CLIENT", "LIST"]);
    let mut listed: Vec<&str> = all.iter().map(|l| l["id"].as_str()).collect();
    listed.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(listed, want, "{all:?}");
    let by_id = |id: &str| all.iter().find(|l| l["id"] == id).unwrap();
    let (la, lb, ls) = (by_id(&ids[0]), by_id(&ids[1]), by_id(&ids[2]));
    assert_eq!((la["name"].as_str(), la["flags"].as_str()), ("alpha", "N"));
    assert_eq!(la["cmd"], "client");
    assert_eq!(lb["addr"], b.writer.local_addr().unwrap().to_string());
    assert_eq!(lb["laddr"], addr.to_string());
    assert_eq!((ls["flags"].as_str(), ls["sub"].as_str()), ("P", "2"));
    assert_eq!(ls["cmd"], "subscribe");
    // Filters: by type, by id (unknown ids list nothing).
    let pubsub = client_list(&mut b, &["CLIENT", "LIST", "TYPE", "pubsub"]);
    assert_eq!(pubsub.len(), 1);
    assert_eq!(pubsub[0]["id"], ids[2]);
    assert_eq!(
        client_list(&mut b, &["CLIENT", "LIST", "TYPE", "normal"]).len(),
        2
    );
    let some = client_list(&mut b, &["CLIENT", "LIST", "ID", &ids[0], "999999"]);
    assert_eq!(some.len(), 1);
    assert_eq!(some[0]["name"], "alpha");
    assert_eq!(
        b.cmd(&["CLIENT", "LIST", "ID", "x"]),
        Reply::Error("ERR Invalid client ID".into())
    );
    assert_eq!(
        b.cmd(&["CLIENT", "LIST", "TYPE", "x"]),
        Reply::Error("ERR Unknown client type 'x'".into())
    );
    // A connection that closes leaves the list.
    drop(a);
    wait_until("the closed connection leaves the list", || {
        client_list(&mut b, &["CLIENT", "LIST"]).len() == 2
    });
}

fn subscribers_are_exempt_from_the_idle_timeout(setup: Setup) {
    let resp = ringport::service::resp::Resp::builder().build().unwrap();
    let timeout = Duration::from_millis(300);
    let mut b = setup.builder();
    b.io_threads(2).idle_timeout(Some(timeout));
    let server = b.build(resp).unwrap();
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    sub.cmd(&["SUBSCRIBE", "ch"]);
    let mut plain = Client::connect(addr);
    assert_eq!(plain.cmd(&["PING"]), Reply::Simple("PONG".into()));
    // The plain connection that sends nothing is closed; the subscriber is not (an
    // absence of a close is what is checked: it waits out several timeouts).
    assert!(plain.read_to_end().is_empty());
    std::thread::sleep(timeout * 4);
    let mut publisher = Client::connect(addr);
    assert_eq!(publisher.cmd(&["PUBLISH", "ch", "m"]), Reply::Int(1));
    assert_eq!(
        sub.read(),
        arr(&[Reply::bulk("message"), Reply::bulk("ch"), Reply::bulk("m")])
    );
    // Unsubscribed, it is a plain connection again: closed once idle.
    sub.send(&encode(&[b"UNSUBSCRIBE"]));
    sub.read();
    assert!(sub.read_to_end().is_empty());
    drop(publisher);
    wait_until("every connection closed", || server.stats().open == 0);
}

fn quit_leaves_the_channels_at_once(setup: Setup) {
    let (server, _) = server(setup, 2, |_| {});
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    sub.cmd(&["SUBSCRIBE", "x"]);
    let mut other = Client::connect(addr);
    assert_eq!(other.cmd(&["PUBLISH", "x", "before"]), Reply::Int(1));
    assert_eq!(
        sub.read(),
        arr(&[
            Reply::bulk("message"),
            Reply::bulk("x"),
            Reply::bulk("before")
        ])
    );
    assert_eq!(sub.cmd(&["QUIT"]), Reply::ok());
    // The subscriber keeps its socket open: it is gone for PUBLISH and the counts all
    // the same, without waiting for the close to complete.
    assert_eq!(
        other.cmd(&["PUBSUB", "NUMSUB", "x"]),
        arr(&[Reply::bulk("x"), Reply::Int(0)])
    );
    assert_eq!(other.cmd(&["PUBLISH", "x", "after"]), Reply::Int(0));
    assert_eq!(info_field(&mut other, "connected_clients"), 1);
    drop(sub);
}

/// Tests that stop the server with SIGTERM (Ctrl+C in its console on Windows).
mod signals {
    use super::*;
    use common::resp::read_reply;
    use common::{serve_process, stop_signal, wait_exit};
    use std::sync::atomic::AtomicU64;

    use crate::common::TempDir;

    fn serve_args<'a>(setup: &Setup, workers: &'a str, snap: &'a str) -> Vec<&'a str> {
        vec![
            "--service",
            "resp",
            "--backend",
            setup.backend_arg(),
            "--workers",
            workers,
            "--snapshot",
            snap,
        ]
    }

    fn stop(mut p: common::ServeProcess) -> String {
        stop_signal(&p.guard.child);
        let status = wait_exit(&mut p.guard.child);
        let mut err = String::new();
        p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "exit {status}: {err}");
        err
    }

    pub fn snapshot_round_trip_and_corrupt_file_refused(setup: Setup) {
        let dir = TempDir::new("snap");
        let snap = dir.0.join("dump.rps");
        let snap_s = snap.to_str().unwrap();
        let workers = setup.workers.to_string();
        let p = serve_process(&serve_args(&setup, &workers, snap_s)).expect("start");
        let mut c = Client::connect(p.addr);
        c.cmd(&["SET", "s", "v"]);
        c.cmd(&["SET", "ttl", "v", "EX", "1000"]);
        c.cmd(&["SET", "gone", "v", "PX", "1"]);
        c.cmd(&["RPUSH", "l", "a", "b"]);
        c.cmd(&["HSET", "h", "f", "v"]);
        c.cmd(&["SADD", "set", "m"]);
        c.cmd(&["ZADD", "z", "2.5", "m"]);
        assert_eq!(c.cmd(&["SAVE"]), Reply::ok());
        assert_eq!(
            c.cmd(&["BGSAVE"]),
            Reply::Simple("Background saving started".into())
        );
        c.cmd(&["SET", "after", "bgsave"]);
        drop(c);
        let err = stop(p);
        assert!(err.contains("snapshot written"), "{err}");
        let p = serve_process(&serve_args(&setup, &workers, snap_s)).expect("restart");
        let mut c = Client::connect(p.addr);
        assert_eq!(c.cmd(&["GET", "s"]), Reply::bulk("v"));
        assert_eq!(c.cmd(&["GET", "after"]), Reply::bulk("bgsave"));
        assert!((900..=1000).contains(&c.cmd(&["TTL", "ttl"]).int()));
        assert_eq!(c.cmd(&["EXISTS", "gone"]), Reply::Int(0));
        assert_eq!(
            c.cmd(&["LRANGE", "l", "0", "-1"]),
            arr(&[Reply::bulk("a"), Reply::bulk("b")])
        );
        assert_eq!(c.cmd(&["HGET", "h", "f"]), Reply::bulk("v"));
        assert_eq!(c.cmd(&["SISMEMBER", "set", "m"]), Reply::Int(1));
        assert_eq!(c.cmd(&["ZSCORE", "z", "m"]), Reply::bulk("2.5"));
        assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(7));
        assert!(c.cmd(&["LASTSAVE"]).int() > 0);
        drop(c);
        stop(p);
        // A damaged file is refused at start, with one line saying why.
        let good = std::fs::read(&snap).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        for (what, bytes) in [
            ("flipped", flipped),
            ("truncated", good[..good.len() - 7].to_vec()),
        ] {
            std::fs::write(&snap, &bytes).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringport"));
            cmd.args(["serve", "--listen", "127.0.0.1:0"])
                .args(serve_args(&setup, &workers, snap_s));
            let (status, out, err) = run_program(&mut cmd, b"");
            assert!(!status.success(), "{what}: started anyway");
            assert!(out.is_empty(), "{what}: served: {out}");
            assert_eq!(err.lines().count(), 1, "{what}: {err}");
            assert!(
                err.contains("refused") && err.contains("dump.rps"),
                "{what}: {err}"
            );
            // The file is left as it was.
            assert_eq!(std::fs::read(&snap).unwrap(), bytes);
        }
    }

    pub fn sigterm_under_write_load_loses_no_acknowledged_write(setup: Setup) {
        let dir = TempDir::new("sigterm");
        let snap = dir.0.join("dump.rps");
        let snap_s = snap.to_str().unwrap();
        let workers = setup.workers.to_string();
        let p = serve_process(&serve_args(&setup, &workers, snap_s)).expect("start");
        let addr = p.addr;
        let acked = AtomicU64::new(0);
        let writers = 8;
        let last: Vec<i64> = std::thread::scope(|s| {
            let acked = &acked;
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    s.spawn(move || {
                        let mut c = Client::connect(addr);
                        let mut last = -1i64;
                        for j in 0.. {
                            let k = format!("w{w}:{j}");
                            if c.writer
                                .write_all(&encode(&[b"SET", k.as_bytes(), b"v"]))
                                .is_err()
                            {
                                break;
                            }
                            match read_reply(&mut c.reader) {
                                Ok(Reply::Simple(ok)) if ok == "OK" => last = j,
                                _ => break,
                            }
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        last
                    })
                })
                .collect();
            wait_until("writes acknowledged", || {
                acked.load(Ordering::Relaxed) >= 2000
            });
            stop_signal(&p.guard.child);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let err = stop_after_signal(p);
        assert!(err.contains("snapshot written"), "{err}");
        let p = serve_process(&serve_args(&setup, &workers, snap_s)).expect("restart");
        let mut c = Client::connect(p.addr);
        for (w, &last) in last.iter().enumerate() {
            assert!(last >= 0, "writer {w} got nothing acknowledged");
            for j in 0..=last {
                assert_eq!(
                    c.cmd(&["EXISTS", &format!("w{w}:{j}")]),
                    Reply::Int(1),
                    "acknowledged write w{w}:{j} lost"
                );
            }
        }
        drop(c);
        stop(p);
    }

    fn stop_after_signal(mut p: common::ServeProcess) -> String {
        let status = wait_exit(&mut p.guard.child);
        let mut err = String::new();
        p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "exit {status}: {err}");
        err
    }
}

use signals::{
    sigterm_under_write_load_loses_no_acknowledged_write,
    snapshot_round_trip_and_corrupt_file_refused,
};

/// A snapshot that could not be written is found at start (Redis checks its `dir` too), not
/// at the first SAVE or at shutdown, when the data would be lost.
#[test]
fn a_snapshot_path_that_cannot_be_written_is_refused_at_start() {
    let dir = common::TempDir::new("resp-snapshot-dir");
    let path = dir.0.join("missing").join("dump.rps");
    let mut b = ringport::service::resp::Resp::builder();
    b.snapshot(&path);
    let Err(e) = b.build() else {
        panic!("a snapshot in a missing directory is refused");
    };
    assert!(
        e.to_string().contains(&format!(
            "the snapshot cannot be written at {}",
            path.display()
        )),
        "{e}"
    );
    // Where it can be written, nothing is left behind by the check.
    let ok = dir.0.join("dump.rps");
    b.snapshot(&ok);
    drop(b.build().unwrap());
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}
