//! The config file (SPEC §6): TOML from `--config`, `DBSAFE_CONFIG`,
//! `./dbsafe.toml` or `/etc/dbsafe/dbsafe.toml`.
//!
//! Unknown keys and invalid values are errors naming the file, line and key:
//! values are validated while they are parsed, so the TOML parser's position
//! is the one reported. Flags win over environment variables (clap handles
//! both), which win over this file, which wins over built-in defaults.

use crate::error::{Error, Result};
use crate::retention::Policy;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A duration written as `7d`, `26h`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::units::parse_duration(&s)
            .map(ConfigDuration)
            .map_err(|e| serde::de::Error::custom(e.message))
    }
}

fn compression<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<crate::Compression>, D::Error> {
    let s = String::deserialize(d)?;
    crate::Compression::parse(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(e.message))
}

/// `keep_within = "30d"`: an optional [`ConfigDuration`], as a [`Duration`].
pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    Ok(Option::<ConfigDuration>::deserialize(d)?.map(|c| c.0))
}

/// Settings that apply to every environment unless it overrides them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default store.
    pub store: Option<String>,
    /// Default compression.
    #[serde(default, deserialize_with = "compression")]
    pub compress: Option<crate::Compression>,
    /// Default compression level.
    pub level: Option<i32>,
    /// age recipients file.
    pub recipients_file: Option<PathBuf>,
    /// age recipients (public keys).
    pub recipients: Option<Vec<String>>,
    /// age identity file for reading artifacts.
    pub identity_file: Option<PathBuf>,
    /// Passphrase file.
    pub passphrase_file: Option<PathBuf>,
    /// Default environment name.
    pub env: Option<String>,
    /// dbpromote's release order.
    pub chain: Option<Vec<String>>,
    /// Lock wait.
    pub lock_timeout: Option<ConfigDuration>,
    /// Audit log for non-local stores.
    pub audit_log: Option<PathBuf>,
    /// Metrics textfile.
    pub metrics_file: Option<PathBuf>,
    /// Pushgateway URL.
    pub pushgateway: Option<String>,
    /// Default retention.
    pub retention: Option<Policy>,
    /// `false`: an artifact with no key may be written plain to a file or a
    /// store (as `--no-encrypt` allows it); unset or `true`: it is refused.
    pub encrypt: Option<bool>,
    /// Command run after a successful run (`--on-success`).
    pub on_success: Option<String>,
    /// Command run after a failed run (`--on-failure`).
    pub on_failure: Option<String>,
    /// Webhook each run POSTs its outcome to (`--notify`).
    pub notify: Option<String>,
}

/// One environment (`[env.NAME]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Database URL.
    pub url: Option<String>,
    /// Store for this environment's backups.
    pub store: Option<String>,
    /// Retention policy.
    pub retention: Option<Policy>,
    /// Whether refreshes from here need `--sanitize`.
    #[serde(default)]
    pub sensitive: bool,
    /// Migration command.
    pub migrate: Option<String>,
    /// Health check command.
    pub health_check: Option<String>,
    /// Downgrade command.
    pub downgrade: Option<String>,
    /// Compression override.
    #[serde(default, deserialize_with = "compression")]
    pub compress: Option<crate::Compression>,
    /// Recipients file override.
    pub recipients_file: Option<PathBuf>,
    /// `encrypt` override (see [`Defaults::encrypt`]).
    pub encrypt: Option<bool>,
    /// `on_success` override.
    pub on_success: Option<String>,
    /// `on_failure` override.
    pub on_failure: Option<String>,
    /// `notify` override.
    pub notify: Option<String>,
}

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[defaults]`.
    #[serde(default)]
    pub defaults: Defaults,
    /// `[env.NAME]` tables.
    #[serde(default)]
    pub env: BTreeMap<String, EnvConfig>,
    /// Where it was read from, if anywhere.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl Config {
    /// Loads the config: an explicit path must exist; the usual places are optional.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let from_env = std::env::var_os("DBSAFE_CONFIG").map(PathBuf::from);
        let path = match explicit.map(Path::to_path_buf).or(from_env) {
            Some(p) => Some(p),
            None => ["dbsafe.toml", "/etc/dbsafe/dbsafe.toml"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists()),
        };
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::usage(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let mut cfg = Config::parse(&text, &path)?;
        cfg.path = Some(path);
        Ok(cfg)
    }

    /// Parses config text; errors name `path`, the line and the key.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            Error::usage(format!(
                "invalid config file {}{line}: {}",
                path.display(),
                e.message()
            ))
        })?;
        for name in cfg.env.keys() {
            crate::name::validate_env(name).map_err(|e| {
                Error::usage(format!(
                    "invalid config file {}: [env.{name}]: {}",
                    path.display(),
                    e.message
                ))
            })?;
        }
        Ok(cfg)
    }

    /// The named environment's table, if configured.
    pub fn env(&self, name: &str) -> Option<&EnvConfig> {
        self.env.get(name)
    }

    /// Whether plain artifacts of an environment may go to files and
    /// stores without `--no-encrypt`: its own `encrypt`, else the default's.
    pub fn plain_allowed(&self, env: &str) -> bool {
        self.env(env)
            .and_then(|e| e.encrypt)
            .or(self.defaults.encrypt)
            == Some(false)
    }

    /// The store for an environment: its own, else the default.
    pub fn store_for(&self, env: &str) -> Option<String> {
        self.env(env)
            .and_then(|e| e.store.clone())
            .or_else(|| self.defaults.store.clone())
    }

    /// The retention for an environment: its own, else the default, else the runbook practice.
    pub fn retention_for(&self, env: &str) -> Policy {
        self.env(env)
            .and_then(|e| e.retention.clone())
            .or_else(|| self.defaults.retention.clone())
            .unwrap_or_else(|| builtin_retention(env))
    }
}

/// Runbook practice: development 7d, staging 14d, production 30d; keep at least 7.
pub fn builtin_retention(env: &str) -> Policy {
    let days = match env {
        "production" | "prod" => 30,
        "staging" | "stage" => 14,
        _ => 7,
    };
    Policy {
        keep_last: Some(7),
        keep_within: Some(Duration::from_secs(days * 86400)),
        ..Policy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
[defaults]
store = "/var/backups/dbsafe"
compress = "zstd"
recipients_file = "/etc/dbsafe/recipients.txt"
chain = ["development", "staging", "production"]

[env.production]
url = "postgres://app@db.prod:5432/app"
store = "s3://acme-backups/production"
retention = { keep_within = "30d", keep_last = 7 }
sensitive = true
migrate = "alembic upgrade head"
health_check = "./ops/health.sh"
downgrade = "alembic downgrade -1"

[env.staging]
url = "postgres://app@db.staging:5432/app"
retention = { keep_within = "14d", keep_last = 7 }
"#;

    #[test]
    fn parses_the_spec_example() {
        let c = Config::parse(SPEC_EXAMPLE, Path::new("dbsafe.toml")).unwrap();
        assert_eq!(
            c.store_for("production").unwrap(),
            "s3://acme-backups/production"
        );
        assert_eq!(c.store_for("staging").unwrap(), "/var/backups/dbsafe");
        assert!(c.env("production").unwrap().sensitive);
        assert_eq!(
            c.retention_for("staging").keep_within,
            Some(Duration::from_secs(14 * 86400))
        );
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let e = Config::parse(
            "[defaults]\nstore = \"/x\"\nstroe = \"/y\"\n",
            Path::new("/etc/d.toml"),
        )
        .unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Usage);
        assert!(e.message.contains("/etc/d.toml:3"), "{}", e.message);
        assert!(e.message.contains("stroe"), "{}", e.message);
    }

    #[test]
    fn invalid_values_name_the_line() {
        let e =
            Config::parse("[defaults]\n\ncompress = \"lz4\"\n", Path::new("c.toml")).unwrap_err();
        assert!(e.message.contains("c.toml:3"), "{}", e.message);
        assert!(e.message.contains("lz4"), "{}", e.message);
        let e = Config::parse(
            "[env.prod]\nretention = { keep_within = \"7x\" }\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        assert!(e.message.contains("c.toml:2"), "{}", e.message);
    }
}
