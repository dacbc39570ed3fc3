# Sourced by the .ci scripts: Debian's own Rust toolchain (rustc-web, with the std sources of
# rust-web-src), which rebuilds std for targets rustup cannot fetch here (-Zbuild-std).

DEBIAN_RUST_PACKAGES=(rustc-web cargo-web rust-web-src)
DEB_CARGO=/usr/bin/cargo
BUILD_STD=(-Zbuild-std)

# Point cargo at Debian's toolchain for the rest of the script. rustup's proxies come first
# in PATH, so the toolchain is called by full path and named in RUSTC/RUSTDOC;
# RUSTC_BOOTSTRAP=1 lets that stable compiler take -Z flags. One target directory holds
# every such build: the host build scripts are shared, and nothing mixes with target/debug
# of the native toolchain. Line tables are all the debug information a failing test's
# backtrace needs; full debug information would make rebuilding std and linking the test
# programs much slower.
use_debian_rust() {
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_DIR="${RINGPORT_CROSS_TARGET_DIR:-$PWD/target/debian}"
    export CARGO_PROFILE_DEV_DEBUG=line-tables-only
}
