//! The `ringport` program: `ringport serve` and `ringport bench`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
