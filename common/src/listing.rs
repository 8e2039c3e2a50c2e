//! What a store holds, for people and scripts (`dbverify --list`): every
//! backup with its time, kind, engine, size, encryption, verification and
//! pins, safety backups apart, and for PostgreSQL the window a point-in-time
//! recovery can reach on each timeline, as `pgbackrest info` and `restic
//! snapshots` show theirs.

use crate::catalog::{self, Entry};
use crate::error::Result;
use crate::health;
use crate::name::Kind;
use crate::store::Store;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// One backup.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The artifact's file name.
    pub file: String,
    /// `env_database_kind`.
    pub series: String,
    /// Environment.
    pub environment: String,
    /// Database.
    pub database: String,
    /// `full` (a logical dump or a file copy) or `base` (a PostgreSQL base backup).
    pub kind: String,
    /// The engine that took it (from its metadata; the payload when that is missing).
    pub engine: String,
    /// When it was taken (UTC, RFC 3339).
    pub time: String,
    /// Seconds since then.
    pub age_seconds: i64,
    /// Bytes in the store.
    pub size_bytes: u64,
    /// `age` or `none`.
    pub encryption: String,
    /// `zstd`, `gzip` or `none`.
    pub compression: String,
    /// The last verification: `pass`, `fail` or `could-not-verify`; `null` if never verified.
    pub verified: Option<String>,
    /// Its level.
    pub verified_level: Option<String>,
    /// When it ran.
    pub verified_at: Option<String>,
    /// Whether a promotion manifest pins it (dbprune never deletes it).
    pub pinned: bool,
}

/// The reach of point-in-time recovery on one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The timeline.
    pub timeline: u32,
    /// `live`, `ancestor` or `branch` (see [`health::TimelineHealth`]).
    pub role: String,
    /// From the oldest base backup's time.
    pub from: Option<String>,
    /// To the newest archived WAL segment's time.
    pub to: Option<String>,
    /// The newest archived segment.
    pub newest_segment: Option<String>,
    /// Missing ranges: recovery cannot cross them.
    pub gaps: Vec<String>,
}

/// The listing of a store.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The store.
    pub store: String,
    /// Backups, oldest first.
    pub backups: Vec<Listed>,
    /// Safety backups taken before restores, oldest first.
    pub safety: Vec<Listed>,
    /// Per timeline, when the store holds WAL.
    pub recovery_windows: Vec<Window>,
}

/// Lists `store`, narrowed to environment `env` and database `database` when given.
pub fn list(
    store: &dyn Store,
    env: Option<&str>,
    database: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Listing> {
    let pins = crate::release::pinned(store)?;
    let wanted = |e: &Entry| {
        let base_env = e
            .name
            .env
            .strip_suffix(catalog::SAFETY_SUFFIX)
            .unwrap_or(&e.name.env);
        env.is_none_or(|v| v == base_env) && database.is_none_or(|d| d == e.name.database)
    };
    let (mut backups, mut safety) = (Vec::new(), Vec::new());
    for e in catalog::list(store)?.into_iter().filter(|e| wanted(e)) {
        let listed = describe(store, &e, &pins, now)?;
        if e.name.is_safety() {
            safety.push(listed);
        } else {
            backups.push(listed);
        }
    }
    let oldest_base = backups
        .iter()
        .filter(|b| b.kind == Kind::Base.as_str())
        .map(|b| b.time.clone())
        .next();
    let recovery_windows = match health::wal_health(store, now)? {
        Some(wal) => wal
            .timelines
            .into_iter()
            .map(|t| Window {
                timeline: t.timeline,
                role: t.role,
                from: oldest_base.clone(),
                to: t
                    .tip
                    .newest_age_seconds
                    .map(|age| (now - Duration::seconds(age)).to_rfc3339()),
                newest_segment: t.tip.newest,
                gaps: t.tip.gaps,
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Listing {
        store: store.describe(),
        backups,
        safety,
        recovery_windows,
    })
}

fn describe(
    store: &dyn Store,
    e: &Entry,
    pins: &std::collections::BTreeSet<String>,
    now: DateTime<Utc>,
) -> Result<Listed> {
    let meta = catalog::read_meta(store, e)?;
    let record = catalog::read_verify(store, e)?;
    let time = e.name.timestamp;
    Ok(Listed {
        file: e.file(),
        series: e.name.series(),
        environment: e.name.env.clone(),
        database: e.name.database.clone(),
        kind: e.name.kind.as_str().to_string(),
        engine: meta
            .map(|m| m.engine)
            .unwrap_or_else(|| e.name.payload.ext().to_string()),
        time: time.to_rfc3339(),
        age_seconds: (now - time).num_seconds(),
        size_bytes: e.object.size,
        encryption: if e.name.encrypted { "age" } else { "none" }.into(),
        compression: e.name.compression.as_str().into(),
        verified: record.as_ref().map(|r| r.result.clone()),
        verified_level: record.as_ref().map(|r| r.level.clone()),
        verified_at: record.map(|r| r.verified_at),
        pinned: pins.contains(&e.file()),
    })
}
