//! Engines: how a database becomes a byte stream and back.
//!
//! An engine knows byte streams, not stores, compression or keys. Tools ask
//! for the engine of a URL ([`open`]), for a structural check of a payload
//! ([`check_payload`]), for a scratch target to rehearse a restore into
//! ([`scratch`]) or for the home of a target's side databases
//! ([`side::home`]); each is a lookup in the engine registry
//! (`registry.rs`, one entry per engine), so they never match on the
//! engine themselves. Each engine is a folder (or a file) of its own;
//! `file.rs` holds what the file-backed ones share, `url.rs` the parser of
//! server URLs and `untar.rs` the one tar unpacker.

mod child;
mod dir;
mod duckdb;
mod file;
mod mysql;
mod postgres;
pub use postgres::roles as postgres_roles;
mod registry;
pub mod side;
mod sqlite;
mod untar;
mod url;

pub use postgres::data as pgdata;

use crate::error::Result;
use crate::meta::TableCount;
use crate::name::Payload;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What to include in a snapshot.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// Only these tables (empty: all).
    pub tables: Vec<String>,
    /// Leave these tables out.
    pub exclude_tables: Vec<String>,
    /// A physical base backup instead of a logical snapshot.
    pub base: bool,
    /// Where the engine may put temporary files.
    pub tmpdir: PathBuf,
}

/// What a snapshot recorded.
#[derive(Debug, Clone, Default)]
pub struct SnapshotInfo {
    /// Tables and exact row counts as they are in the snapshot.
    pub tables: Vec<TableCount>,
    /// Server or library version.
    pub engine_version: String,
    /// Engine-specific metadata.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// For base backups: the WAL range the backup needs.
    pub wal: Option<crate::meta::WalInfo>,
}

impl SnapshotInfo {
    /// What a logical snapshot recorded: its tables, the engine's version and
    /// engine-specific notes for the metadata.
    pub fn new<const N: usize>(
        tables: Vec<TableCount>,
        engine_version: impl Into<String>,
        extra: [(&str, serde_json::Value); N],
    ) -> SnapshotInfo {
        SnapshotInfo {
            tables,
            engine_version: engine_version.into(),
            extra: extra.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            wal: None,
        }
    }
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only these tables (empty: all).
    pub tables: Vec<String>,
    /// Drop existing objects first.
    pub clean: bool,
    /// Create the target when missing.
    pub create: bool,
    /// Where the engine may put temporary files.
    pub tmpdir: PathBuf,
    /// For base backups: where WAL comes from.
    pub wal: Option<WalSource>,
    /// Restore objects owned by the restoring role, not their recorded
    /// owners (PostgreSQL `--no-owner`); owners are kept by default.
    pub no_owner: bool,
    /// Do not create the roles the snapshot recorded (PostgreSQL).
    pub no_roles: bool,
    /// What the engine recorded when it took the snapshot (the metadata's
    /// `extra`): the roles and database properties a PostgreSQL restore
    /// recreates, the header settings a SQLite restore puts back.
    pub recorded: serde_json::Map<String, serde_json::Value>,
    /// Workers for a restore from a file ([`Engine::restore_file`]) where
    /// the engine restores in parallel; 0 or 1: one.
    pub jobs: usize,
}

/// What produced a payload, as its metadata says (all unknown for a bare stream).
///
/// A tar payload is a directory tree or a PostgreSQL base backup; the
/// engine named here tells which.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The engine that took the snapshot (`postgres`, `dir`, ...).
    pub engine: Option<String>,
    /// full or base.
    pub kind: Option<crate::Kind>,
    /// The database it came from.
    pub database: Option<String>,
    /// The source URL (without password).
    pub source: Option<String>,
    /// For base backups: the WAL range they need.
    pub wal: Option<crate::meta::WalInfo>,
    /// The engine's version, e.g. `15.8`.
    pub engine_version: Option<String>,
}

impl Origin {
    /// The origin recorded in an artifact's metadata.
    pub fn of(meta: Option<&crate::meta::Metadata>) -> Origin {
        match meta {
            None => Origin::default(),
            Some(m) => Origin {
                engine: Some(m.engine.clone()),
                kind: Some(if m.backup_type == "base" {
                    crate::Kind::Base
                } else {
                    crate::Kind::Full
                }),
                database: Some(m.database.clone()),
                source: Some(m.source.clone()),
                wal: m.wal.clone(),
                engine_version: Some(m.engine_version.clone()),
            },
        }
    }
}

/// Where a restored PostgreSQL base backup fetches its WAL from: the
/// `restore_command` for its postgresql.conf (`%f`, `%p` placeholders), as
/// [`crate::walarchive::restore_command`] builds it. The engine runs it and
/// knows nothing of the store or keys behind it.
#[derive(Debug, Clone, Default)]
pub struct WalSource {
    /// The shell command that copies WAL file `%f` to path `%p`.
    pub restore_command: String,
}

/// What a structural check of a payload found.
#[derive(Debug, Clone, Default)]
pub struct PayloadCheck {
    /// The checks that ran, for the report.
    pub checks: Vec<String>,
    /// What was wrong (empty: fine).
    pub problems: Vec<String>,
    /// Tables and row counts, when the check could count them.
    pub tables: Option<Vec<TableCount>>,
}

/// A database, as a source of snapshots or a target of restores.
pub trait Engine: Send {
    /// `sqlite`, `postgres`, ...
    fn engine(&self) -> &'static str;
    /// The payload this engine's snapshots have (`base`: a physical base
    /// backup), as its registry entry lists them.
    fn payload(&self, base: bool) -> Payload {
        registry::payload(self.engine(), base)
    }
    /// Database name or file stem, for artifact names.
    fn database(&self) -> String;
    /// The URL without password, for logs and metadata.
    fn url(&self) -> String;
    /// The host the database lives on.
    fn host(&self) -> String;
    /// Streams a consistent snapshot into `out`.
    fn snapshot(&self, opts: &SnapshotOptions, out: &mut dyn Write) -> Result<SnapshotInfo>;
    /// Whether the target exists.
    fn exists(&self) -> Result<bool>;
    /// Tables and exact row counts of the live database.
    fn tables(&self) -> Result<Vec<TableCount>>;
    /// Restores a payload stream into this target.
    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()>;
    /// Restores a payload held in a file; engines that can restore in
    /// parallel from a seekable copy use `opts.jobs` workers, the others
    /// stream it.
    fn restore_file(&self, payload: Payload, path: &Path, opts: &RestoreOptions) -> Result<()> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
        self.restore(payload, &mut file, opts)
    }
    /// Whether [`Engine::restore_file`] restores in parallel, so a decoded
    /// copy of the payload on disk is worth its space.
    fn restores_in_parallel(&self) -> bool {
        false
    }
    /// Removes the target (scratch databases and side files).
    fn drop_target(&self) -> Result<()>;
    /// Creates a named restore point in the WAL and switches to a new
    /// segment so it is archived at once; returns its WAL position and
    /// timeline. PostgreSQL only.
    fn restore_point(&self, name: &str) -> Result<(crate::timeline::Lsn, u32)> {
        let _ = name;
        Err(crate::Error::usage(format!(
            "restore points are PostgreSQL's; {} has none",
            self.url()
        )))
    }
    /// Whether replacing a non-empty target needs `--clean` (servers), or is
    /// a whole replacement anyway (files).
    fn replace_needs_clean(&self) -> bool {
        false
    }
}

/// The engine of a database URL.
pub fn open(url: &str) -> Result<Box<dyn Engine>> {
    registry::open(url)
}

/// Checks a payload's structure (`dbverify --level full`) with the engine
/// that made it (its `origin`; for a bare stream, the payload's own engine).
pub fn check_payload(
    payload: Payload,
    origin: &Origin,
    input: &mut dyn Read,
    tmpdir: &Path,
) -> Result<PayloadCheck> {
    (registry::reader(payload, origin)?.check)(payload, origin, input, tmpdir)
}

/// A scratch target to restore a payload into (`dbverify --level restore`);
/// `scratch_url` names a server for server engines.
pub fn scratch(
    payload: Payload,
    origin: &Origin,
    scratch_url: Option<&str>,
    tmpdir: &Path,
) -> Result<Box<dyn Engine>> {
    (registry::reader(payload, origin)?.scratch)(payload, origin, scratch_url, tmpdir)
}

/// Refuses to restore `payload` into `target` unless it is `want`; `takes`
/// says what the target takes.
fn expect_payload(
    payload: Payload,
    want: Payload,
    target: impl std::fmt::Display,
    takes: &str,
) -> Result<()> {
    if payload == want {
        return Ok(());
    }
    Err(crate::Error::usage(format!(
        "cannot restore a {} payload into {target}",
        payload.ext()
    ))
    .hint(takes))
}

/// The error for a target database that does not exist, without `--create`.
fn missing_target(url: &str) -> crate::Error {
    crate::Error::not_found(format!("database {url} does not exist"))
        .hint("pass --create to create it")
}

/// Prefix of the scratch databases `dbverify --level restore` makes on a server.
pub(crate) const SCRATCH_PREFIX: &str = "dbsafe_verify_";

/// A scratch database name that says who made it: this host (a short hash
/// of its name), the process and its start time, and a random part.
pub(crate) fn scratch_name() -> String {
    format!(
        "{SCRATCH_PREFIX}{}_{}_{:08x}",
        host_mark(),
        crate::cleanup::owner_tag().replace('-', "_"),
        rand::random::<u32>()
    )
}

fn host_mark() -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(crate::fsutil::host_name().as_bytes())[..4])
}

/// Whether a scratch database was left by a run of this host that is gone
/// (killed, or the machine restarted); another host's are never judged.
pub(crate) fn scratch_is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(SCRATCH_PREFIX) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    match parts[..] {
        [host, pid, start, _rnd] if host == host_mark() => {
            !crate::cleanup::owner_alive(&format!("{pid}-{start}"))
        }
        _ => false,
    }
}

/// Runs a pure filter of table names through include/exclude lists.
pub fn table_selected(name: &str, include: &[String], exclude: &[String]) -> bool {
    let matches = |list: &[String]| {
        list.iter()
            .any(|t| t == name || name.rsplit_once('.').is_some_and(|(_, bare)| bare == t))
    };
    (include.is_empty() || matches(include)) && !matches(exclude)
}

#[cfg(test)]
mod scratch_tests {
    #[test]
    fn scratch_names_say_whose_they_are() {
        let mine = super::scratch_name();
        assert!(mine.len() < 64, "{mine}");
        assert!(
            !super::scratch_is_stale(&mine),
            "this run's own scratch is not stale"
        );
        let mut dead = std::process::Command::new("true").spawn().expect("true");
        let pid = dead.id();
        dead.wait().unwrap();
        let parts: Vec<&str> = mine
            .trim_start_matches(super::SCRATCH_PREFIX)
            .split('_')
            .collect();
        let stale = format!("{}{}_{pid}_1_0000abcd", super::SCRATCH_PREFIX, parts[0]);
        assert!(super::scratch_is_stale(&stale));
        let other_host = format!("{}ffffffff_{pid}_1_0000abcd", super::SCRATCH_PREFIX);
        assert!(
            !super::scratch_is_stale(&other_host),
            "another host's are left alone"
        );
        assert!(
            !super::scratch_is_stale("dbsafe_verify_0123456789abcdef"),
            "old-style names are left alone"
        );
    }
}
