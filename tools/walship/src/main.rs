#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    walship::main(walship::cli::Cli::parse())
}
