//! Artifact metadata (`NAME.meta.json`) and verification records (`NAME.verify.json`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The metadata format version.
pub const FORMAT: &str = "dbsafe/1";

/// A table and how many rows it had in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct TableCount {
    /// Qualified table name (`schema.table` where the engine has schemas).
    pub name: String,
    /// Exact row count.
    pub rows: u64,
}

/// The tool that wrote a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Tool name.
    pub name: String,
    /// Tool version.
    pub version: String,
}

impl ToolInfo {
    /// This build of `tool`.
    pub fn this(tool: &str) -> ToolInfo {
        ToolInfo {
            name: tool.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// WAL position of a base backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalInfo {
    /// Timeline the backup started on.
    pub timeline: u32,
    /// LSN at start.
    pub start_lsn: String,
    /// LSN at stop.
    pub stop_lsn: String,
    /// WAL file holding the start LSN.
    pub start_wal: String,
    /// WAL file holding the stop LSN.
    pub stop_wal: String,
    /// The cluster's WAL segment size in bytes (absent in older metadata: 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_size: Option<u64>,
}

impl WalInfo {
    /// The cluster's WAL segment size.
    pub fn seg_size(&self) -> crate::wal::SegSize {
        self.segment_size
            .and_then(crate::wal::SegSize::new)
            .unwrap_or_default()
    }
}

/// Everything known about an artifact (SPEC §3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    /// `dbsafe/1`.
    pub format: String,
    /// Name without layer extensions.
    pub backup_name: String,
    /// Artifact file name.
    pub file: String,
    /// `full` or `base`.
    pub backup_type: String,
    /// `sqlite`, `postgres`, ...
    pub engine: String,
    /// Server or library version.
    pub engine_version: String,
    /// Payload layer.
    pub payload: String,
    /// Environment.
    pub environment: String,
    /// Database name or file stem.
    pub database: String,
    /// Host the snapshot was taken on.
    pub host: String,
    /// Source URL, without password.
    pub source: String,
    /// UTC start, `YYYYMMDD_HHMMSS`.
    pub timestamp: String,
    /// RFC 3339 start.
    pub started_at: String,
    /// RFC 3339 end.
    pub finished_at: String,
    /// Wall time.
    pub duration_seconds: f64,
    /// Artifact bytes.
    pub size_bytes: u64,
    /// Payload bytes.
    pub raw_size_bytes: u64,
    /// sha256 of the artifact, hex.
    pub checksum: String,
    /// `sha256`.
    pub checksum_algorithm: String,
    /// `zstd`, `gzip` or `none`.
    pub compression: String,
    /// Compression level used, when compressed (with `--level auto`, the
    /// level most of the payload was compressed at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// zstd: payload bytes compressed at each level (`--level auto` moves it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compression_levels: BTreeMap<String, u64>,
    /// `age` or `none`.
    pub encryption: String,
    /// age public keys (empty for passphrase encryption).
    pub recipients: Vec<String>,
    /// Tables and their row counts in the snapshot.
    pub tables: Vec<TableCount>,
    /// Tool that wrote it.
    pub tool: ToolInfo,
    /// Free-form labels from `--label k=v`.
    pub labels: BTreeMap<String, String>,
    /// For base backups: the WAL range it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalInfo>,
    /// Engine-specific facts (file counts, manifest digests, warnings).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The result of a verification (`NAME.verify.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// Artifact file name.
    pub file: String,
    /// RFC 3339 time of the verification.
    pub verified_at: String,
    /// `quick`, `full` or `restore`.
    pub level: String,
    /// `pass` or `fail`.
    pub result: String,
    /// Matching tables / tables (restore level; 1.0 when not measured and passing).
    pub integrity_score: f64,
    /// What was found wrong.
    pub problems: Vec<String>,
    /// Checks that ran, in order.
    pub checks: Vec<String>,
    /// Tables found at restore level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableCount>,
    /// Wall time.
    pub duration_seconds: f64,
    /// Tool that wrote it.
    pub tool: ToolInfo,
}

impl VerifyRecord {
    /// A passing record of `file` at `level`, stamped now, that checks and problems are added to.
    pub fn start(file: String, level: &str, tool: &str) -> VerifyRecord {
        VerifyRecord {
            file,
            verified_at: chrono::Utc::now().to_rfc3339(),
            level: level.into(),
            result: "pass".into(),
            integrity_score: 1.0,
            problems: vec![],
            checks: vec![],
            tables: vec![],
            duration_seconds: 0.0,
            tool: ToolInfo::this(tool),
        }
    }

    /// A record of a verification that could not judge the artifact (no
    /// key, a key that does not fit, no scratch server): not a failure of
    /// the artifact, and never recorded over an earlier pass.
    pub fn unverified(file: String, level: &str, tool: &str, why: String) -> VerifyRecord {
        VerifyRecord {
            result: UNVERIFIED.into(),
            integrity_score: 0.0,
            problems: vec![why],
            ..VerifyRecord::start(file, level, tool)
        }
    }

    /// Whether the verification passed.
    pub fn passed(&self) -> bool {
        self.result == "pass"
    }

    /// Whether the artifact could not be judged at all.
    pub fn is_unverified(&self) -> bool {
        self.result == UNVERIFIED
    }
}

/// The `result` of a record that could not judge its artifact.
pub const UNVERIFIED: &str = "could-not-verify";

/// Compares row counts found with those expected; returns the problems and the score.
pub fn compare_tables(expected: &[TableCount], found: &[TableCount]) -> (Vec<String>, f64) {
    let found: BTreeMap<&str, u64> = found.iter().map(|t| (t.name.as_str(), t.rows)).collect();
    let mut problems = Vec::new();
    let mut matching = 0usize;
    for t in expected {
        match found.get(t.name.as_str()) {
            Some(&rows) if rows == t.rows => matching += 1,
            Some(&rows) => problems.push(format!(
                "table {}: {} rows, expected {}",
                t.name, rows, t.rows
            )),
            None => problems.push(format!("table {}: missing", t.name)),
        }
    }
    let score = if expected.is_empty() {
        1.0
    } else {
        matching as f64 / expected.len() as f64
    };
    (problems, score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, rows: u64) -> TableCount {
        TableCount {
            name: name.into(),
            rows,
        }
    }

    #[test]
    fn compare_scores_matching_tables_over_expected() {
        let (p, s) = compare_tables(&[t("a", 1), t("b", 2)], &[t("a", 1), t("b", 2), t("c", 9)]);
        assert!(p.is_empty());
        assert_eq!(s, 1.0);
        let (p, s) = compare_tables(&[t("a", 1), t("b", 2)], &[t("a", 1), t("b", 3)]);
        assert_eq!(p, vec!["table b: 3 rows, expected 2"]);
        assert_eq!(s, 0.5);
        let (p, s) = compare_tables(&[t("a", 1)], &[]);
        assert_eq!(p, vec!["table a: missing"]);
        assert_eq!(s, 0.0);
    }
}
