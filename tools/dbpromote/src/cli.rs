//! dbpromote's command line.

use clap::{ArgGroup, Args, Parser};
use dbsafe::cli::{ChangeArgs, CommonArgs, DecryptArgs, TmpdirArgs};
use std::path::PathBuf;

/// Promote a database between environments: releases up, refreshes down, rollbacks.
#[derive(Debug, Parser)]
#[command(
    name = "dbpromote",
    version,
    // `--version V` names the release (SPEC §5); `--version` alone and `-V`
    // still print the tool's version (SPEC §1), handled in `run`.
    disable_version_flag = true,
    about = "Promote between environments: schema releases move up with a rehearsed migration, \
             data refreshes move down sanitized, and either can be rolled back",
    group(ArgGroup::new("mode").args(["refresh", "rollback", "history"])),
    after_help = "Environments come from the config file ([env.NAME]: url, store, migrate, health_check, downgrade,
sensitive; [defaults] chain = [\"development\", \"staging\", \"production\"]). Flags override them.

Release (--from A --to B --version V): B must be the next environment up the chain from A, and V must
have been promoted successfully to A (STORE/releases/A/V.json; not needed from the chain's first
environment), else exit 4. Steps: a pre-release backup of B into B's store, verified and pinned by the
manifest; a rehearsal: that backup restored into a side database next to B (<db>_dbpromote_rehearsal_*),
migrate and health check run against it with DATABASE_URL set to it, then dropped (a failure here
leaves B untouched); typed confirmation (B's name; --yes skips); migrate and health check on B; the
manifest STORE/releases/B/V.json. A failure on B runs the downgrade command when there is one and
reports B's state and the dbrestore command that restores the pre-release backup (exit 1).

Refresh (--refresh --from A --to B): a verified backup of A (a new snapshot, --backup NAME or
--latest-verified), restored into a side database next to B, --sanitize FILE.sql run on it (required
when A is `sensitive`), migrate and health check, typed confirmation, then the side database is swapped
in by rename and B's old database is kept as <db>_dbpromote_prev_<stamp>_<hex>, the rollback point. Sessions
on B are ended after --grace D (pg_terminate_backend), else the swap is refused with exit 4 and nothing
changes. A failure before the swap drops the side database and leaves B untouched.

Rollback (--rollback --to B) undoes B's last successful promotion: a refresh by swapping the previous
database back; a release by the downgrade command, or (no downgrade, or --restore-backup) by restoring
the pre-release backup into a side database and swapping it in, after saying which writes it undoes.
The database that was live is kept as <db>_dbpromote_rolledback_<stamp>_<hex>.

Commands run with `sh -c`, with DATABASE_URL (the password too, when the environment's URL has one),
PGPASSWORD, DBPROMOTE_ENV, DBPROMOTE_VERSION and DBPROMOTE_PHASE (rehearsal, target, downgrade,
rollback) set; their output goes to stderr. A rollback's downgrade gets the version it undoes, the
health check after it the version the environment is back on (empty if none).

Engines: PostgreSQL (side databases on the target's server; connect as the role that owns the
application's objects, since a restore gives them to the connecting role), SQLite and DuckDB (side
files next to the target; a process holding a DuckDB file open is waited for up to --grace).

`--version V` names the release (a manifest name); `--version` without a value, or -V, prints
dbpromote's own version.

Examples:
  dbpromote --from development --to staging --version v42
  dbpromote --from staging --to production --version v42 --dry-run
  dbpromote --refresh --from production --to staging --sanitize ops/mask.sql --grace 30s --yes
  dbpromote --rollback --to staging --yes
  dbpromote --history --to production --json

Environment: DBSAFE_CONFIG, DBSAFE_STORE (the target's store), DBSAFE_IDENTITY_FILE,
DBSAFE_PASSPHRASE_FILE, DBSAFE_RECIPIENTS, DBSAFE_RECIPIENTS_FILE (backups it takes), DBSAFE_AUDIT_LOG,
DBSAFE_METRICS_FILE, DBSAFE_PUSHGATEWAY.
Exit codes: 0 ok, 1 a step failed, 2 usage or configuration, 3 no such backup or promotion, 4 refused
(gate, route, sensitive source without --sanitize, no confirmation, sessions in the way, lock held),
130 interrupted."
)]
pub struct Cli {
    /// Source environment (releases and refreshes).
    #[arg(long, value_name = "ENV")]
    pub from: Option<String>,
    /// Target environment.
    #[arg(long, value_name = "ENV", required_unless_present_any = ["version", "print_version"])]
    pub to: Option<String>,
    /// The version a release promotes (a manifest name: letters, digits, '.', '_', '-', '+');
    /// `--version` without a value prints dbpromote's own version.
    #[arg(long, value_name = "V", num_args = 0..=1, default_missing_value = "")]
    pub version: Option<String>,
    /// Print dbpromote's version.
    #[arg(short = 'V')]
    pub print_version: bool,
    /// Move data down: replace --to's database with a sanitized copy of --from's.
    #[arg(long)]
    pub refresh: bool,
    /// Undo the last successful promotion of --to (or the one of --version).
    #[arg(long)]
    pub rollback: bool,
    /// List --to's promotions.
    #[arg(long)]
    pub history: bool,
    #[command(flatten)]
    pub commands: Commands,
    /// Refresh: SQL run on the copy before it is swapped in (required from a sensitive source).
    #[arg(long, value_name = "FILE.sql")]
    pub sanitize: Option<PathBuf>,
    /// Refresh: use this backup from the source's store instead of a new snapshot.
    #[arg(long, value_name = "NAME", conflicts_with = "latest_verified")]
    pub backup: Option<String>,
    /// Refresh: use the newest verified backup from the source's store.
    #[arg(long)]
    pub latest_verified: bool,
    /// Sessions on the target are ended after this long (e.g. 30s); without it they refuse the swap.
    #[arg(long, value_name = "D")]
    pub grace: Option<String>,
    /// Refresh: previous databases to keep (the newest is the rollback point; older ones are dropped).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_previous: u32,
    /// Rollback of a release: restore the pre-release backup even when a downgrade command exists.
    #[arg(long, requires = "rollback")]
    pub restore_backup: bool,
    /// The target environment's store (default: its `store` in the config file).
    #[arg(long, value_name = "STORE", env = "DBSAFE_STORE")]
    pub store: Option<String>,
    /// Refresh: the source environment's store (default: its `store` in the config file).
    #[arg(long, value_name = "STORE")]
    pub from_store: Option<String>,
    /// How long to wait for another promotion of the same environment (default 0: refuse at once).
    #[arg(long, value_name = "D")]
    pub lock_timeout: Option<String>,
    #[command(flatten)]
    pub change: ChangeArgs,
    #[command(flatten)]
    pub keys: DecryptArgs,
    #[command(flatten)]
    pub tmpdir: TmpdirArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A schema release up the chain.
    Release,
    /// Data down, sanitized.
    Refresh,
    /// Undo the last promotion.
    Rollback,
    /// List promotions.
    History,
}

impl Cli {
    /// Whether the flags ask for dbpromote's own version.
    pub fn wants_tool_version(&self) -> bool {
        self.print_version || self.version.as_deref() == Some("")
    }

    /// The mode the flags select.
    pub fn mode(&self) -> Mode {
        if self.refresh {
            Mode::Refresh
        } else if self.rollback {
            Mode::Rollback
        } else if self.history {
            Mode::History
        } else {
            Mode::Release
        }
    }
}

/// An environment's shell commands: the config file's, each replaced by
/// its flag when given.
#[derive(Debug, Clone, Default, Args)]
pub struct Commands {
    /// Migration command (default: the target environment's `migrate`).
    #[arg(long, value_name = "CMD")]
    pub migrate: Option<String>,
    /// Health check command (default: the target environment's `health_check`).
    #[arg(long, value_name = "CMD")]
    pub health_check: Option<String>,
    /// Downgrade command (default: the target environment's `downgrade`).
    #[arg(long, value_name = "CMD")]
    pub downgrade: Option<String>,
}

impl Commands {
    /// These commands, each replaced by `flags`' where that is set.
    pub fn overridden_by(self, flags: &Commands) -> Commands {
        Commands {
            migrate: flags.migrate.clone().or(self.migrate),
            health_check: flags.health_check.clone().or(self.health_check),
            downgrade: flags.downgrade.clone().or(self.downgrade),
        }
    }

    /// The commands that are set, by their names in the config file and
    /// in manifests.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("migrate", &self.migrate),
            ("health_check", &self.health_check),
            ("downgrade", &self.downgrade),
        ]
        .into_iter()
        .filter_map(|(name, cmd)| Some((name, cmd.as_deref()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_only_the_commands_they_give_and_named_lists_the_set_ones() {
        let config = Commands {
            migrate: Some("alembic upgrade head".into()),
            health_check: Some("./health.sh".into()),
            downgrade: None,
        };
        let flags = Commands {
            health_check: Some("./deep-health.sh".into()),
            downgrade: Some("alembic downgrade -1".into()),
            ..Commands::default()
        };
        let merged = config.overridden_by(&flags);
        assert_eq!(
            merged.named().collect::<Vec<_>>(),
            [
                ("migrate", "alembic upgrade head"),
                ("health_check", "./deep-health.sh"),
                ("downgrade", "alembic downgrade -1"),
            ]
        );
        assert_eq!(Commands::default().named().count(), 0);
    }
}
