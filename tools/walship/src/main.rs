#![forbid(unsafe_code)]
use clap::Parser;

fn main() -> std::process::ExitCode {
    match walship::cli::Cli::try_parse() {
        Ok(cli) => walship::main(cli),
        Err(e) => {
            let code = dbsafe::output::clap_error("walship", &e);
            // PostgreSQL takes restore_command's exit 1..=125 for "no such
            // segment" and ends recovery early: a fetch it cannot even parse
            // must stop recovery instead.
            let fetch = std::env::args().nth(1).is_some_and(|a| a == "fetch");
            match code {
                dbsafe::ExitCode::Usage if fetch => std::process::ExitCode::from(255),
                c => std::process::ExitCode::from(c.code() as u8),
            }
        }
    }
}
