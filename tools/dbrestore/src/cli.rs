//! dbrestore's command line.

use clap::Parser;
use dbsafe::cli::{ChangeArgs, CommonArgs, DecryptArgs, TmpdirArgs};
use std::path::PathBuf;

/// What `--help` shows after the options.
const AFTER_HELP: &str = concat!(
    "Into a target it creates, dbrestore verifies the artifact as it restores it (checksum, every
layer) and removes the target again if the artifact fails. Before touching an existing target, it
verifies the artifact first (--skip-verify to skip),
asks you to type the target database's name (--yes skips; without a terminal and without --yes it
refuses with exit 4) and takes a safety backup of the target into the store's `{env}-safety` series or
--safety-dir (--no-safety-backup to skip). After the restore it compares tables and row counts with
the metadata and appends an entry to the audit log.

Examples:
  dbrestore -i key.txt app_default_full_20250118_010000.sqlite.zst.age --target sqlite:restored.db
  dbrestore --store /var/backups/dbsafe --latest --database app --target sqlite:/srv/app.db --yes
  dbrestore --store /var/backups/dbsafe --before '2025-01-18 14:35:00' --target sqlite:copy.db
  dbrestore --store /var/backups/dbsafe --latest --target sqlite:app.db --table orders --yes
  age -d -i key.txt X.sqlite.zst.age | dbrestore - --target sqlite:x.db
  dbrestore --store /var/backups/dbsafe --target-time '2025-01-18 14:35:00' --pgdata /srv/pg-recovered \
      --start --port 5433 -i key.txt       # point in time: base backup + archived WAL

Environment: DBSAFE_STORE, DBSAFE_ENV, DBSAFE_IDENTITY_FILE, DBSAFE_PASSPHRASE_FILE,
DBSAFE_RECIPIENTS, DBSAFE_RECIPIENTS_FILE (safety backups), DBSAFE_AUDIT_LOG, DBSAFE_CONFIG.
",
    dbsafe::remote_stores_help!(),
    "Exit codes: 0 ok, 1 failed (verification, restore or row counts), 2 usage (several series match),
3 no such backup, 4 refused (no confirmation, target not empty without --clean), 130 interrupted."
);

/// Restore a backup into a database.
#[derive(Debug, Parser)]
#[command(name = "dbrestore", version, after_help = AFTER_HELP)]
#[command(
    about = "Restore a backup into a database: verified, with a safety backup and a typed confirmation"
)]
pub struct Cli {
    /// Artifact file, or `-` for stdin.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: Option<String>,
    /// Pick the artifact from this store.
    #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
    pub store: Option<String>,
    /// With --store: the newest backup of the series.
    #[arg(long)]
    pub latest: bool,
    /// With --store: the backup taken at exactly YYYYMMDD_HHMMSS.
    #[arg(long, value_name = "YYYYMMDD_HHMMSS")]
    pub timestamp: Option<String>,
    /// With --store: the newest backup taken at or before TIME.
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// With --store: the backup with this name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Narrow the series to this environment.
    #[arg(long, value_name = "NAME", env = "DBSAFE_ENV")]
    pub env: Option<String>,
    /// Narrow the series to this database.
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
    /// Database URL to restore into: postgres://user@host:port/db (postgresql://),
    /// mysql://user@host:port/db (mariadb://, ?socket=PATH), sqlite:PATH, duckdb:PATH or dir:PATH.
    #[arg(long, value_name = "URL", required_unless_present = "pgdata")]
    pub target: Option<String>,
    /// Point in time (PostgreSQL): restore a base backup into this new or empty data directory
    /// and configure recovery from the store's WAL archive.
    #[arg(
        long,
        value_name = "DIR",
        requires = "recovery_target",
        conflicts_with = "target"
    )]
    pub pgdata: Option<std::path::PathBuf>,
    /// With --pgdata: recover up to TIME (RFC 3339 or "YYYY-MM-DD HH:MM:SS" UTC), or `latest` to
    /// replay every archived WAL file.
    #[arg(long, value_name = "TIME|latest", group = "recovery_target")]
    pub target_time: Option<String>,
    /// With --pgdata: recover up to this WAL position (e.g. 0/3000158).
    #[arg(long, value_name = "LSN", group = "recovery_target")]
    pub target_lsn: Option<String>,
    /// With --pgdata: recover up to this transaction id.
    #[arg(long, value_name = "XID", group = "recovery_target")]
    pub target_xid: Option<u64>,
    /// With --pgdata: recover up to this restore point (walship restore-point, dbsnap --restore-point).
    #[arg(long, value_name = "NAME", group = "recovery_target")]
    pub target_name: Option<String>,
    /// With --pgdata: stop just before the target instead of just after it.
    #[arg(long)]
    pub target_exclusive: bool,
    /// With --pgdata: what the server does at the target: promote (accept writes), pause
    /// (read-only, for inspection) or shutdown.
    #[arg(long, value_name = "ACTION", value_enum, default_value_t = dbsafe::engine::pgdata::TargetAction::Promote)]
    pub target_action: dbsafe::engine::pgdata::TargetAction,
    /// With --pgdata: the timeline to recover along, a number, `current` (the base backup's) or
    /// `latest`. Needed only when the target lies on several timelines (exit 2 lists them).
    #[arg(long, value_name = "N|current|latest")]
    pub target_timeline: Option<String>,
    /// With --pgdata: start the server, wait for recovery to reach the target, promote, report.
    #[arg(long)]
    pub start: bool,
    /// With --pgdata: the restored server's port (a recovery copy can run next to the damaged one).
    #[arg(long, value_name = "N", default_value_t = 5433)]
    pub port: u16,
    /// With --pgdata: where the restored server puts its socket (default: the data directory).
    #[arg(long, value_name = "DIR")]
    pub socket_dir: Option<std::path::PathBuf>,
    /// With --pgdata: the recovered server archives its new timeline into the store, as the
    /// new primary must. Without it (drills, inspection copies) archiving is off, so a
    /// recovery never adds a timeline to the archive.
    #[arg(long, conflicts_with = "no_archive")]
    pub archive: bool,
    /// With --pgdata: archiving off in the restored copy (the default; kept for scripts).
    #[arg(long, hide = true)]
    pub no_archive: bool,
    /// With --pgdata --start: how long to wait for recovery.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub recovery_timeout: String,
    /// Create the target when it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Drop the target's existing objects first.
    #[arg(long)]
    pub clean: bool,
    /// PostgreSQL: restore every object owned by the connecting role instead
    /// of its recorded owner (owners are kept by default).
    #[arg(long)]
    pub no_owner: bool,
    /// PostgreSQL: do not create the roles the backup recorded (owners and
    /// grants then need them to exist already).
    #[arg(long)]
    pub no_roles: bool,
    /// Restore only this table (repeatable).
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Do not verify the artifact before restoring.
    #[arg(long)]
    pub skip_verify: bool,
    /// PostgreSQL: restore with N parallel pg_restore workers (default: the machine's cores up
    /// to 4, and 1 on a machine of 2 cores or fewer, where workers compete with the server).
    /// Above 1, the payload is decoded once, verified on the way, into a private temporary file
    /// under --tmpdir (plaintext, removed when the restore ends) that pg_restore -j reads; 1
    /// streams it in one transaction without a copy on disk.
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Run CMD (with `sh -c`) after verification and confirmation, before the safety backup and
    /// the restore: stop what uses the target. The environment names it: DBSAFE_TARGET,
    /// DBSAFE_DATABASE, DBSAFE_BACKUP. If CMD fails, nothing is changed (exit 1).
    #[arg(long, value_name = "CMD")]
    pub before_cmd: Option<String>,
    /// Run CMD after the restore (and after a --before-cmd that failed), whatever happened:
    /// start what uses the target again. Its environment adds DBSAFE_RESULT
    /// (success or failure) and DBSAFE_MESSAGE. If CMD fails, the run fails (exit 1).
    #[arg(long, value_name = "CMD")]
    pub after_cmd: Option<String>,
    /// Do not take a safety backup of a non-empty target.
    #[arg(long)]
    pub no_safety_backup: bool,
    /// Let the safety backup be unencrypted where the target's own backups
    /// in the store are encrypted (refused otherwise).
    #[arg(long)]
    pub no_encrypt: bool,
    /// Put the safety backup in this directory instead of the store.
    #[arg(long, value_name = "DIR")]
    pub safety_dir: Option<PathBuf>,
    #[command(flatten)]
    pub change: ChangeArgs,
    #[command(flatten)]
    pub keys: DecryptArgs,
    #[command(flatten)]
    pub tmpdir: TmpdirArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl Cli {
    /// Parallel restore workers: --jobs, or the machine's cores up to 4
    /// where there are more than 2 (measured with make bench-restore: on 2
    /// cores, pg_restore -j 2 is no faster than one transaction).
    pub fn jobs(&self) -> usize {
        match self.jobs {
            Some(n) => n as usize,
            None => match std::thread::available_parallelism().map(|n| n.get()) {
                Ok(n) if n > 2 => n.min(4),
                _ => 1,
            },
        }
    }
}
