//! What every tool's command line shares: common flags, key flags, and the
//! `main` wrapper that turns a result into an exit code and a message.

use crate::error::{Error, ExitCode, Result};
use crate::keys::{Encryption, Keyring};
use clap::Args;
use std::path::PathBuf;

/// `-q`, `-v`, `--json`, `--config`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Print nothing but errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print the report as one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file [env: DBSAFE_CONFIG] (default: ./dbsafe.toml, /etc/dbsafe/dbsafe.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Merge Prometheus metrics into this textfile (node_exporter textfile collector).
    #[arg(long, global = true, value_name = "FILE", env = "DBSAFE_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Use a local store directory that group or others can write to (refused otherwise:
    /// whoever can write there can replace a backup).
    #[arg(long, global = true, env = "DBSAFE_ALLOW_SHARED_STORE")]
    pub allow_shared_store: bool,
    /// Push metrics to this Pushgateway (http://host:port); a failed push only warns.
    #[arg(long, global = true, value_name = "URL", env = "DBSAFE_PUSHGATEWAY")]
    pub pushgateway: Option<String>,
    /// Shell command run when the run succeeds, with DBSAFE_TOOL, DBSAFE_RESULT, DBSAFE_BACKUP,
    /// ... describing it; its failure only warns.
    #[arg(long, global = true, value_name = "CMD")]
    pub on_success: Option<String>,
    /// Shell command run when the run fails (same environment).
    #[arg(long, global = true, value_name = "CMD")]
    pub on_failure: Option<String>,
    /// POST the run's outcome as JSON (with a Slack-compatible `text`) to this URL; an
    /// unreachable webhook only warns.
    #[arg(long, global = true, value_name = "URL", env = "DBSAFE_NOTIFY")]
    pub notify: Option<String>,
}

impl CommonArgs {
    /// The diagnostics printer for `tool`, honouring `-q` and `-v`.
    pub fn log(&self, tool: &'static str) -> Log {
        // Every tool starts here: the run-wide choices its flags make.
        crate::store::allow_shared_stores(self.allow_shared_store);
        crate::notify::configure(
            self.on_success.clone(),
            self.on_failure.clone(),
            self.notify.clone(),
        );
        crate::output::init(Log {
            tool,
            quiet: self.quiet,
            verbose: self.verbose,
        })
    }

    /// Where metrics go: flags and environment, else the config file.
    pub fn metrics(&self, cfg: &crate::config::Config) -> crate::metrics::Sink {
        crate::metrics::Sink {
            file: self
                .metrics_file
                .clone()
                .or_else(|| cfg.defaults.metrics_file.clone()),
            pushgateway: self
                .pushgateway
                .clone()
                .or_else(|| cfg.defaults.pushgateway.clone()),
        }
    }
}

/// `--env` and `--database`: which series of a store a run looks at.
#[derive(Debug, Clone, Args)]
pub struct SeriesArgs {
    /// Only this environment's backups.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Only this database's backups.
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
}

impl SeriesArgs {
    /// Whether an artifact belongs to the series the flags name.
    pub fn matches(&self, name: &crate::ArtifactName) -> bool {
        self.env.as_ref().is_none_or(|v| &name.env == v)
            && self.database.as_ref().is_none_or(|d| &name.database == d)
    }
}

/// `--tmpdir`.
#[derive(Debug, Clone, Args)]
pub struct TmpdirArgs {
    /// Directory for temporary files (default: $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub tmpdir: Option<PathBuf>,
}

impl TmpdirArgs {
    /// The directory: the flag, else the system's temporary directory.
    pub fn dir(&self) -> PathBuf {
        self.tmpdir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// The flags of a run that changes a database: a dry run, and the typed
/// confirmation (the database's name) or `--yes` in its place.
#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    /// Do not ask for the typed confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// Print the plan, step by step, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ChangeArgs {
    /// Refuses up front (exit 4) when the confirmation of a change to
    /// `what` will be needed and cannot be asked: no `--yes`, no dry run,
    /// no terminal.
    pub fn require_confirmation_possible(&self, what: &str) -> Result<()> {
        if self.yes || self.dry_run || crate::term::can_prompt() {
            return Ok(());
        }
        let mut refusal = crate::term::no_terminal(&format!("change {what}"));
        refusal.message.push_str("; nothing was changed");
        Err(refusal)
    }

    /// The dry run's step for the confirmation of a change to `name`.
    pub fn confirm_step(&self, name: &str) -> String {
        if self.yes {
            "confirmation skipped (--yes)".into()
        } else {
            format!("ask to type {name:?} to confirm")
        }
    }

    /// Asks for `name` to be typed before `tool` does `action` ([`crate::term::confirm_typed`]);
    /// `--yes` answers for the person.
    pub fn confirm(&self, tool: &str, action: &str, name: &str) -> Result<()> {
        crate::term::confirm_typed(tool, action, name, self.yes)
    }
}

/// Keys to read encrypted artifacts with.
#[derive(Debug, Clone, Args)]
pub struct DecryptArgs {
    /// age identity file (repeatable).
    #[arg(
        short = 'i',
        long = "identity",
        value_name = "FILE",
        env = "DBSAFE_IDENTITY_FILE",
        value_delimiter = ','
    )]
    pub identity: Vec<PathBuf>,
    /// File whose first line is the passphrase.
    #[arg(long, value_name = "FILE", env = "DBSAFE_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl DecryptArgs {
    /// Loads the keyring of the run ([`Keyring::for_run`]).
    pub fn keyring(&self, cfg: &crate::config::Config) -> Result<Keyring> {
        Keyring::for_run(&self.identity, self.passphrase_file.as_deref(), cfg)
    }
}

/// zstd's workers by default on a machine of `cores`: the ones beyond the
/// two the database and its dump tool keep busy, up to 4.
fn default_threads(cores: usize) -> u32 {
    cores.saturating_sub(2).min(4) as u32
}

/// `--level`: adaptive or fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelArg {
    /// zstd's adaptive level.
    Auto,
    /// A fixed level.
    Fixed(i32),
}

fn parse_level(s: &str) -> std::result::Result<LevelArg, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(LevelArg::Auto);
    }
    s.parse()
        .map(LevelArg::Fixed)
        .map_err(|_| format!("{s:?} is not a level: a number or auto"))
}

/// Keys and compression to write artifacts with.
#[derive(Debug, Clone, Args)]
pub struct EncodeArgs {
    /// Compression: zstd (default, frame checksums on), gzip or none.
    #[arg(long, value_name = "ALGO", env = "DBSAFE_COMPRESS")]
    pub compress: Option<String>,
    /// Compression level: `auto` (zstd's default: the level moves between 1 and 6 so that
    /// compression keeps up with the source, as `zstd --adapt` does; the levels used go into the
    /// metadata), or a fixed level (zstd 1-19; gzip 1-9, default 6).
    #[arg(long, value_name = "N|auto", value_parser = parse_level)]
    pub level: Option<LevelArg>,
    /// zstd worker threads (0: compress on the pipeline thread). Default: on a machine of more
    /// than 2 cores, the cores beyond 2 (up to 4), which the database and the dump do not need;
    /// otherwise 0.
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// age recipient public key (repeatable, or comma-separated in DBSAFE_RECIPIENTS).
    #[arg(
        short = 'r',
        long = "recipient",
        value_name = "AGE_PUBKEY",
        env = "DBSAFE_RECIPIENTS",
        value_delimiter = ','
    )]
    pub recipients: Vec<String>,
    /// File of age recipients, one a line.
    #[arg(long, value_name = "FILE", env = "DBSAFE_RECIPIENTS_FILE")]
    pub recipients_file: Option<PathBuf>,
    /// Encrypt with the passphrase on this file's first line instead.
    #[arg(long, value_name = "FILE", env = "DBSAFE_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Write the artifact unencrypted to a file or a store (refused without it when no key is
    /// given; config: encrypt = false).
    #[arg(long)]
    pub no_encrypt: bool,
}

impl EncodeArgs {
    /// zstd worker threads: `--threads`, else the cores beyond 2 (up to 4).
    pub fn threads(&self) -> u32 {
        self.threads.unwrap_or_else(|| {
            default_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
        })
    }

    /// The compression level: the flag's, else the config's; `None` is the
    /// codec's default (adaptive for zstd).
    pub fn level_for(&self, cfg: &crate::config::Config) -> Option<i32> {
        match self.level {
            Some(LevelArg::Auto) => None,
            Some(LevelArg::Fixed(n)) => Some(n),
            None => cfg.defaults.level,
        }
    }

    /// The compression: flag or environment, else config, else zstd.
    pub fn compression(
        &self,
        cfg: &crate::config::Config,
        env: &str,
    ) -> Result<crate::Compression> {
        match &self.compress {
            Some(c) => crate::Compression::parse(c),
            None => Ok(cfg
                .env(env)
                .and_then(|e| e.compress)
                .or(cfg.defaults.compress)
                .unwrap_or(crate::Compression::Zstd)),
        }
    }

    /// The encryption of an artifact written to `dest` (a file or a store,
    /// named for the message; `None`: stdout). Encryption is explicit
    /// (SPEC §8): without a key, a file or a store takes a plain artifact
    /// only with `--no-encrypt` or `encrypt = false` in the config (exit 2
    /// otherwise); stdout takes it with a warning. `--no-encrypt` next to a
    /// key from the command line or the environment is exit 2; it overrides
    /// the config's recipients.
    pub fn encryption_for(
        &self,
        cfg: &crate::config::Config,
        env: &str,
        dest: Option<&str>,
    ) -> Result<Encryption> {
        if self.no_encrypt {
            if !self.recipients.is_empty()
                || self.recipients_file.is_some()
                || self.passphrase_file.is_some()
            {
                return Err(crate::Error::usage(
                    "--no-encrypt and a key (-r, --recipients-file, --passphrase-file or their environment variables) contradict each other",
                )
                .hint("drop --no-encrypt to encrypt, or the key to write the artifact plain"));
            }
            return Ok(Encryption::None);
        }
        let enc = self.encryption(cfg, env)?;
        if enc.is_encrypted() || cfg.plain_allowed(env) {
            return Ok(enc);
        }
        match dest {
            None => {
                crate::output::warn("no recipients or passphrase: the artifact on stdout is not encrypted");
                Ok(enc)
            }
            Some(d) => Err(crate::Error::usage(format!(
                "no recipients or passphrase: the artifact would be written unencrypted to {d}"
            ))
            .hint("give -r/--recipient, --recipients-file or --passphrase-file (or recipients in the config), or pass --no-encrypt to write it plain")),
        }
    }

    /// The encryption: flags or environment, else the config's recipients.
    pub fn encryption(&self, cfg: &crate::config::Config, env: &str) -> Result<Encryption> {
        let mut files: Vec<PathBuf> = self.recipients_file.iter().cloned().collect();
        let mut inline = self.recipients.clone();
        if files.is_empty() && inline.is_empty() && self.passphrase_file.is_none() {
            files.extend(cfg.env(env).and_then(|e| e.recipients_file.clone()));
            if files.is_empty() {
                files.extend(cfg.defaults.recipients_file.clone());
            }
            inline.extend(cfg.defaults.recipients.clone().unwrap_or_default());
        }
        Encryption::from_sources(&inline, &files, self.passphrase_file.as_deref())
    }
}

pub use crate::output::Log;

/// Runs a tool's body and turns the outcome into an exit status.
///
/// Installs the interrupt policy, prints `tool: error: ...` with the hint,
/// and treats a broken stdout pipe as a plain failure with a short message.
pub fn main_with(
    tool: &'static str,
    body: impl FnOnce() -> Result<ExitCode>,
) -> std::process::ExitCode {
    run_body(tool, body)
}

/// Parses the command line of `C` (clap's errors carry the tool's prefix and
/// exit 2), then runs the tool's body as [`main_with`] does.
pub fn main_parsed<C: clap::Parser>(
    tool: &'static str,
    body: impl FnOnce(C) -> Result<ExitCode>,
) -> std::process::ExitCode {
    match C::try_parse() {
        Ok(cli) => run_body(tool, || body(cli)),
        Err(e) => std::process::ExitCode::from(crate::output::clap_error(tool, &e).code() as u8),
    }
}

fn run_body(tool: &'static str, body: impl FnOnce() -> Result<ExitCode>) -> std::process::ExitCode {
    crate::cleanup::install_signal_handlers(tool);
    let started = std::time::Instant::now();
    let mut message = String::new();
    let code = match body() {
        Ok(code) => code,
        Err(_) if crate::cleanup::interrupted() => {
            // The signal handler is removing temporaries and ends the
            // process with 130; let it finish rather than race it.
            std::thread::sleep(std::time::Duration::from_secs(5));
            ExitCode::Interrupted
        }
        Err(e) => {
            let log = crate::output::init(Log {
                tool,
                quiet: false,
                verbose: false,
            });
            // A reader of stdout that went away is no failure to report.
            if e.kind != crate::error::Kind::ReaderGone {
                log.error(&e);
            }
            message = e.message.clone();
            e.code()
        }
    };
    crate::notify::finish(tool, code.code(), &message, started);
    std::process::ExitCode::from(code.code() as u8)
}

/// How long to wait for a lock: the flag, else the config file, else not at all.
pub fn lock_timeout(
    flag: Option<&str>,
    cfg: &crate::config::Config,
) -> Result<std::time::Duration> {
    match flag {
        Some(d) => crate::units::parse_duration(d),
        None => Ok(cfg.defaults.lock_timeout.map(|d| d.0).unwrap_or_default()),
    }
}

/// Parses `k=v` labels.
pub fn parse_labels(items: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| Error::usage(format!("invalid label {s:?}: use key=value")))
        })
        .collect()
}

pub use crate::output::print_json;

/// The `--help` paragraph on remote stores and the environment each reads,
/// for the tools' `after_help` (the man pages list every variable).
#[macro_export]
macro_rules! remote_stores_help {
    () => {
        "Remote stores: s3://bucket/prefix (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID/
AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN or AWS_PROFILE, else web identity, container or
instance credentials; DBSAFE_S3_PATH_STYLE, DBSAFE_S3_PART_SIZE, DBSAFE_S3_PARTS_IN_FLIGHT,
DBSAFE_S3_RETRIES, DBSAFE_S3_TIMEOUT), gs://bucket/prefix (GOOGLE_APPLICATION_CREDENTIALS,
else the metadata server), az://container/prefix (AZURE_STORAGE_CONNECTION_STRING, or
AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or a managed identity).
"
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_or_yes_never_needs_a_terminal_and_the_plan_says_how_it_confirms() {
        let change = |yes, dry_run| ChangeArgs { yes, dry_run };
        assert!(change(true, false)
            .require_confirmation_possible("staging")
            .is_ok());
        assert!(change(false, true)
            .require_confirmation_possible("staging")
            .is_ok());
        assert_eq!(
            change(true, false).confirm_step("app"),
            "confirmation skipped (--yes)"
        );
        assert_eq!(
            change(false, true).confirm_step("app"),
            "ask to type \"app\" to confirm"
        );
        assert!(change(true, false)
            .confirm("dbrestore", "replace app", "app")
            .is_ok());
    }

    #[test]
    fn zstd_workers_take_only_the_cores_beyond_two() {
        assert_eq!(default_threads(1), 0);
        assert_eq!(default_threads(2), 0);
        assert_eq!(default_threads(3), 1);
        assert_eq!(default_threads(8), 4);
    }
}
