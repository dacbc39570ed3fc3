//! The `ringport` program: `ringport serve` and `ringport bench`.

mod cli;
mod load;

fn main() -> std::process::ExitCode {
    cli::main()
}
