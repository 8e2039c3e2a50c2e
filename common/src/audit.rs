//! The audit log: one JSON object a line for every restore, deletion, promotion and rollback.
//!
//! The log is a layer around a store, not part of it (SPEC §4): a local
//! store keeps it in `STORE/audit.log`; for a remote store it is a local
//! file, `DBSAFE_AUDIT_LOG` or `$XDG_STATE_HOME/dbsafe/audit.log`
//! ([`log_for`]).

use crate::error::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One audit entry (SPEC §4). Targets are stored without passwords.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// UTC time, RFC 3339.
    pub time: String,
    /// The tool that acted.
    pub tool: String,
    /// What it did: `restore`, `prune-delete`, `promote`, ...
    pub action: String,
    /// Who ran it.
    pub user: String,
    /// On which host.
    pub host: String,
    /// The backup acted on.
    pub backup: String,
    /// Where it went, without password.
    pub target: String,
    /// `success` or `failure`.
    pub result: String,
    /// How long it took.
    pub duration_seconds: f64,
    /// Anything else worth keeping.
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// A new entry stamped now, by this user on this host.
    pub fn new(tool: &str, action: &str, backup: &str, target: &str) -> AuditEntry {
        AuditEntry {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            tool: tool.into(),
            action: action.into(),
            user: crate::fsutil::current_user(),
            host: crate::fsutil::host_name(),
            backup: backup.into(),
            target: target.into(),
            result: "success".into(),
            duration_seconds: 0.0,
            details: serde_json::Value::Null,
        }
    }
}

/// An audit log open for appending. A run opens it before it acts: a run
/// whose log cannot be written is refused before it changes anything, and
/// its entries go to the file checked then, never to a link planted in its
/// place meanwhile.
pub struct Log {
    path: PathBuf,
    file: std::fs::File,
}

impl Log {
    /// Opens the audit log at `path` (created 0600 in a private directory):
    /// a regular file, never through a link.
    pub fn open(path: &Path) -> Result<Log> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                crate::fsutil::create_private_dir(dir)?;
            }
        }
        let file = crate::fsutil::open_regular(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600),
            path,
            "audit log",
        )?;
        Ok(Log {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Opens the audit log of `store` ([`log_for`]).
    pub fn of(store: &dyn crate::Store) -> Result<Log> {
        Log::open(&log_for(store))
    }

    /// Where it is, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line (one write, O_APPEND), durable when this returns.
    pub fn append(&self, entry: &AuditEntry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).expect("audit entries serialize");
        line.push(b'\n');
        (&self.file)
            .write_all(&line)
            .context("writing the audit log")?;
        self.file.sync_data().context("writing the audit log")
    }
}

/// Where the audit log of `store` lives.
pub fn log_for(store: &dyn crate::Store) -> std::path::PathBuf {
    log_of(&store.describe())
}

/// Where the audit log of the store at `location` lives.
fn log_of(location: &str) -> std::path::PathBuf {
    match crate::store::local_dir(location) {
        Some(dir) => dir.join("audit.log"),
        None => default_log_path(),
    }
}

/// The audit log for stores that are not local directories (SPEC §4).
pub fn default_log_path() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("DBSAFE_AUDIT_LOG") {
        return p.into();
    }
    let state = std::env::var("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".local/state")
        });
    state.join("dbsafe/audit.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_stores_keep_their_audit_log_inside_remote_ones_on_this_host() {
        assert_eq!(
            log_of("/srv/backups"),
            std::path::PathBuf::from("/srv/backups/audit.log")
        );
        assert_eq!(log_of("s3://bucket/prefix"), default_log_path());
    }
}
