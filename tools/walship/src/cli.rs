//! walship's command line.

use clap::{Parser, Subcommand};
use dbsafe::cli::{CommonArgs, DecryptArgs, EncodeArgs};
use std::path::PathBuf;

/// What `--help` shows after the options.
const AFTER_HELP: &str = concat!(
    "In postgresql.conf (the store, keys and compression come from DBSAFE_* variables in the
server's environment, or from the config file; without a key, push refuses unless --no-encrypt):
  archive_mode = on
  archive_command = 'walship push %p %f'
  restore_command = 'walship fetch %f %p'

Exit codes follow PostgreSQL's contract:
  push   0 once the file is safe in the store, or already archived with identical bytes;
         1 on any failure, including the name already archived with different bytes (never overwritten)
  fetch  0 restored; 1 not in the archive (quietly); 255 any other failure (store unreachable or
         missing, checksum mismatch, wrong key), so recovery stops instead of ending early
  status 1 when the archive lags (--max-lag) or has gaps

Examples:
  walship push pg_wal/000000010000000000000003 000000010000000000000003 --to /var/backups/dbsafe -r age1...
  walship fetch 000000010000000000000003 pg_wal/RECOVERYXLOG --from /var/backups/dbsafe -i key.txt
  walship status --from /var/backups/dbsafe --max-lag 15m
  walship restore-point before-release-42 postgres://postgres@db/postgres
  walship prune --from /var/backups/dbsafe --keep-for-backups --dry-run

Environment: DBSAFE_STORE, DBSAFE_RECIPIENTS, DBSAFE_RECIPIENTS_FILE, DBSAFE_IDENTITY_FILE,
DBSAFE_PASSPHRASE_FILE, DBSAFE_COMPRESS, DBSAFE_CONFIG, DBSAFE_METRICS_FILE, DBSAFE_PUSHGATEWAY.
",
    dbsafe::remote_stores_help!()
);

/// Ship PostgreSQL WAL to a store and back.
#[derive(Debug, Parser)]
#[command(name = "walship", version, after_help = AFTER_HELP)]
#[command(about = "Ship PostgreSQL WAL into a store (archive_command) and back (restore_command)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive a WAL file (archive_command = 'walship push %p %f').
    Push {
        /// Path of the file to archive (%p).
        path: PathBuf,
        /// Its file name (%f).
        file: String,
        /// The store. Repeatable: the file counts as archived (exit 0) only once every store
        /// has it; a store that fails is named (exit 1) and PostgreSQL retries the push, which
        /// the stores that have it answer as already archived.
        #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
        to: Vec<String>,
        /// Acknowledge the file once it is durable in the local --spool, and ship the spool to
        /// the stores in the background (several files at once); the archiver does not wait on
        /// the stores. A file is removed from the spool once every store has it.
        #[arg(long = "async", requires = "spool")]
        asynchronous: bool,
        /// With --async: the spool directory (local disk, kept across reboots).
        #[arg(long, value_name = "DIR", env = "DBSAFE_WAL_SPOOL")]
        spool: Option<std::path::PathBuf>,
        /// With --async: what the spool may hold (default 1G); a push that would pass it fails
        /// (exit 1, PostgreSQL keeps the WAL and retries), it never drops a file.
        #[arg(long, value_name = "SIZE", requires = "asynchronous")]
        spool_max: Option<String>,
        #[command(flatten)]
        encode: EncodeArgs,
    },
    /// Restore an archived WAL file (restore_command = 'walship fetch %f %p').
    Fetch {
        /// The file name wanted (%f).
        file: String,
        /// Where to write it (%p).
        path: PathBuf,
        /// The store.
        #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
        from: Option<String>,
        #[command(flatten)]
        keys: DecryptArgs,
    },
    /// List archived WAL files.
    List {
        /// The store.
        #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
        from: Option<String>,
    },
    /// Newest segment, its age, gaps per timeline; exit 1 when lagging or gapped.
    Status {
        /// The store.
        #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
        from: Option<String>,
        /// The newest segment must be younger than this.
        #[arg(long, value_name = "DURATION")]
        max_lag: Option<String>,
        /// Also report this --async spool: what is queued, and any file no retry can ship
        /// (the store holds other bytes under its name), which fails every push until resolved.
        #[arg(long, value_name = "DIR", env = "DBSAFE_WAL_SPOOL")]
        spool: Option<std::path::PathBuf>,
    },
    /// Mark this moment in the WAL with a name `dbrestore --target-name` can
    /// recover to (pg_create_restore_point), and switch segments so the
    /// mark reaches the archive now.
    RestorePoint {
        /// The restore point's name (up to 63 characters).
        name: String,
        /// The PostgreSQL server (default: the environment's url in the config file).
        #[arg(value_name = "URL")]
        url: Option<String>,
        /// Record it in this store too, so dbrestore --target-name knows where it is.
        #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
        to: Option<String>,
    },
    /// Delete archived WAL that is no longer needed (.history files always stay).
    Prune {
        /// The store.
        #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
        from: Option<String>,
        /// Delete files before this segment.
        #[arg(long, value_name = "SEGMENT", conflicts_with = "keep_for_backups")]
        before: Option<String>,
        /// Delete what no base backup in the store needs.
        #[arg(long)]
        keep_for_backups: bool,
        /// Print what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}
