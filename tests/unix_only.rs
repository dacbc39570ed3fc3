//! What the Windows run does not build, said in its output: `tests/ops.rs` and
//! `tests/haproxy.rs` exist on Unix only (systemd socket activation, `promtool`, HAProxy, and
//! restarts driven by SIGTERM are Unix facilities; the PROXY protocol, metrics and log
//! parsers they also cover have unit tests that run everywhere), and `tests/resp.rs` drives
//! the store with redis-cli, redis-benchmark and Python's `redis`, programs of the test
//! host's Linux side (the store's unit and property tests run everywhere).

#[cfg(not(unix))]
mod common;

#[cfg(not(unix))]
#[test]
fn operations_tests_are_unix_only() {
    common::skip(
        "tests/ops.rs and tests/haproxy.rs: socket activation, promtool, HAProxy and \
         SIGTERM-driven restarts exist only on Unix",
    );
    common::skip(
        "tests/resp.rs: redis-cli, redis-benchmark and Python's redis run on the Linux side; \
         a Windows test process cannot start them",
    );
}
