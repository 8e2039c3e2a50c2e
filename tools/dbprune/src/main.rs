#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    dbsafe::cli::main_with("dbprune", || dbprune::run(dbprune::cli::Cli::parse()))
}
