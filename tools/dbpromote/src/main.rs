#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    dbsafe::cli::main_with("dbpromote", || dbpromote::run(dbpromote::cli::Cli::parse()))
}
