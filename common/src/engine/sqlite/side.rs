//! SQLite side files: sides are files next to the target, swapped in by
//! rename while SQLite's own write lock on the target is held.

use super::Sqlite;
use crate::engine::side::{FilePlace, FileSides, Session, Swap};
use crate::engine::{file, Engine};
use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn open(path: &Path) -> Result<rusqlite::Connection> {
    rusqlite::Connection::open(path)
        .map_err(|e| Error::failed(format!("opening {}: {e}", path.display())))
}

fn sqlite_err(what: impl fmt::Display) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::failed(format!("{what}: {e}"))
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl FileSides for Sqlite {
    const SCHEME: &'static str = "sqlite";

    fn engine(path: PathBuf) -> Box<dyn Engine> {
        Box::new(Sqlite::new(path))
    }

    /// Runs a sanitize script on a side in one transaction. What it
    /// overwrote or deleted is zeroed on disk (secure_delete), and the file
    /// is rebuilt after (VACUUM): the values it masks are not left in free
    /// pages or the WAL of the copy that goes down the chain.
    fn run_sql(path: &Path, sql: &str, file: &Path) -> Result<()> {
        let conn = open(path)?;
        conn.execute_batch("PRAGMA secure_delete = ON; BEGIN IMMEDIATE")
            .map_err(sqlite_err("starting a transaction"))?;
        match conn.execute_batch(sql) {
            Ok(()) => conn
                .execute_batch("COMMIT; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(sqlite_err(format!("committing {}", file.display()))),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(Error::failed(format!(
                    "{} failed on {} (rolled back): {e}",
                    file.display(),
                    path.display()
                )))
            }
        }
    }

    /// A file has no session list: its users are the processes that hold
    /// it open, idle ones too, which hold no lock.
    fn sessions(place: &FilePlace, names: &[&str]) -> Result<Vec<Session>> {
        Ok(names
            .iter()
            .flat_map(|name| {
                file::holders(&place.path(name))
                    .into_iter()
                    .map(move |pid| Session {
                        pid: i64::from(pid),
                        database: name.to_string(),
                        user: String::new(),
                        application: file::process_name(pid),
                        client: String::new(),
                    })
            })
            .collect())
    }

    fn swap(place: &FilePlace, side: &str, keep_as: &str, grace: Option<Duration>) -> Result<Swap> {
        let (target, side_path, keep) = (
            place.path(&place.file),
            place.path(side),
            place.path(keep_as),
        );
        // A process that holds the file open would go on with the old one
        // (its writes lost to the live database): waited for up to the
        // grace period, else the swap is refused.
        let start = Instant::now();
        loop {
            let users = file::holders(&target);
            if users.is_empty() {
                break;
            }
            if grace.is_none_or(|g| start.elapsed() >= g) {
                let named: Vec<String> = users
                    .iter()
                    .map(|p| format!("{p} ({})", file::process_name(*p)))
                    .collect();
                return Err(Error::refused(format!(
                    "{} is open in process {}{}; nothing was changed",
                    target.display(),
                    named.join(", "),
                    if grace.is_some() {
                        " past the grace period"
                    } else {
                        ""
                    }
                ))
                .hint("stop the application, or pass --grace D to wait for it"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let conn = open(&target)?;
        // What is left of the grace period, not all of it again.
        let wait = grace.map_or(Duration::ZERO, |g| g.saturating_sub(start.elapsed()));
        conn.busy_timeout(wait)
            .map_err(sqlite_err("busy timeout"))?;
        let busy = |e: rusqlite::Error| {
            if is_busy(&e) {
                Error::refused(format!(
                    "{} is in use: another connection holds a lock{}; nothing was changed",
                    target.display(),
                    if grace.is_some() {
                        " past the grace period"
                    } else {
                        ""
                    }
                ))
                .hint("stop the application's writers, or pass --grace D to wait for them")
            } else {
                Error::failed(format!("locking {}: {e}", target.display()))
            }
        };
        // Fold the WAL into the file so the file alone is the database, then
        // hold the write lock so no writer is half-way through a transaction.
        let (blocked, _, _): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(busy)?;
        if blocked != 0 {
            return Err(busy(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            )));
        }
        conn.execute_batch("BEGIN IMMEDIATE").map_err(busy)?;
        let waited = start.elapsed();
        let clock = Instant::now();
        // A hard link keeps the old database under its new name while the
        // rename replaces the target in one step: the path never goes missing.
        place.link_target_as(&keep)?;
        place.rename_over_target(&side_path, &keep, || {})?;
        drop(conn);
        // The old file's empty WAL and index must not be taken for the new one's.
        let wal = PathBuf::from(format!("{}-wal", target.display()));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&wal);
            let _ = std::fs::remove_file(format!("{}-shm", target.display()));
        }
        Ok(Swap {
            waited,
            ended: Vec::new(),
            duration: clock.elapsed(),
            notes: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::side::{FileHome, Home};

    type SqliteHome = FileHome<Sqlite>;

    #[test]
    fn file_sides_sit_next_to_the_target_with_its_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = SqliteHome::new(dir.path().join("staging.db")).expect("home");
        assert_eq!(h.side_name("prev_1"), "staging_dbpromote_prev_1.db");
        std::fs::write(dir.path().join("staging_dbpromote_prev_1.db"), b"").expect("write");
        std::fs::write(dir.path().join("other.db"), b"").expect("write");
        assert_eq!(
            h.sides("prev").expect("list"),
            vec!["staging_dbpromote_prev_1.db"]
        );
        assert!(h.remove("staging.db").is_err());
    }

    #[test]
    fn a_file_swap_keeps_the_old_file_and_moves_the_side_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, v: i64| {
            let c = rusqlite::Connection::open(dir.path().join(name)).expect("open");
            c.execute_batch(&format!("CREATE TABLE t(v); INSERT INTO t VALUES ({v});"))
                .expect("fill");
        };
        make("app.db", 1);
        make("app_dbpromote_side.db", 2);
        let h = SqliteHome::new(dir.path().join("app.db")).expect("home");
        let holder = rusqlite::Connection::open(dir.path().join("app.db")).expect("open");
        holder.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let e = h
            .swap("app_dbpromote_side.db", "app_dbpromote_prev.db", None)
            .unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Refused, "{e}");
        drop(holder);
        h.swap("app_dbpromote_side.db", "app_dbpromote_prev.db", None)
            .expect("swap");
        let v = |name: &str| -> i64 {
            rusqlite::Connection::open(dir.path().join(name))
                .expect("open")
                .query_row("SELECT v FROM t", [], |r| r.get(0))
                .expect("read")
        };
        assert_eq!(v("app.db"), 2);
        assert_eq!(v("app_dbpromote_prev.db"), 1);
        assert!(!dir.path().join("app_dbpromote_side.db").exists());
    }
}
