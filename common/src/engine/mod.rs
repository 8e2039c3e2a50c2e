//! Engines: how a database becomes a byte stream and back.
//!
//! An engine knows byte streams, not stores, compression or keys. Tools ask
//! for the engine of a URL ([`open`]), for a structural check of a payload
//! ([`check_payload`]) or for a scratch target to rehearse a restore into
//! ([`scratch`]); they never match on the engine themselves.

mod child;
mod dir;
mod duckdb;
mod mysql;
pub mod pgdata;
mod postgres;
pub use postgres::roles as postgres_roles;
pub mod side;
mod sqlite;
mod urlenc;

use crate::error::{Error, Result};
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

/// Where a restored PostgreSQL base backup fetches its WAL from.
#[derive(Debug, Clone, Default)]
pub struct WalSource {
    /// The store holding the WAL archive.
    pub store: String,
    /// age identity files for encrypted WAL.
    pub identity_files: Vec<PathBuf>,
    /// Passphrase file for passphrase-encrypted WAL.
    pub passphrase_file: Option<PathBuf>,
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
    /// The payload this engine's snapshots have.
    fn payload(&self, base: bool) -> Payload;
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
    /// Removes the target (scratch databases and side files).
    fn drop_target(&self) -> Result<()>;
    /// Whether replacing a non-empty target needs `--clean` (servers), or is
    /// a whole replacement anyway (files).
    fn replace_needs_clean(&self) -> bool {
        false
    }
}

/// The engine of a database URL.
pub fn open(url: &str) -> Result<Box<dyn Engine>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Box::new(sqlite::Sqlite::new(sqlite::path_of(path))));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(postgres::Postgres::new(url)?));
    }
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        return Ok(Box::new(mysql::Mysql::new(url)?));
    }
    if let Some(path) = url.strip_prefix("duckdb:") {
        return Ok(Box::new(duckdb::Duckdb::new(duckdb::path_of(path))));
    }
    if let Some(path) = url.strip_prefix("dir:") {
        return Ok(Box::new(dir::Dir::new(dir::path_of(path))));
    }
    let scheme = url.split(':').next().unwrap_or("");
    Err(
        Error::usage(format!("unsupported database URL scheme {scheme:?}"))
            .hint("use postgres://user@host:port/db (or postgresql://...), mysql://user@host:port/db (or mariadb://...), sqlite:PATH, duckdb:PATH or dir:PATH"),
    )
}

/// Checks a payload's structure (`dbverify --level full`).
pub fn check_payload(
    payload: Payload,
    origin: &Origin,
    input: &mut dyn Read,
    tmpdir: &Path,
) -> Result<PayloadCheck> {
    match payload {
        Payload::Sqlite => sqlite::check(input, tmpdir),
        Payload::Pgdump => postgres::check(input),
        Payload::Tar if origin.engine.as_deref() == Some("postgres") => {
            pgdata::check(input, origin, tmpdir)
        }
        Payload::Tar => tar_is_tree(origin).and_then(|()| dir::check(input)),
        Payload::Duckdb => duckdb::check(input, tmpdir),
        Payload::Sql => sql_is_mysql(origin).and_then(|()| mysql::check(input)),
    }
}

/// A scratch target to restore a payload into (`dbverify --level restore`);
/// `scratch_url` names a server for server engines.
pub fn scratch(
    payload: Payload,
    origin: &Origin,
    scratch_url: Option<&str>,
    tmpdir: &Path,
) -> Result<Box<dyn Engine>> {
    match payload {
        Payload::Sqlite => Ok(Box::new(sqlite::Sqlite::new(tmpdir.join("scratch.sqlite")))),
        Payload::Tar if origin.engine.as_deref() == Some("postgres") => {
            Ok(Box::new(pgdata::PgData::scratch(tmpdir, origin.clone())?))
        }
        Payload::Tar => {
            tar_is_tree(origin)?;
            Ok(Box::new(dir::Dir::new(tmpdir.join("scratch-tree"))))
        }
        Payload::Duckdb => Ok(Box::new(duckdb::Duckdb::new(tmpdir.join("scratch.duckdb")))),
        Payload::Sql => {
            sql_is_mysql(origin)?;
            let url = scratch_url.ok_or_else(|| {
                Error::usage("restoring a sql payload needs a MySQL/MariaDB server to restore into")
                    .hint("pass --scratch URL, e.g. --scratch mysql://root@localhost:3306/")
            })?;
            if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
                return Err(
                    Error::usage(format!("--scratch {url:?} is not a MySQL/MariaDB URL"))
                        .hint("pass --scratch mysql://user@host:port/ (or mariadb://...)"),
                );
            }
            Ok(Box::new(mysql::Mysql::scratch(url)?))
        }
        Payload::Pgdump => {
            let url = scratch_url.ok_or_else(|| {
                Error::usage("restoring a pgdump payload needs a PostgreSQL server to restore into")
                    .hint("pass --scratch URL, e.g. --scratch postgres://postgres@localhost:5432/")
            })?;
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(
                    Error::usage(format!("--scratch {url:?} is not a PostgreSQL URL"))
                        .hint("pass --scratch postgres://user@host:port/"),
                );
            }
            Ok(Box::new(postgres::Postgres::scratch(url)?))
        }
    }
}

/// Whether a tar payload is a directory tree: made by `dir:`, or a bare
/// tar stream without metadata. PostgreSQL base backups are tar too; they
/// are matched before this and never reach the directory engine.
fn tar_is_tree(origin: &Origin) -> Result<()> {
    match origin.engine.as_deref() {
        None | Some("dir") => Ok(()),
        Some("postgres") => Err(Error::usage(
            "base backups are handled by the PostgreSQL base-backup engine (engine::pgdata), not the directory engine",
        )),
        Some(other) => Err(Error::usage(format!(
            "a tar payload from engine {other:?} is not supported by this build"
        ))),
    }
}

/// Whether a sql payload is a MySQL/MariaDB dump (the only engine writing
/// sql payloads; a bare stream without metadata is taken for one).
fn sql_is_mysql(origin: &Origin) -> Result<()> {
    match origin.engine.as_deref() {
        None | Some("mysql") | Some("mariadb") => Ok(()),
        Some(other) => Err(Error::usage(format!(
            "a sql payload from engine {other:?} is not supported by this build"
        ))),
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
