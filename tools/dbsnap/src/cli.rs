//! dbsnap's command line.

use clap::Parser;
use dbsafe::cli::{CommonArgs, EncodeArgs, TmpdirArgs};
use std::path::PathBuf;

/// What `--help` shows after the options.
const AFTER_HELP: &str = concat!(
    "Examples:
  dbsnap sqlite:app.db -r age1... > app.sqlite.zst.age
  dbsnap sqlite:app.db --to /var/backups/dbsafe --env production --recipients-file keys.txt
  dbsnap sqlite:app.db -o app.sqlite.zst --compress zstd --level 6 --no-encrypt
  DBSAFE_STORE=/var/backups/dbsafe DBSAFE_RECIPIENTS_FILE=/etc/dbsafe/recipients.txt dbsnap sqlite:/srv/app.db

Environment: DBSAFE_STORE, DBSAFE_ENV, DBSAFE_RECIPIENTS, DBSAFE_RECIPIENTS_FILE,
DBSAFE_PASSPHRASE_FILE, DBSAFE_COMPRESS, DBSAFE_CONFIG.
",
    dbsafe::remote_stores_help!(),
    "Exit codes: 0 ok, 1 failed, 2 usage, 4 refused (lock held, --min-free), 130 interrupted."
);

/// Take a snapshot of a database and stream it compressed, encrypted and checksummed.
#[derive(Debug, Parser)]
#[command(name = "dbsnap", version, after_help = AFTER_HELP)]
#[command(about = "Take a snapshot of a database as a compressed, encrypted, checksummed stream")]
pub struct Cli {
    /// Database URL: postgres://user@host:port/db (postgresql://), mysql://user@host:port/db
    /// (mariadb://, ?socket=PATH), sqlite:PATH, duckdb:PATH or dir:PATH (a directory tree).
    /// (Without it, the `url` of the environment's `[env.NAME]` table in the config file,
    /// which keeps a password out of the process list.)
    #[arg(value_name = "SOURCE_URL")]
    pub source: Option<String>,
    /// Write the artifact to FILE (plus FILE.sha256 and FILE.meta.json); `-` is stdout.
    #[arg(short, long, value_name = "FILE", conflicts_with = "to")]
    pub output: Option<PathBuf>,
    /// Write the artifact into a store, named, with sidecars and the series' _latest link.
    /// Repeatable: one dump streamed to every store (a second copy, e.g. local and S3); the run
    /// fails (exit 1) naming the stores that did not get it, the others keep theirs.
    #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
    pub to: Vec<String>,
    /// Take a physical base backup (PostgreSQL) instead of a logical snapshot.
    #[arg(long)]
    pub base: bool,
    /// PostgreSQL: mark the WAL with this restore point just before the
    /// snapshot (dbrestore --target-name NAME recovers to it) and archive it.
    #[arg(long, value_name = "NAME")]
    pub restore_point: Option<String>,
    #[command(flatten)]
    pub encode: EncodeArgs,
    /// Environment name used in the artifact name.
    #[arg(long, value_name = "NAME", env = "DBSAFE_ENV")]
    pub env: Option<String>,
    /// Label recorded in the metadata (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Only this table (repeatable).
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Leave this table out (repeatable).
    #[arg(long = "exclude-table", value_name = "T")]
    pub exclude_tables: Vec<String>,
    /// With stdout output, write the metadata to FILE.
    #[arg(long, value_name = "FILE")]
    pub meta: Option<PathBuf>,
    /// Abort and clean up once the artifact grows past SIZE (e.g. 10G).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Refuse to start when the store's filesystem has less than SIZE free.
    #[arg(long, value_name = "SIZE")]
    pub min_free: Option<String>,
    /// Wait this long for the series lock (default 0: fail at once with exit 4).
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,
    #[command(flatten)]
    pub tmpdir: TmpdirArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}
