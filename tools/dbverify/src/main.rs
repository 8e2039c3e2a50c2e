#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    dbsafe::cli::main_with("dbverify", || dbverify::run(dbverify::cli::Cli::parse()))
}
