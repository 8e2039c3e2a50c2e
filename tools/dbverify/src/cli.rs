//! dbverify's command line.

use clap::Parser;
use dbsafe::cli::{CommonArgs, DecryptArgs};
use dbsafe::verify::Level;
use std::path::PathBuf;

/// Prove that a backup is good.
#[derive(Debug, Parser)]
#[command(
    name = "dbverify",
    version,
    about = "Prove that a backup is good: checksum, layers, payload structure, a rehearsed restore",
    after_help = "Levels:
  quick    sha256 against the .sha256 sidecar or --sha256
  full     quick, plus decrypt and decompress to the end, plus a structural check of the payload
           (SQLite: PRAGMA integrity_check)
  restore  full, plus a restore into a scratch database and a comparison of row counts with the
           metadata; reports an integrity score (matching tables / tables)

Examples:
  dbverify -i key.txt app_full_20250118_010000.sqlite.zst.age
  dbsnap sqlite:app.db | dbverify -
  dbverify --store /var/backups/dbsafe --latest --level restore -i key.txt
  dbverify --store /var/backups/dbsafe --all --json

Environment: DBSAFE_STORE, DBSAFE_IDENTITY_FILE, DBSAFE_PASSPHRASE_FILE, DBSAFE_CONFIG.
Exit codes: 0 all good, 1 a check failed, 2 usage (e.g. missing key), 3 not found."
)]
pub struct Cli {
    /// Artifact files, `-` for stdin; with --store, backup names.
    #[arg(value_name = "ARTIFACT")]
    pub artifacts: Vec<String>,
    /// How deep to check.
    #[arg(long, value_enum, default_value = "full")]
    pub level: Level,
    /// The sha256 the artifact must have (for stdin or a file without sidecar).
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Metadata for an artifact on stdin (dbsnap --meta).
    #[arg(long, value_name = "FILE")]
    pub meta: Option<PathBuf>,
    /// Verify artifacts in this store.
    #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
    pub store: Option<String>,
    /// With --store: the newest artifact of each series.
    #[arg(long)]
    pub latest: bool,
    /// With --store: every artifact.
    #[arg(long)]
    pub all: bool,
    /// With --store: only this environment.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// With --store: only this database.
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
    /// Server URL for scratch databases at --level restore.
    #[arg(long, value_name = "URL")]
    pub scratch: Option<String>,
    #[command(flatten)]
    pub keys: DecryptArgs,
    /// Directory for temporary files (default: $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub tmpdir: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}
