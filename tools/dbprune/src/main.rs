#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    dbsafe::cli::main_parsed("dbprune", dbprune::run)
}
