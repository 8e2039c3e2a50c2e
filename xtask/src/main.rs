//! `cargo run -p xtask -- man`: writes man/*.1 and completions/* from the
//! tools' clap definitions. `cargo test -p xtask` fails when they are stale.
#![forbid(unsafe_code)]

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Every generated file: (path relative to the workspace, contents).
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let commands = [
        dbsnap::cli::Cli::command(),
        dbverify::cli::Cli::command(),
        dbrestore::cli::Cli::command(),
        dbprune::cli::Cli::command(),
        walship::cli::Cli::command(),
        dbpromote::cli::Cli::command(),
    ];
    let mut out = Vec::new();
    for cmd in commands {
        let name = cmd.get_name().to_string();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut page)
            .expect("render man page");
        out.push((PathBuf::from(format!("man/{name}.1")), page));
        for (shell, file) in [
            (Shell::Bash, format!("completions/{name}.bash")),
            (Shell::Zsh, format!("completions/_{name}")),
            (Shell::Fish, format!("completions/{name}.fish")),
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
            out.push((PathBuf::from(file), buf));
        }
    }
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("man") => {
            for (rel, bytes) in generated() {
                let path = root().join(&rel);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
                std::fs::write(&path, bytes).expect("write");
                println!("wrote {}", rel.display());
            }
        }
        _ => {
            eprintln!("usage: cargo run -p xtask -- man");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_man_pages_and_completions_are_current() {
        for (rel, bytes) in super::generated() {
            let on_disk = std::fs::read(super::root().join(&rel)).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "{} is stale: run `make man` and commit the result",
                rel.display()
            );
        }
    }
}
