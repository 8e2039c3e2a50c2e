#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    dbsafe::cli::main_with("dbrestore", || dbrestore::run(dbrestore::cli::Cli::parse()))
}
