//! `cargo run -p xtask -- man`: writes man/*.1 and completions/* from the
//! tools' clap definitions. `cargo test -p xtask` fails when they are stale.
#![forbid(unsafe_code)]

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Every tool's command line, in the order its man pages list them.
fn commands() -> [clap::Command; 6] {
    [
        dbsnap::cli::Cli::command(),
        dbverify::cli::Cli::command(),
        dbrestore::cli::Cli::command(),
        dbprune::cli::Cli::command(),
        walship::cli::Cli::command(),
        dbpromote::cli::Cli::command(),
    ]
}

/// Every generated file: (path relative to the workspace, contents).
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for cmd in commands() {
        let name = cmd.get_name().to_string();
        out.push((PathBuf::from(format!("man/{name}.1")), man_page(&cmd)));
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
    out.push((PathBuf::from("man/dbsafe.toml.5"), config_page()));
    out
}

/// Text for roff: backslashes doubled, a leading `.` or `'` kept literal.
fn roff_text(line: &str) -> String {
    let t = line.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The lines of `after_help` under `Examples:` (indented), and the rest.
fn split_examples(after: &str) -> (Vec<String>, Vec<String>) {
    let mut examples = Vec::new();
    let mut rest = Vec::new();
    let mut in_examples = false;
    for line in after.lines() {
        if line.trim_end() == "Examples:" {
            in_examples = true;
            continue;
        }
        if in_examples && line.starts_with("  ") {
            examples.push(line.trim().to_string());
            continue;
        }
        in_examples = false;
        rest.push(line.to_string());
    }
    (examples, rest)
}

/// Every environment variable an argument of `cmd` (or its subcommands) reads.
fn environment(cmd: &clap::Command, out: &mut Vec<(String, String)>) {
    for a in cmd.get_arguments() {
        if let Some(env) = a.get_env() {
            let name = env.to_string_lossy().into_owned();
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let flag = a
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| a.get_id().to_string());
            out.push((name, format!("as {flag}: {}", help.trim_end_matches('.'))));
        }
    }
    for sub in cmd.get_subcommands() {
        environment(sub, out);
    }
}

const STORE_ENVIRONMENT: [(&str, &str); 18] = [
    (
        "AWS_ENDPOINT_URL",
        "the S3 service of s3:// stores (default: AWS)",
    ),
    ("AWS_REGION", "the region requests are signed for"),
    (
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN",
        "credentials, as the AWS CLI reads them",
    ),
    (
        "AWS_PROFILE",
        "a profile of ~/.aws/config and ~/.aws/credentials",
    ),
    (
        "DBSAFE_S3_PATH_STYLE",
        "path-style requests (MinIO and most self-hosted services)",
    ),
    ("DBSAFE_S3_PART_SIZE", "multipart part size (16M)"),
    ("DBSAFE_S3_PARTS_IN_FLIGHT", "parts uploaded at once (2)"),
    ("DBSAFE_S3_RETRIES", "attempts per request (5)"),
    ("DBSAFE_S3_TIMEOUT", "timeout of one request (60s)"),
    (
        "GOOGLE_APPLICATION_CREDENTIALS",
        "a service-account key or user credentials (JSON) for gs:// stores; without it, gcloud's application default credentials, else the metadata server",
    ),
    (
        "GCE_METADATA_HOST",
        "the metadata server handing out tokens (VMs, GKE workload identity)",
    ),
    (
        "STORAGE_EMULATOR_HOST",
        "a GCS emulator, reached without credentials",
    ),
    (
        "DBSAFE_GCS_ENDPOINT",
        "another GCS endpoint, reached with credentials",
    ),
    (
        "AZURE_STORAGE_CONNECTION_STRING",
        "the account, key or SAS and endpoint of az:// stores",
    ),
    (
        "AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN",
        "the account, with its key or a SAS token; with neither, a managed identity",
    ),
    (
        "AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_AUTHORITY_HOST",
        "AKS workload identity",
    ),
    (
        "IDENTITY_ENDPOINT, IDENTITY_HEADER, AZURE_IMDS_DISABLED",
        "the managed identity endpoint (App Service, Container Apps), or the instance metadata service unless disabled",
    ),
    (
        "DBSAFE_AZURE_ENDPOINT",
        "another blob endpoint (sovereign clouds, private endpoints, Azurite)",
    ),
];

/// A man page: clap's name, synopsis, description and options, then
/// EXAMPLES unreflowed, EXIT STATUS, ENVIRONMENT and FILES.
fn man_page(cmd: &clap::Command) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let (examples, rest) = split_examples(
        &cmd.get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default(),
    );
    let man = clap_mangen::Man::new(cmd.clone().after_help(rest.join("\n").trim().to_string()));
    let mut page = Vec::new();
    man.render_title(&mut page).expect("title");
    // Paths, URLs and flags are never hyphenated or stretched.
    page.extend_from_slice(b".nh\n.ad l\n");
    man.render_name_section(&mut page).expect("name");
    man.render_synopsis_section(&mut page).expect("synopsis");
    man.render_description_section(&mut page)
        .expect("description");
    man.render_options_section(&mut page).expect("options");
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut page)
            .expect("subcommands");
    }
    if !rest.join("").trim().is_empty() {
        man.render_extra_section(&mut page).expect("extra");
    }
    let mut t = String::new();
    if !examples.is_empty() {
        t.push_str(".SH EXAMPLES\n.nf\n");
        for e in &examples {
            t.push_str(&roff_text(e));
            t.push('\n');
        }
        t.push_str(".fi\n");
    }
    t.push_str(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in [
        ("0", "success (also: walship push of a segment already archived with identical bytes)"),
        ("1", "the operation failed, or a check found a problem"),
        ("2", "usage or configuration error (bad flag, bad URL, missing key, unreadable config)"),
        ("3", "not found (no such backup, no such WAL segment)"),
        ("4", "refused for safety (no confirmation, lock held, would delete the last good backup, target not empty)"),
        ("130", "interrupted (SIGINT or SIGTERM); temporary files removed"),
        ("141", "the reader of stdout went away: the tool ends quietly, as SIGPIPE ends a shell tool"),
    ] {
        t.push_str(&format!(".TP\n{code}\n{}\n", roff_text(meaning)));
    }
    if name == "walship" {
        t.push_str(&format!(
            ".PP\n{}\n",
            roff_text("walship fetch exits 1 only when the segment is not in the archive, and 255 for every other failure, so PostgreSQL stops a recovery on an error instead of ending it early.")
        ));
    }
    let mut env = vec![(
        "DBSAFE_CONFIG".to_string(),
        "the config file, as --config; see dbsafe.toml(5)".to_string(),
    )];
    environment(cmd, &mut env);
    if !env.iter().any(|(n, _)| n == "DBSAFE_AUDIT_LOG") {
        env.push((
            "DBSAFE_AUDIT_LOG".into(),
            "the audit log of stores that have no local directory (S3, GCS, Azure)".into(),
        ));
    }
    t.push_str(".SH ENVIRONMENT\n");
    for (var, help) in &env {
        t.push_str(&format!(".TP\n.B {var}\n{}\n", roff_text(help)));
    }
    for (var, help) in STORE_ENVIRONMENT {
        t.push_str(&format!(".TP\n.B {var}\n{}\n", roff_text(help)));
    }
    t.push_str(".SH FILES\n");
    for (file, help) in [
        (
            "./dbsafe.toml, /etc/dbsafe/dbsafe.toml",
            "the config file, unless --config or DBSAFE_CONFIG names another; see dbsafe.toml(5)",
        ),
        (
            "STORE/backups/",
            "artifacts, each with FILE.sha256, FILE.meta.json and FILE.verify.json",
        ),
        ("STORE/wal/", "archived PostgreSQL WAL (walship)"),
        (
            "STORE/releases/ENV/VERSION.json",
            "release manifests (dbpromote)",
        ),
        (
            "STORE/locks/",
            "one lock file per series and per environment",
        ),
        (
            "STORE/audit.log",
            "one JSON line per restore, prune and promotion (S3 stores: DBSAFE_AUDIT_LOG)",
        ),
    ] {
        t.push_str(&format!(
            ".TP\n.I {}\n{}\n",
            roff_text(file),
            roff_text(help)
        ));
    }
    t.push_str(".SH \"SEE ALSO\"\n");
    let others: Vec<String> = commands()
        .iter()
        .map(|c| c.get_name())
        .filter(|t| *t != name)
        .map(|t| format!("{t}(1)"))
        .chain([
            "dbsafe.toml(5)".to_string(),
            "age(1)".to_string(),
            "zstd(1)".to_string(),
        ])
        .collect();
    t.push_str(&format!("{}\n", others.join(", ")));
    page.extend_from_slice(t.as_bytes());
    man.render_version_section(&mut page).expect("version");
    page
}

/// dbsafe.toml(5), the config file's page.
fn config_page() -> Vec<u8> {
    include_str!("dbsafe.toml.5").as_bytes().to_vec()
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
