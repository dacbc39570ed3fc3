//! The `ringport` program: `ringport serve` and `ringport bench`.

mod cli;
mod load;
mod log;
mod nofile;
mod units;

fn main() -> std::process::ExitCode {
    cli::main()
}
