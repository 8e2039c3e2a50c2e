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
/// its entries never go through a link planted in its place meanwhile.
///
/// A long run can outlive its log's name: logrotate renames the log and
/// creates a new one (or leaves none), and may compress and remove the old
/// one. An entry goes to the regular file at the log's name when it is not
/// the one held (created when none is there), as a reader of the log expects;
/// to the held file when anything else stands at the name.
pub struct Log {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
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
        Ok(Log {
            path: path.to_path_buf(),
            file: std::sync::Mutex::new(open_file(path)?),
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

    /// Appends `entry` as one line (one write, O_APPEND), durable when this
    /// returns: to the log at its name when it was rotated since it was
    /// opened (see [`Log`]).
    pub fn append(&self, entry: &AuditEntry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).expect("audit entries serialize");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if self.rotated(&file) {
            // A failure to open the new one leaves the entry in the held file.
            if let Ok(f) = open_file(&self.path) {
                *file = f;
            }
        }
        file.write_all(&line).context("writing the audit log")?;
        file.sync_data().context("writing the audit log")
    }

    /// Whether the log's name no longer holds `held`: another regular file
    /// is there, or nothing. A link or anything else there is never followed.
    fn rotated(&self, held: &std::fs::File) -> bool {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(now) => {
                now.is_file()
                    && held
                        .metadata()
                        .is_ok_and(|h| (h.dev(), h.ino()) != (now.dev(), now.ino()))
            }
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// Opens (or creates, 0600) the audit log file at `path` for appending: a
/// regular file, never through a link.
fn open_file(path: &Path) -> Result<std::fs::File> {
    crate::fsutil::open_regular(
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600),
        path,
        "audit log",
    )
}

/// Where the audit log of `store` lives.
pub fn log_for(store: &dyn crate::Store) -> std::path::PathBuf {
    log_of(&store.describe())
}

/// Where the audit log of the store at `location` lives.
fn log_of(location: &str) -> std::path::PathBuf {
    match crate::store::directory_of(location) {
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

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].to_string())
            .collect()
    }

    #[test]
    fn entries_follow_a_rotated_log_to_its_name_but_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Log::open(&path).unwrap();
        let entry = |action: &str| log.append(&AuditEntry::new("t", action, "b", "x")).unwrap();
        entry("first");
        // logrotate's `create`: the log renamed, a new one in its place.
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::write(&path, "").unwrap();
        entry("after-create");
        // `nocreate`, or the log removed: it is made again.
        std::fs::rename(&path, dir.path().join("audit.log.2")).unwrap();
        entry("after-remove");
        // A link planted at the name: the entry stays in the held file.
        std::fs::rename(&path, dir.path().join("audit.log.3")).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        entry("after-link");
        assert_eq!(lines(&dir.path().join("audit.log.1")), [r#""first""#]);
        assert_eq!(
            lines(&dir.path().join("audit.log.2")),
            [r#""after-create""#]
        );
        assert_eq!(
            lines(&dir.path().join("audit.log.3")),
            [r#""after-remove""#, r#""after-link""#]
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("audit.log.3"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn local_stores_keep_their_audit_log_inside_remote_ones_on_this_host() {
        assert_eq!(
            log_of("/srv/backups"),
            std::path::PathBuf::from("/srv/backups/audit.log")
        );
        assert_eq!(log_of("s3://bucket/prefix"), default_log_path());
    }
}
