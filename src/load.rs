//! The echo load generator behind `ringport bench`.

/// Options of `ringport bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Address of the echo server to load.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: std::net::SocketAddr,
}

/// Run `ringport bench` and return the process exit code.
pub fn main(args: &BenchArgs) -> std::process::ExitCode {
    eprintln!("ringport bench: not available yet (addr {})", args.addr);
    std::process::ExitCode::from(2)
}
