//! What the Windows run does not build, said in its output: `tests/ops.rs` and
//! `tests/haproxy.rs` exist on Unix only (systemd socket activation, `promtool`, HAProxy, and
//! restarts driven by SIGTERM are Unix facilities; the PROXY protocol, metrics and log
//! parsers they also cover have unit tests that run everywhere).

#[cfg(not(unix))]
mod common;

#[cfg(not(unix))]
#[test]
fn operations_tests_are_unix_only() {
    common::skip(
        "tests/ops.rs and tests/haproxy.rs: socket activation, promtool, HAProxy and \
         SIGTERM-driven restarts exist only on Unix",
    );
}
