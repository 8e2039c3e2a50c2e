//! The one-way rule of STYLE.md, checked on the sources: tools → the
//! facade → implementations; an engine knows byte streams, not stores,
//! keys or walship; a store knows objects, not what is in them; the
//! pipeline knows layers. Also: library code prints only through the
//! output module and decides on errors by their kind, never their text.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code of a file before its unit tests, without comment lines.
fn code(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// Every line of the files under `dir` (relative to the workspace) that contains one of `banned`.
fn offences(dir: &str, banned: &[&str], except: &[&str]) -> Vec<String> {
    let root = root();
    let mut found = Vec::new();
    for file in rust_files(&root.join(dir)) {
        let rel = file
            .strip_prefix(&root)
            .expect("under root")
            .display()
            .to_string();
        if except.iter().any(|x| rel.ends_with(x)) {
            continue;
        }
        for (n, line) in code(&file) {
            for b in banned {
                if line.contains(b) {
                    found.push(format!("{rel}:{n}: {b}: {}", line.trim()));
                }
            }
        }
    }
    found
}

fn assert_none(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

#[test]
fn tools_import_only_the_facade() {
    assert_none(
        "tools name an engine or store implementation",
        offences(
            "tools",
            &[
                "dbsafe::store::s3",
                "dbsafe::store::local",
                "S3Store",
                "LocalStore",
                "engine::postgres",
                "engine::mysql",
                "engine::sqlite",
                "engine::duckdb",
                "engine::dir",
            ],
            &[],
        ),
    );
}

#[test]
fn engines_know_neither_stores_nor_keys_nor_walship() {
    assert_none(
        "an engine imports a store, keys, compression or walship",
        offences(
            "common/src/engine",
            &[
                "crate::store",
                "crate::keys",
                "crate::walarchive",
                "crate::audit",
                "crate::lock",
                "Keyring",
                "age::",
                "zstd::",
                "\"walship\"",
                "walship fetch",
            ],
            &[],
        ),
    );
}

#[test]
fn stores_know_objects_not_what_is_in_them() {
    assert_none(
        "a store imports an engine, keys, the pipeline, the audit log or locks",
        offences(
            "common/src/store",
            &[
                "crate::engine",
                "crate::keys",
                "crate::pipeline",
                "crate::audit",
                "crate::lock",
                "crate::catalog",
            ],
            &[],
        ),
    );
}

#[test]
fn the_pipeline_knows_layers_only() {
    let root = root();
    let found: Vec<String> = code(&root.join("common/src/pipeline.rs"))
        .into_iter()
        .filter(|(_, l)| l.contains("crate::engine") || l.contains("crate::store"))
        .map(|(n, l)| format!("pipeline.rs:{n}: {}", l.trim()))
        .collect();
    assert_none("the pipeline imports an engine or a store", found);
}

#[test]
fn the_library_prints_only_through_the_output_module() {
    assert_none(
        "library code prints",
        offences(
            "common/src",
            &["println!", "eprintln!", "print!(", "eprint!("],
            &["common/src/output.rs"],
        ),
    );
}

#[test]
fn errors_are_decided_by_kind_never_by_message_text() {
    assert_none(
        "an error is recognised by its text",
        offences(
            "common/src",
            &["message.contains(", "to_string().contains("],
            &[],
        ),
    );
    assert_none(
        "an error is recognised by its text",
        offences(
            "tools",
            &["message.contains(", "to_string().contains("],
            &[],
        ),
    );
}

#[test]
fn engines_are_told_apart_by_the_registry_only() {
    let mut banned = Vec::new();
    for name in [
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "sqlite",
        "duckdb",
        "dir",
    ] {
        banned.push(format!("== \"{name}\""));
        banned.push(format!("Some(\"{name}\")"));
        banned.push(format!("starts_with(\"{name}:"));
        banned.push(format!("strip_prefix(\"{name}:"));
    }
    let banned: Vec<&str> = banned.iter().map(String::as_str).collect();
    let mut found = offences("common/src", &banned, &["common/src/engine/registry.rs"]);
    found.extend(offences("tools", &banned, &[]));
    assert_none(
        "an engine is recognised by its name outside the registry",
        found,
    );
}
