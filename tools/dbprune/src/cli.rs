//! dbprune's command line.

use clap::Parser;
use dbsafe::cli::{CommonArgs, SeriesArgs};

/// What `--help` shows after the options.
const AFTER_HELP: &str = concat!(
    "A backup kept by any rule is kept. Never deleted, whatever the rules say: the newest backup of
each series, the newest verified backup of each series, backups pinned by a release manifest
(STORE/releases/), and temporaries and sidecars without their artifact younger than --stale-tmp
(a writer may still be busy, on this host or another).

Safety backups (ENV-safety series) keep their own rule: [env.ENV-safety] retention, else 7 days;
rule flags reach them only with --env ENV-safety.

Without rule flags, each series gets its environment's `retention` from the config file, else the
runbook practice: keep 7, and everything younger than 7d (development), 14d (staging) or 30d
(production).

Examples:
  dbprune --store /var/backups/dbsafe --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  dbprune --store /var/backups/dbsafe --env production --keep-within 30d --keep-last 7 --json
  dbprune --store /var/backups/dbsafe --min-free 50G --wal

Environment: DBSAFE_STORE, DBSAFE_CONFIG.
",
    dbsafe::remote_stores_help!(),
    "Exit codes: 0 ok, 1 failed (or --min-free/--max-total could not be met), 2 usage, 3 no such store,
4 another dbprune holds the store's prune lock."
);

/// Rotate backups: keep what the rules and protections keep, delete the rest.
#[derive(Debug, Parser)]
#[command(name = "dbprune", version, after_help = AFTER_HELP)]
#[command(
    about = "Rotate backups in a store: retention rules, protections that beat them, stale temporaries, WAL"
)]
pub struct Cli {
    /// The store to prune.
    #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
    pub store: String,
    #[command(flatten)]
    pub series: SeriesArgs,
    /// Keep the newest N of each series.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep everything younger than D (e.g. 30d).
    #[arg(long, value_name = "D")]
    pub keep_within: Option<String>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// ... of each of the last N days (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Delete further unprotected backups, oldest first, until the store's filesystem has SIZE free.
    #[arg(long, value_name = "SIZE")]
    pub min_free: Option<String>,
    /// Delete further unprotected backups, oldest first, until the backups total at most SIZE.
    #[arg(long, value_name = "SIZE")]
    pub max_total: Option<String>,
    /// Also delete archived WAL that no kept base backup needs (history files stay).
    #[arg(long)]
    pub wal: bool,
    /// Remove temporaries, and sidecars without their artifact, of crashed writers older than this.
    #[arg(long, value_name = "D", default_value = "1h")]
    pub stale_tmp: String,
    /// Print what would be deleted and why; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}
