//! Release manifests (`STORE/releases/{env}/{version}.json`) and the rules
//! of promotion between environments (SPEC §5, dbpromote).
//!
//! Two kinds of promotion, because data must never flow up: a *release*
//! moves a schema version one step up the chain of environments, and only
//! once it succeeded on the environment below; a *refresh* moves data down.
//! The rules are pure functions of the chain and the manifests, tested
//! without a database; reading and writing manifests goes through the
//! [`Store`] trait, so local and S3 stores behave alike. A manifest names
//! every backup a promotion relies on, which is what pins them against
//! `dbprune`.

use crate::error::{Error, Result};
use crate::meta::ToolInfo;
use crate::store::{self, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The manifest format version.
pub const FORMAT: &str = "dbsafe-release/1";

/// Release or refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A schema version moving up the chain.
    Release,
    /// Data moving down, sanitized.
    Refresh,
}

impl Kind {
    /// `release` or `refresh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Release => "release",
            Kind::Refresh => "refresh",
        }
    }
}

/// Where a promotion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Under way (or the run died: the steps say how far it got).
    Running,
    /// Done, and the target is on the new version or data.
    Success,
    /// A step failed; the steps and the report say what state the target is in.
    Failed,
    /// Refused before the target was changed (no confirmation, sessions in the way).
    Refused,
    /// Done, then undone by `dbpromote --rollback`.
    RolledBack,
}

impl Status {
    /// `running`, `success`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Refused => "refused",
            Status::RolledBack => "rolled-back",
        }
    }
}

/// A backup a promotion used or made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRef {
    /// Artifact file name in the store's `backups/`.
    pub name: String,
    /// The store holding it.
    pub store: String,
    /// The environment it was taken of.
    pub environment: String,
    /// sha256 of the artifact.
    pub checksum: String,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Whether it passed verification before it was used.
    pub verified: bool,
}

/// One step of a promotion or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Stable step name (`backup`, `rehearsal-migrate`, `swap`, ...).
    pub name: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Wall time.
    pub duration_seconds: f64,
    /// `ok`, `failed` or `skipped`.
    pub result: String,
    /// What it did or why it failed.
    pub detail: String,
}

/// How a promotion was undone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    /// `swap-previous`, `downgrade` or `restore-backup`.
    pub method: String,
    /// Who ran it.
    pub user: String,
    /// On which host.
    pub host: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// `success` or `failed`.
    pub status: String,
    /// Its steps.
    pub steps: Vec<Step>,
    /// The database that was live before the rollback, kept under this name.
    pub kept_database: Option<String>,
}

/// A release manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// Release or refresh.
    pub kind: Kind,
    /// The version (`refresh-YYYYMMDD_HHMMSS` for refreshes).
    pub version: String,
    /// Source environment.
    pub from: String,
    /// Target environment.
    pub to: String,
    /// The target database's name.
    pub database: String,
    /// The target URL, without password.
    pub target: String,
    /// Refreshes: the source backup whose data went into the target.
    pub source_backup: Option<BackupRef>,
    /// Releases: the backup of the target taken before it changed.
    pub pre_release_backup: Option<BackupRef>,
    /// Refreshes: the target's old database, kept as the rollback point.
    pub previous_database: Option<String>,
    /// Releases: the manifest that allowed this one (the same version on `from`).
    pub gate: Option<String>,
    /// Refreshes: the sanitize script and its sha256.
    pub sanitize: Option<String>,
    /// The commands run (`migrate`, `health_check`, `downgrade`).
    pub commands: std::collections::BTreeMap<String, String>,
    /// Who ran it.
    pub user: String,
    /// On which host.
    pub host: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339), once it has.
    pub finished_at: Option<String>,
    /// Wall time so far.
    pub duration_seconds: f64,
    /// Refreshes: how long the target was unavailable during the swap.
    pub swap_ms: Option<u64>,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// Final status.
    pub status: Status,
    /// Set once the promotion has been rolled back (or a rollback was tried).
    pub rollback: Option<Rollback>,
    /// Earlier attempts of the same version on the same environment, kept
    /// whole so the backups they name stay pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_attempts: Vec<serde_json::Value>,
    /// The tool that wrote it.
    pub tool: ToolInfo,
}

/// The steps of a promotion that change the target itself; the others
/// rehearse on a copy, check, or record.
pub const TARGET_STEPS: [&str; 4] = ["migrate", "health-check", "downgrade", "swap"];

impl Manifest {
    /// Whether a step that changes the target ran ([`TARGET_STEPS`]).
    pub fn changed_target(&self) -> bool {
        self.steps
            .iter()
            .any(|s| TARGET_STEPS.contains(&s.name.as_str()) && s.result != "skipped")
    }

    /// Whether its downgrade command ran and succeeded (after a failed release).
    pub fn downgraded(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.name == "downgrade" && s.result == "ok")
    }

    /// A new running manifest, stamped now, by this user on this host.
    pub fn new(
        kind: Kind,
        version: &str,
        from: &str,
        to: &str,
        database: &str,
        target: &str,
    ) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            kind,
            version: version.into(),
            from: from.into(),
            to: to.into(),
            database: database.into(),
            target: target.into(),
            source_backup: None,
            pre_release_backup: None,
            previous_database: None,
            gate: None,
            sanitize: None,
            commands: Default::default(),
            user: crate::fsutil::current_user(),
            host: crate::fsutil::host_name(),
            started_at: now(),
            finished_at: None,
            duration_seconds: 0.0,
            swap_ms: None,
            steps: Vec::new(),
            status: Status::Running,
            rollback: None,
            previous_attempts: Vec::new(),
            tool: ToolInfo::this("dbpromote"),
        }
    }

    /// The key this manifest is stored under.
    pub fn key(&self) -> String {
        manifest_key(&self.to, &self.version)
    }

    /// When it started, for ordering.
    pub fn started(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.started_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `releases/{env}/{version}.json`.
pub fn manifest_key(env: &str, version: &str) -> String {
    format!("{}/{env}/{version}.json", store::RELEASES)
}

/// The version of a refresh started at `at`: `refresh-YYYYMMDD_HHMMSS`.
pub fn refresh_version(at: DateTime<Utc>) -> String {
    format!("refresh-{}", at.format("%Y%m%d_%H%M%S"))
}

/// A version must make a file name: letters, digits, `.`, `_`, `-`, `+`.
pub fn validate_version(v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 100
        && !v.starts_with('.')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("invalid --version {v:?}"))
            .hint("use letters, digits, '.', '_', '-' or '+' (e.g. v2.3.1 or 2025.01.18)"))
    }
}

/// Where an environment sits in the chain.
fn position(chain: &[String], env: &str) -> Option<usize> {
    chain.iter().position(|e| e == env)
}

/// Checks that a release may go from `from` to `to`: `to` is the next
/// environment up the chain. Returns whether `from` must show the version
/// succeeded there first (every environment but the chain's first).
pub fn release_route(chain: &[String], from: &str, to: &str) -> Result<bool> {
    if chain.is_empty() {
        return Err(Error::usage(
            "releases follow the chain of environments, and the config file has none",
        )
        .hint("add chain = [\"development\", \"staging\", \"production\"] to [defaults]"));
    }
    let Some(i) = position(chain, from) else {
        return Err(Error::usage(format!(
            "--from {from} is not in the chain {}",
            chain.join(" → ")
        )));
    };
    match chain.get(i + 1) {
        Some(next) if next == to => Ok(i > 0),
        Some(next) => Err(Error::refused(format!(
            "a release goes one step up the chain {}: from {from} the next environment is {next}, not {to}",
            chain.join(" → ")
        ))
        .hint(format!("promote to {next} first: dbpromote --from {from} --to {next} --version V"))),
        None => Err(Error::refused(format!(
            "{from} is the last environment of the chain {}; there is nothing above it",
            chain.join(" → ")
        ))),
    }
}

/// Checks that a refresh moves data down (or sideways outside the chain),
/// never up: the target must not sit above the source.
pub fn refresh_route(chain: &[String], from: &str, to: &str) -> Result<()> {
    if from == to {
        return Err(Error::usage(format!("--from and --to are both {to}")));
    }
    if let (Some(f), Some(t)) = (position(chain, from), position(chain, to)) {
        if t > f {
            return Err(Error::refused(format!(
                "a refresh moves data down the chain {}, and {to} is above {from}: data must never flow up",
                chain.join(" → ")
            ))
            .hint("to move a schema up, make a release: dbpromote --from A --to B --version V"));
        }
    }
    Ok(())
}

/// The gate of a release: `version` must have been promoted successfully to `from`.
pub fn check_gate(
    found: Option<&Manifest>,
    from: &str,
    version: &str,
    store: &str,
) -> Result<String> {
    let key = manifest_key(from, version);
    match found {
        Some(m) if m.status == Status::Success => Ok(format!("{key} ({}, finished {})", m.status.as_str(), m.finished_at.as_deref().unwrap_or("?"))),
        Some(m) => Err(Error::refused(format!(
            "version {version} was not promoted successfully to {from}: its manifest {key} in store {store} says {}",
            m.status.as_str()
        ))
        .hint(format!("promote {version} to {from} successfully first; nothing was changed"))),
        None => Err(Error::refused(format!(
            "version {version} has not been promoted to {from}: store {store} has no release manifest {key}"
        ))
        .hint(format!("promote {version} to {from} first; nothing was changed"))),
    }
}

/// Reads one manifest; `None` when there is none.
pub fn read(store: &dyn Store, env: &str, version: &str) -> Result<Option<Manifest>> {
    read_key(store, &manifest_key(env, version))
}

fn read_key(store: &dyn Store, key: &str) -> Result<Option<Manifest>> {
    match store.read_small(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::failed(format!(
                "release manifest {key} in store {} is not valid: {e}",
                store.describe()
            ))
        }),
    }
}

/// Writes a manifest atomically (through [`Store::write_small`]).
pub fn write(store: &dyn Store, m: &Manifest) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(m).map_err(|e| Error::failed(e.to_string()))?;
    json.push(b'\n');
    store.write_small(&m.key(), &json)
}

/// Every manifest of `env`, oldest first.
pub fn history(store: &dyn Store, env: &str) -> Result<Vec<Manifest>> {
    let prefix = format!("{}/{env}", store::RELEASES);
    let mut out = Vec::new();
    for o in store.list(&prefix)? {
        let rel = o.key.strip_prefix(&format!("{prefix}/")).unwrap_or(&o.key);
        if rel.contains('/') || !rel.ends_with(".json") {
            continue;
        }
        if let Some(m) = read_key(store, &o.key)? {
            out.push(m);
        }
    }
    sort_history(&mut out);
    Ok(out)
}

/// The backups the release manifests in `store` rely on, by artifact file
/// name: the pins `dbprune` never deletes.
///
/// A manifest pins its source backup, its pre-release backup and those of
/// the earlier attempts it keeps; nothing else it mentions is a pin.
pub fn pinned(store: &dyn Store) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for o in store.list(store::RELEASES)? {
        if !o.key.ends_with(".json") {
            continue;
        }
        if let Some(bytes) = store.read_small(&o.key)? {
            let pins: Pins = serde_json::from_slice(&bytes).map_err(|e| {
                Error::failed(format!("release manifest {} is not valid JSON: {e}", o.key))
                    .hint("fix or remove it; pins cannot be read")
                    .with_source(e)
            })?;
            pins.collect(&mut out);
        }
    }
    Ok(out)
}

/// The part of a [`Manifest`] that pins backups, read on its own so that
/// a manifest of an older format still pins what it names.
#[derive(Deserialize)]
struct Pins {
    #[serde(default)]
    source_backup: Option<PinnedRef>,
    #[serde(default)]
    pre_release_backup: Option<PinnedRef>,
    #[serde(default)]
    previous_attempts: Vec<Pins>,
}

/// A backup reference as a manifest holds it: a [`BackupRef`], or (written
/// by hand) the artifact's key or file name alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum PinnedRef {
    Ref { name: String },
    Name(String),
}

impl PinnedRef {
    /// The artifact's file name.
    fn file(&self) -> &str {
        let (PinnedRef::Ref { name } | PinnedRef::Name(name)) = self;
        name.rsplit('/').next().unwrap_or(name)
    }
}

impl Pins {
    fn collect(&self, out: &mut BTreeSet<String>) {
        for r in [&self.source_backup, &self.pre_release_backup]
            .into_iter()
            .flatten()
        {
            out.insert(r.file().to_string());
        }
        for p in &self.previous_attempts {
            p.collect(out);
        }
    }
}

/// Oldest first, by start time, then version.
pub fn sort_history(list: &mut [Manifest]) {
    list.sort_by(|a, b| {
        a.started()
            .cmp(&b.started())
            .then(a.version.cmp(&b.version))
    });
}

/// The promotion a rollback undoes: the newest one that changed `env` and
/// was not undone yet (`history` oldest first), when it succeeded, or
/// `version` when that is it. A promotion with a later one after it is
/// refused: undoing it would undo the later one too, whose manifest would
/// still say it stands. A newest one that failed or is running is named,
/// never passed over for the success before it.
pub fn rollback_candidate<'a>(
    history: &'a [Manifest],
    version: Option<&str>,
    env: &str,
) -> Result<&'a Manifest> {
    // What stands on the target: a promotion that succeeded, one that failed
    // after it changed the target, and one that is running (or died).
    let standing = |m: &&Manifest| match m.status {
        Status::Success | Status::Running => true,
        Status::Failed => m.changed_target(),
        _ => false,
    };
    let newest = history.iter().rev().find(standing).ok_or_else(|| {
        Error::not_found(format!("{env} has no promotion to roll back"))
            .hint(format!("dbpromote --history --to {env} lists them"))
    })?;
    let m = match version {
        Some(v) => history
            .iter()
            .rev()
            .find(|m| m.version == v)
            .ok_or_else(|| {
                Error::not_found(format!("no release manifest for version {v} on {env}"))
            })?,
        None => newest,
    };
    let refused = |why: String| {
        Err(Error::refused(why).hint(format!("dbpromote --history --to {env} lists them")))
    };
    match m.status {
        Status::Running => refused(format!(
            "{} on {env} is still running, or its run died: roll it back by name once no promotion runs (--version {})",
            m.version, m.version
        )),
        Status::Failed if !m.changed_target() => refused(format!(
            "{} failed before it changed {env}: there is nothing to roll back",
            m.version
        )),
        Status::Failed if version.is_none() => refused(format!(
            "the newest promotion of {env}, {}, failed: its report says what state {env} is in; roll it back by name (--version {})",
            m.version, m.version
        )),
        Status::Success | Status::Failed if !std::ptr::eq(m, newest) => refused(format!(
            "{} is not the newest promotion of {env}: {} came after it; roll that back first",
            m.version, newest.version
        )),
        Status::Success | Status::Failed => Ok(m),
        other => refused(format!(
            "{} on {env} is {}; there is nothing to roll back",
            m.version,
            other.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Vec<String> {
        ["development", "staging", "production"]
            .map(String::from)
            .into()
    }

    fn manifest(version: &str, status: Status, started: &str) -> Manifest {
        let mut m = Manifest::new(
            Kind::Release,
            version,
            "staging",
            "production",
            "app",
            "postgres://h/app",
        );
        m.status = status;
        m.started_at = started.into();
        m
    }

    fn backup(name: &str) -> BackupRef {
        BackupRef {
            name: name.into(),
            store: "/s".into(),
            environment: "production".into(),
            checksum: "00".into(),
            taken_at: "2024-01-01T00:00:00Z".into(),
            verified: true,
        }
    }

    #[test]
    fn pins_are_the_backups_manifests_and_their_earlier_attempts_rely_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&dir.path().display().to_string(), true).unwrap();
        let mut earlier = manifest("1.0", Status::Failed, "2024-01-01T00:00:00Z");
        earlier.pre_release_backup = Some(backup("production_app_full_20240101_000000.pgdump.zst"));
        let mut m = manifest("1.0", Status::Success, "2024-01-02T00:00:00Z");
        m.pre_release_backup = Some(backup("production_app_full_20240102_000000.pgdump.zst"));
        m.previous_attempts = vec![serde_json::to_value(&earlier).unwrap()];
        // Other strings that look like backup names are not pins.
        m.commands.insert(
            "migrate".into(),
            "echo production_app_full_20230101_000000.pgdump.zst".into(),
        );
        m.previous_database = Some("production_app_full_20230102_000000.pgdump.zst".into());
        write(store.as_ref(), &m).unwrap();
        let mut r = Manifest::new(
            Kind::Refresh,
            "refresh-1",
            "production",
            "staging",
            "app",
            "x",
        );
        r.source_backup = Some(backup("production_app_full_20240103_000000.pgdump.zst"));
        write(store.as_ref(), &r).unwrap();
        store
            .write_small(
                &manifest_key("staging", "by-hand"),
                br#"{"pre_release_backup": "backups/staging_app_full_20240104_000000.pgdump.zst",
                     "note": "staging_app_full_20230101_000000.pgdump.zst"}"#,
            )
            .unwrap();
        let pins: Vec<String> = pinned(store.as_ref()).unwrap().into_iter().collect();
        assert_eq!(
            pins,
            [
                "production_app_full_20240101_000000.pgdump.zst",
                "production_app_full_20240102_000000.pgdump.zst",
                "production_app_full_20240103_000000.pgdump.zst",
                "staging_app_full_20240104_000000.pgdump.zst",
            ]
        );
    }

    #[test]
    fn an_unreadable_manifest_stops_the_pin_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&dir.path().display().to_string(), true).unwrap();
        store
            .write_small(&manifest_key("production", "1.0"), b"{not json")
            .unwrap();
        let e = pinned(store.as_ref()).unwrap_err();
        assert!(e.to_string().contains("is not valid JSON"), "{e}");
    }

    #[test]
    fn releases_go_one_step_up_and_need_the_gate_except_from_the_first() {
        assert!(!release_route(&chain(), "development", "staging").unwrap());
        assert!(release_route(&chain(), "staging", "production").unwrap());
        let e = release_route(&chain(), "development", "production").unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Refused);
        assert!(
            e.message.contains("next environment is staging"),
            "{}",
            e.message
        );
        assert_eq!(
            release_route(&chain(), "production", "staging")
                .unwrap_err()
                .code(),
            crate::ExitCode::Refused
        );
        assert_eq!(
            release_route(&chain(), "qa", "staging").unwrap_err().code(),
            crate::ExitCode::Usage
        );
        assert_eq!(
            release_route(&[], "a", "b").unwrap_err().code(),
            crate::ExitCode::Usage
        );
    }

    #[test]
    fn refreshes_never_move_data_up() {
        refresh_route(&chain(), "production", "staging").unwrap();
        refresh_route(&chain(), "production", "development").unwrap();
        refresh_route(&chain(), "production", "scratch").unwrap();
        assert_eq!(
            refresh_route(&chain(), "staging", "production")
                .unwrap_err()
                .code(),
            crate::ExitCode::Refused
        );
        assert_eq!(
            refresh_route(&chain(), "staging", "staging")
                .unwrap_err()
                .code(),
            crate::ExitCode::Usage
        );
    }

    #[test]
    fn the_gate_needs_a_successful_manifest() {
        let ok = manifest("v1", Status::Success, "2025-01-18T01:00:00Z");
        assert!(check_gate(Some(&ok), "staging", "v1", "/s")
            .unwrap()
            .starts_with("releases/staging/v1.json"));
        let failed = manifest("v1", Status::Failed, "2025-01-18T01:00:00Z");
        let e = check_gate(Some(&failed), "staging", "v1", "/s").unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Refused);
        assert!(e.message.contains("says failed"), "{}", e.message);
        let e = check_gate(None, "staging", "v2", "/s").unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Refused);
        assert!(
            e.message.contains("releases/staging/v2.json"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rollback_takes_the_newest_promotion_that_stands_on_the_target() {
        let mut h = vec![
            manifest("v2", Status::Failed, "2025-01-18T03:00:00Z"),
            manifest("v1", Status::Success, "2025-01-18T01:00:00Z"),
            manifest("v0", Status::Success, "2025-01-17T01:00:00Z"),
        ];
        sort_history(&mut h);
        assert_eq!(
            h.iter().map(|m| m.version.as_str()).collect::<Vec<_>>(),
            ["v0", "v1", "v2"]
        );
        let code = |h: &[Manifest], v: Option<&str>| {
            rollback_candidate(h, v, "production").unwrap_err().code()
        };
        // v2 failed in its rehearsal: the target is on v1.
        assert_eq!(
            rollback_candidate(&h, None, "production").unwrap().version,
            "v1"
        );
        assert_eq!(code(&h, Some("v2")), crate::ExitCode::Refused);
        // v0 has v1 after it.
        assert_eq!(code(&h, Some("v0")), crate::ExitCode::Refused);
        // v2 failed on the target: it is named, never passed over for v1.
        h[2].steps.push(Step {
            name: "migrate".into(),
            started_at: String::new(),
            duration_seconds: 0.0,
            result: "failed".into(),
            detail: String::new(),
        });
        assert_eq!(code(&h, None), crate::ExitCode::Refused);
        assert_eq!(code(&h, Some("v1")), crate::ExitCode::Refused);
        assert_eq!(
            rollback_candidate(&h, Some("v2"), "production")
                .unwrap()
                .version,
            "v2"
        );
        assert_eq!(
            rollback_candidate(&h, Some("v9"), "production")
                .unwrap_err()
                .code(),
            crate::ExitCode::NotFound
        );
        assert_eq!(
            rollback_candidate(&[], None, "production")
                .unwrap_err()
                .code(),
            crate::ExitCode::NotFound
        );
    }

    #[test]
    fn versions_make_file_names() {
        for v in [
            "v1",
            "2025.01.18",
            "v2.3.1+build-7",
            "refresh-20250118_010000",
        ] {
            validate_version(v).unwrap();
        }
        for v in ["", "../x", "a/b", ".hidden", "v 1"] {
            assert!(validate_version(v).is_err(), "{v}");
        }
    }

    #[test]
    fn manifests_round_trip_with_kebab_case_status() {
        let m = manifest("v1", Status::RolledBack, "2025-01-18T01:00:00Z");
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["status"], "rolled-back");
        assert_eq!(json["kind"], "release");
        let back = serde_json::from_value::<Manifest>(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        assert_eq!(m.key(), "releases/production/v1.json");
        let at = DateTime::parse_from_rfc3339("2025-01-18T01:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(refresh_version(at), "refresh-20250118_010203");
    }
}
