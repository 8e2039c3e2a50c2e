//! What a store holds: artifacts grouped in series, their sidecars, and selection.

use crate::artifact::{Artifact, Sidecar};
use crate::error::{Error, Result};
use crate::meta::{Metadata, VerifyRecord};
use crate::name::ArtifactName;
use crate::store::{self, ObjectInfo, Store};
use chrono::{DateTime, Utc};

/// Suffix of the environment that safety backups taken before a restore go to.
pub const SAFETY_SUFFIX: &str = "-safety";

pub use crate::artifact::parse_sha256_line;

/// An artifact in a store.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The parsed name.
    pub name: ArtifactName,
    /// Its object.
    pub object: ObjectInfo,
}

impl Entry {
    /// The artifact's key.
    pub fn key(&self) -> &str {
        &self.object.key
    }
    /// The key of one of its sidecars.
    pub fn sidecar(&self, s: Sidecar) -> String {
        s.of(&self.object.key)
    }
    /// The file name.
    pub fn file(&self) -> String {
        self.name.to_string()
    }
}

/// Every artifact under `backups/`, oldest first.
pub fn list(store: &dyn Store) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = store
        .list(store::BACKUPS)?
        .into_iter()
        .filter_map(|object| {
            ArtifactName::parse(object.file_name())
                .ok()
                .map(|name| Entry { name, object })
        })
        .collect();
    out.sort_by(|a, b| {
        a.name
            .timestamp
            .cmp(&b.name.timestamp)
            .then(a.object.key.cmp(&b.object.key))
    });
    Ok(out)
}

/// The metadata sidecar of an entry, if present.
pub fn read_meta(store: &dyn Store, e: &Entry) -> Result<Option<Metadata>> {
    Artifact::entry(store, e).meta()
}

/// The verification record of an entry, if any.
pub fn read_verify(store: &dyn Store, e: &Entry) -> Result<Option<VerifyRecord>> {
    Artifact::entry(store, e).verify_record()
}

/// The checksum recorded in an entry's `.sha256` sidecar.
pub fn read_checksum(store: &dyn Store, e: &Entry) -> Result<Option<String>> {
    Artifact::entry(store, e).expected_sha256()
}

/// How to pick artifacts in a store.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Only this environment.
    pub env: Option<String>,
    /// Only this database.
    pub database: Option<String>,
    /// The newest of the series.
    pub latest: bool,
    /// Exactly this `YYYYMMDD_HHMMSS`.
    pub timestamp: Option<String>,
    /// The newest at or before this time.
    pub before: Option<DateTime<Utc>>,
    /// A file name or backup name.
    pub name: Option<String>,
    /// Only artifacts of this payload: the one the restore target takes, so
    /// a SQLite and a PostgreSQL database of one name are never confused.
    pub payload: Option<crate::Payload>,
}

impl Selector {
    fn matches_series(&self, e: &Entry) -> bool {
        let env_ok = match &self.env {
            Some(env) => &e.name.env == env,
            // Safety backups are picked only when asked for by environment.
            None => !e.name.env.ends_with(SAFETY_SUFFIX),
        };
        env_ok
            && self.database.as_ref().is_none_or(|d| &e.name.database == d)
            && self.payload.is_none_or(|p| e.name.payload == p)
    }
}

/// Picks one artifact; several matching series is an error that lists them (exit 2).
pub fn select_one(entries: &[Entry], sel: &Selector) -> Result<Entry> {
    if let Some(name) = &sel.name {
        return entries
            .iter()
            .find(|e| &e.file() == name || &e.name.backup_name() == name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no backup named {name}")));
    }
    let candidates: Vec<&Entry> = entries
        .iter()
        .filter(|e| sel.matches_series(e))
        .filter(|e| sel.timestamp.as_ref().is_none_or(|t| &e.name.stamp() == t))
        .filter(|e| sel.before.is_none_or(|b| e.name.timestamp <= b))
        .collect();
    let mut series: Vec<String> = candidates.iter().map(|e| e.name.series_id()).collect();
    series.sort();
    series.dedup();
    match series.len() {
        0 => Err(Error::not_found(describe_miss(sel))),
        1 => Ok((*candidates.last().expect("non-empty")).clone()),
        _ => Err(
            Error::usage(format!("several series match: {}", series.join(", ")))
                .hint("narrow with --env and --database"),
        ),
    }
}

fn describe_miss(sel: &Selector) -> String {
    let mut what = vec![];
    if let Some(e) = &sel.env {
        what.push(format!("env {e}"));
    }
    if let Some(d) = &sel.database {
        what.push(format!("database {d}"));
    }
    if let Some(t) = &sel.timestamp {
        what.push(format!("timestamp {t}"));
    }
    if let Some(b) = &sel.before {
        what.push(format!("before {}", b.to_rfc3339()));
    }
    if what.is_empty() {
        "no backup in the store".into()
    } else {
        format!("no backup matches {}", what.join(", "))
    }
}

/// The newest artifact of every series, oldest series first.
pub fn newest_per_series(entries: &[Entry]) -> Vec<Entry> {
    let mut map: std::collections::BTreeMap<String, Entry> = Default::default();
    for e in entries {
        map.insert(e.name.series_id(), e.clone());
    }
    map.into_values().collect()
}
