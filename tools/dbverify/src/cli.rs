//! dbverify's command line.

use clap::Parser;
use dbsafe::cli::{CommonArgs, DecryptArgs, SeriesArgs, TmpdirArgs};
use dbsafe::verify::Level;
use std::path::PathBuf;

/// What `--help` shows after the options.
const AFTER_HELP: &str = concat!(
    "Levels:
  quick    sha256 against the .sha256 sidecar or --sha256
  full     quick, plus decrypt and decompress to the end, plus a structural check of the payload
           (SQLite: PRAGMA integrity_check; pg_dump archives: read whole by pg_restore)
  restore  full, plus a restore into a scratch database and a comparison of row counts with the
           metadata; reports an integrity score (matching tables / tables)

Examples:
  dbverify -i key.txt app_full_20250118_010000.sqlite.zst.age
  dbsnap sqlite:app.db | dbverify -
  dbverify --store /var/backups/dbsafe --latest --level restore -i key.txt
  dbverify --store /var/backups/dbsafe --all --json
  dbverify --status --store /var/backups/dbsafe --max-age 26h --min-count 3   # for cron and monitoring
  dbverify --list --store /var/backups/dbsafe --env production                # what the store holds

Status readiness: critical (no backups, a series' newest backup older than --max-age, a WAL gap),
degraded (fewer than --min-count, no recent verified backup, WAL older than --max-wal-lag), good.

Environment: DBSAFE_STORE, DBSAFE_IDENTITY_FILE, DBSAFE_PASSPHRASE_FILE, DBSAFE_CONFIG.
",
    dbsafe::remote_stores_help!(),
    "Exit codes: 0 all good, 1 a check failed or the store is not healthy, 2 usage (e.g. missing key),
3 not found."
);

/// Prove that a backup is good.
#[derive(Debug, Parser)]
#[command(name = "dbverify", version, after_help = AFTER_HELP)]
#[command(
    about = "Prove that a backup is good: checksum, layers, payload structure, a rehearsed restore"
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
    #[command(flatten)]
    pub series: SeriesArgs,
    /// Report store health instead of verifying (needs --store); exit 1 unless good.
    #[arg(long)]
    pub status: bool,
    /// List the store's backups (time, kind, engine, size, encryption, verification, pins),
    /// safety backups apart, and PostgreSQL's recovery window per timeline; verifies nothing.
    #[arg(long, conflicts_with = "status")]
    pub list: bool,
    /// With --status: the newest backup, and the newest verified one, of each series must be younger.
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    pub max_age: String,
    /// With --status: each series must hold at least this many backups.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_count: usize,
    /// With --status: the newest archived WAL segment must be younger.
    #[arg(long, value_name = "DURATION")]
    pub max_wal_lag: Option<String>,
    /// Server URL for scratch databases at --level restore.
    #[arg(long, value_name = "URL")]
    pub scratch: Option<String>,
    /// At --level restore (PostgreSQL): do not create the roles the backup recorded, to prove
    /// the scratch server has them (a fresh `initdb` cluster is the honest scratch).
    #[arg(long)]
    pub no_roles: bool,
    #[command(flatten)]
    pub keys: DecryptArgs,
    #[command(flatten)]
    pub tmpdir: TmpdirArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}
