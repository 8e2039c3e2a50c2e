//! Artifact names: `{env}_{database}_{kind}_{YYYYMMDD_HHMMSS}.{payload}[.zst|.gz][.age]`.
//!
//! Pure functions from strings to data and back, so that listing a store,
//! retention and restore selection never guess at a name's meaning.

use crate::error::{Error, Result};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use std::fmt;

/// What the innermost layer of an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// pg_dump custom format.
    Pgdump,
    /// A SQL text dump.
    Sql,
    /// A SQLite database file.
    Sqlite,
    /// A DuckDB database file.
    Duckdb,
    /// A tar stream (base backup or directory tree).
    Tar,
}

impl Payload {
    /// The file extension, which is also the metadata value.
    pub fn ext(self) -> &'static str {
        match self {
            Payload::Pgdump => "pgdump",
            Payload::Sql => "sql",
            Payload::Sqlite => "sqlite",
            Payload::Duckdb => "duckdb",
            Payload::Tar => "tar",
        }
    }
    /// The payload named by an extension.
    pub fn from_ext(s: &str) -> Option<Payload> {
        Some(match s {
            "pgdump" => Payload::Pgdump,
            "sql" => Payload::Sql,
            "sqlite" => Payload::Sqlite,
            "duckdb" => Payload::Duckdb,
            "tar" => Payload::Tar,
            _ => return None,
        })
    }
}

/// The compression layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd, frame checksums on.
    Zstd,
    /// gzip.
    Gzip,
    /// No compression.
    None,
}

impl Compression {
    /// Parses `zstd`, `gzip` (or `gz`) and `none`.
    pub fn parse(s: &str) -> Result<Compression> {
        match s {
            "zstd" | "zst" => Ok(Compression::Zstd),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            _ => Err(Error::usage(format!(
                "unknown compression {s:?}: use zstd, gzip or none"
            ))),
        }
    }
    /// The name used in metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
    fn ext(self) -> Option<&'static str> {
        match self {
            Compression::Zstd => Some("zst"),
            Compression::Gzip => Some("gz"),
            Compression::None => None,
        }
    }
}

/// A self-contained snapshot, or a PostgreSQL base backup that needs WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A self-contained snapshot.
    Full,
    /// A physical base backup.
    Base,
}

impl Kind {
    /// `full` or `base`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Base => "base",
        }
    }
}

/// The parts of an artifact's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactName {
    /// Environment, e.g. `production`.
    pub env: String,
    /// Database name or file stem.
    pub database: String,
    /// full or base.
    pub kind: Kind,
    /// UTC start of the snapshot.
    pub timestamp: DateTime<Utc>,
    /// The innermost layer.
    pub payload: Payload,
    /// The compression layer.
    pub compression: Compression,
    /// Whether the artifact is age-encrypted.
    pub encrypted: bool,
}

const TS_FORMAT: &str = "%Y%m%d_%H%M%S";

/// Checks that an environment name can stand in an artifact name.
pub fn validate_env(env: &str) -> Result<()> {
    if env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::usage(format!(
            "invalid environment name {env:?}: use letters, digits and '-' only"
        )));
    }
    Ok(())
}

/// Makes a database name or file stem safe to stand in an artifact name.
pub fn sanitize_database(db: &str) -> String {
    let s: String = db
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        "db".into()
    } else {
        s
    }
}

/// The database name of a file-backed database: its file stem, sanitized.
pub fn file_database(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    sanitize_database(&stem)
}

/// Suffix of the environment that safety backups taken before a restore go to.
pub const SAFETY_SUFFIX: &str = "-safety";

impl ArtifactName {
    /// The series this artifact belongs to as people read it: `{env}_{database}_{kind}`.
    pub fn series(&self) -> String {
        format!("{}_{}_{}", self.env, self.database, self.kind.as_str())
    }
    /// What makes two artifacts one series: the environment, the database,
    /// the kind and the engine's payload, so a SQLite and a PostgreSQL
    /// database of the same name never share `--latest`, retention or health.
    pub fn series_id(&self) -> String {
        format!("{}.{}", self.series(), self.payload.ext())
    }
    /// Whether this is a safety backup taken before a restore overwrote a target.
    pub fn is_safety(&self) -> bool {
        self.env.ends_with(SAFETY_SUFFIX)
    }
    /// The layer extensions: `.pgdump.zst.age`.
    pub fn extension(&self) -> String {
        let mut s = format!(".{}", self.payload.ext());
        if let Some(c) = self.compression.ext() {
            s.push('.');
            s.push_str(c);
        }
        if self.encrypted {
            s.push_str(".age");
        }
        s
    }
    /// The timestamp as it stands in names: `20250118_010000`.
    pub fn stamp(&self) -> String {
        self.timestamp.format(TS_FORMAT).to_string()
    }
    /// The backup name without layer extensions (the `backup_name` in metadata).
    pub fn backup_name(&self) -> String {
        format!("{}_{}", self.series(), self.stamp())
    }
    /// The file name of the `_latest` pointer of this series.
    pub fn latest_name(&self) -> String {
        format!("{}_latest{}", self.series(), self.extension())
    }

    /// Parses a file name (without directories). Sidecar names are not artifacts.
    pub fn parse(file: &str) -> Result<ArtifactName> {
        let bad = || Error::usage(format!("{file:?} is not a dbsafe artifact name"));
        // The timestamp is the one fixed-width anchor: find `_{kind}_YYYYMMDD_HHMMSS.`
        for kind in [Kind::Full, Kind::Base] {
            let marker = format!("_{}_", kind.as_str());
            let mut search_end = file.len();
            while let Some(pos) = file[..search_end].rfind(&marker) {
                let rest = &file[pos + marker.len()..];
                if rest.len() > 16 && rest.as_bytes()[15] == b'.' {
                    if let Ok(naive) = NaiveDateTime::parse_from_str(&rest[..15], TS_FORMAT) {
                        let head = &file[..pos];
                        let (env, database) = head.split_once('_').ok_or_else(bad)?;
                        let exts: Vec<&str> = rest[16..].split('.').collect();
                        let payload = Payload::from_ext(exts[0]).ok_or_else(bad)?;
                        let mut compression = Compression::None;
                        let mut encrypted = false;
                        let mut i = 1;
                        if let Some(c) = exts.get(i) {
                            match *c {
                                "zst" => (compression, i) = (Compression::Zstd, i + 1),
                                "gz" => (compression, i) = (Compression::Gzip, i + 1),
                                _ => {}
                            }
                        }
                        if exts.get(i) == Some(&"age") {
                            encrypted = true;
                            i += 1;
                        }
                        if i != exts.len() || validate_env(env).is_err() || database.is_empty() {
                            return Err(bad());
                        }
                        return Ok(ArtifactName {
                            env: env.to_string(),
                            database: database.to_string(),
                            kind,
                            timestamp: Utc.from_utc_datetime(&naive),
                            payload,
                            compression,
                            encrypted,
                        });
                    }
                }
                search_end = pos;
            }
        }
        Err(bad())
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.backup_name(), self.extension())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArtifactName {
        ArtifactName {
            env: "production".into(),
            database: "trading_signals".into(),
            kind: Kind::Full,
            timestamp: Utc.with_ymd_and_hms(2025, 1, 18, 1, 0, 0).unwrap(),
            payload: Payload::Pgdump,
            compression: Compression::Zstd,
            encrypted: true,
        }
    }

    #[test]
    fn formats_the_spec_example() {
        assert_eq!(
            sample().to_string(),
            "production_trading_signals_full_20250118_010000.pgdump.zst.age"
        );
        assert_eq!(sample().series(), "production_trading_signals_full");
        assert_eq!(
            sample().latest_name(),
            "production_trading_signals_full_latest.pgdump.zst.age"
        );
    }

    #[test]
    fn parses_what_it_formats_including_underscored_databases() {
        let n = sample();
        assert_eq!(ArtifactName::parse(&n.to_string()).unwrap(), n);
        let mut m = n.clone();
        m.database = "full_base_full".into();
        m.compression = Compression::None;
        m.encrypted = false;
        assert_eq!(ArtifactName::parse(&m.to_string()).unwrap(), m);
    }

    #[test]
    fn rejects_sidecars_latest_links_and_noise() {
        for s in [
            "production_db_full_20250118_010000.pgdump.zst.age.sha256",
            "production_db_full_20250118_010000.meta.json",
            "production_db_full_latest.pgdump.zst",
            "production_db_full_2025011_010000.pgdump",
            "random.txt",
            ".tmp.production_db_full_20250118_010000.sqlite",
        ] {
            assert!(ArtifactName::parse(s).is_err(), "{s} parsed");
        }
    }
}
