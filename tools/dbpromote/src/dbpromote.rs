//! dbpromote: promote a database between environments.
//!
//! A release moves a schema version up the chain, rehearsed first on a
//! restored copy of the target; a refresh moves data down into a side
//! database that is sanitized and then swapped in by rename; a rollback
//! undoes either. Every promotion is recorded in a release manifest in the
//! target's store (written after each step, so a crash shows how far it
//! got), in the audit log and in the metrics. The tool composes the
//! library's snapshot, verification, restore and side-database pieces; it
//! never matches on the engine.
#![forbid(unsafe_code)]

pub mod cli;
mod history;
mod ops;
mod record;
mod refresh;
mod release;
mod rollback;

use cli::{Commands, Mode};
use dbsafe::cli::{EncodeArgs, Log};
use dbsafe::config::Config;
use dbsafe::{units, Encryption, Error, ExitCode, Keyring, Result};
use std::path::PathBuf;
use std::time::Duration;

/// An environment, as the config file and the flags define it.
#[derive(Debug, Clone)]
pub(crate) struct EnvSpec {
    pub name: String,
    /// The database URL as configured (it may carry a password: never print it).
    pub url: String,
    pub store: String,
    pub commands: Commands,
    pub sensitive: bool,
}

/// What every mode needs.
pub(crate) struct Ctx {
    /// The target environment's name (`--to`).
    pub to: String,
    pub args: cli::Cli,
    pub cfg: Config,
    pub log: Log,
    pub keys: Keyring,
    pub tmpdir: PathBuf,
    pub lock_timeout: Duration,
    pub grace: Option<Duration>,
}

impl Ctx {
    fn config_name(&self) -> String {
        self.cfg
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(no config file found)".into())
    }

    /// An environment from the config file, without the flags' overrides.
    pub fn env(&self, name: &str) -> Result<EnvSpec> {
        dbsafe::name::validate_env(name)?;
        let e = self.cfg.env(name).ok_or_else(|| {
            Error::usage(format!("environment {name} is not in the config file {}", self.config_name())).hint(format!(
                "add [env.{name}] with url and store to the config file (--config FILE or DBSAFE_CONFIG)"
            ))
        })?;
        let url = e.url.clone().ok_or_else(|| {
            Error::usage(format!("[env.{name}] in {} has no url", self.config_name()))
        })?;
        let store = self.cfg.store_for(name).ok_or_else(|| {
            Error::usage(format!("environment {name} has no store")).hint(format!(
                "set store in [env.{name}] or [defaults], or pass --store"
            ))
        })?;
        Ok(EnvSpec {
            name: name.into(),
            url,
            store,
            commands: Commands {
                migrate: e.migrate.clone(),
                health_check: e.health_check.clone(),
                downgrade: e.downgrade.clone(),
            },
            sensitive: e.sensitive,
        })
    }

    /// The target environment, with the flags' overrides.
    pub fn target(&self) -> Result<EnvSpec> {
        let a = &self.args;
        let mut env = match (self.env(&self.to), &a.store) {
            (Ok(env), _) => env,
            // The store flag alone is enough to read the history.
            (Err(_), Some(_)) if a.history => EnvSpec {
                name: self.to.clone(),
                url: String::new(),
                store: String::new(),
                commands: Commands::default(),
                sensitive: false,
            },
            (Err(e), _) => return Err(e),
        };
        if let Some(s) = &a.store {
            env.store = s.clone();
        }
        env.commands = env.commands.overridden_by(&a.commands);
        Ok(env)
    }

    /// The source environment of a release or refresh, with `--from-store`.
    pub fn source(&self) -> Result<EnvSpec> {
        let from = self.args.from.as_deref().ok_or_else(|| {
            Error::usage("--from ENV is required").hint("name the environment to promote from")
        })?;
        let mut env = self.env(from)?;
        if let Some(s) = &self.args.from_store {
            env.store = s.clone();
        }
        Ok(env)
    }

    /// The chain of environments from the config file.
    pub fn chain(&self) -> Vec<String> {
        self.cfg.defaults.chain.clone().unwrap_or_default()
    }

    /// How the backups this run takes of `env` into `store` are encrypted:
    /// the recipients of the environment (flags' variables, else the config
    /// file); without any, refused unless the config says `encrypt = false`.
    pub fn encryption(&self, env: &str, store: &str) -> Result<Encryption> {
        self.encode_args()
            .encryption_for(&self.cfg, env, Some(&format!("store {store}")))
    }

    /// Refuses (exit 2) a run that must restore one of `env`'s backups for
    /// `purpose` when they are encrypted and no identity was given.
    pub fn require_identity(&self, env: &EnvSpec, purpose: &str) -> Result<()> {
        if self.encryption(&env.name, &env.store)?.is_encrypted() && self.keys.is_empty() {
            return Err(Error::usage(format!(
                "backups of {} are encrypted, and the {purpose} must restore one: no identity to decrypt it with",
                env.name
            ))
            .hint("pass -i/--identity FILE (or DBSAFE_IDENTITY_FILE, or identity_file in [defaults])"));
        }
        Ok(())
    }

    /// How the backups this run takes of `env` are compressed.
    pub fn compression(&self, env: &str) -> Result<dbsafe::Compression> {
        self.encode_args().compression(&self.cfg, env)
    }

    fn encode_args(&self) -> EncodeArgs {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EncodeArgs {
            compress: var("DBSAFE_COMPRESS"),
            level: None,
            threads: Some(0),
            recipients: var("DBSAFE_RECIPIENTS").into_iter().collect(),
            recipients_file: var("DBSAFE_RECIPIENTS_FILE").map(PathBuf::from),
            passphrase_file: None,
            no_encrypt: false,
        }
    }
}

/// Whether the run was interrupted: the library's handler stops the
/// children, removes side databases and exits 130; meanwhile the step whose
/// child it stopped fails, and the run must not end as an ordinary failure.
pub(crate) fn interrupted() -> bool {
    dbsafe::cleanup::interrupted()
}

/// Runs dbpromote with parsed arguments.
pub fn run(args: cli::Cli) -> Result<ExitCode> {
    if args.wants_tool_version() {
        dbsafe::outln!("dbpromote {}", env!("CARGO_PKG_VERSION"))?;
        return Ok(ExitCode::Success);
    }
    let Some(to) = args.to.clone() else {
        return Err(Error::usage("--to ENV is required").hint("name the environment to promote to"));
    };
    let log = args.common.log("dbpromote");
    let cfg = Config::load(args.common.config.as_deref())?;
    let keys = args.keys.keyring(&cfg)?;
    let tmpdir = args.tmpdir.dir();
    let lock_timeout = dbsafe::cli::lock_timeout(args.lock_timeout.as_deref(), &cfg)?;
    let grace = args
        .grace
        .as_deref()
        .map(units::parse_duration)
        .transpose()?;
    check_flags(&args)?;
    let ctx = Ctx {
        to,
        args,
        cfg,
        log,
        keys,
        tmpdir,
        lock_timeout,
        grace,
    };
    match ctx.args.mode() {
        Mode::History => history::run(&ctx),
        Mode::Release => release::run(&ctx),
        Mode::Refresh => refresh::run(&ctx),
        Mode::Rollback => rollback::run(&ctx),
    }
}

/// Flags that make no sense in the chosen mode are usage errors, not silently ignored.
fn check_flags(a: &cli::Cli) -> Result<()> {
    let mode = a.mode();
    let misplaced =
        |flag: &str, allowed: &str| Err(Error::usage(format!("{flag} is for {allowed}")));
    if a.version.is_none() && mode == Mode::Release {
        return Err(Error::usage("a release needs --version V")
            .hint("or pass --refresh, --rollback or --history"));
    }
    if mode != Mode::Refresh {
        if a.sanitize.is_some() {
            return misplaced("--sanitize", "refreshes (--refresh)");
        }
        if a.backup.is_some() || a.latest_verified {
            return misplaced("--backup and --latest-verified", "refreshes (--refresh)");
        }
        if a.from_store.is_some() {
            return misplaced("--from-store", "refreshes (--refresh)");
        }
    }
    if matches!(mode, Mode::Rollback | Mode::History) && a.from.is_some() {
        return misplaced("--from", "releases and refreshes");
    }
    if mode == Mode::Refresh && a.version.is_some() {
        return misplaced(
            "--version",
            "releases and rollbacks (refreshes are named refresh-YYYYMMDD_HHMMSS)",
        );
    }
    Ok(())
}

/// What a dry run prints: every step, and nothing changed.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Plan {
    pub dry_run: bool,
    pub kind: String,
    pub version: String,
    pub from: Option<String>,
    pub to: String,
    pub target: String,
    pub store: String,
    pub steps: Vec<String>,
}

impl Plan {
    pub fn print(&self, ctx: &Ctx) -> Result<ExitCode> {
        if ctx.args.common.json {
            dbsafe::cli::print_json(self)?;
        } else {
            dbsafe::outln!(
                "dbpromote plan for the {} {} of {} (dry run, nothing changed):",
                self.kind,
                self.version,
                self.to
            )?;
            for (i, s) in self.steps.iter().enumerate() {
                dbsafe::outln!("  {}. {s}", i + 1)?;
            }
        }
        Ok(ExitCode::Success)
    }
}
