#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    dbsafe::cli::main_with("dbsnap", || dbsnap::run(dbsnap::cli::Cli::parse()))
}
