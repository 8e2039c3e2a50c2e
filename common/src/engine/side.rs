//! Side databases next to a target, and swapping one in by rename (dbpromote).
//!
//! A promotion never rebuilds a target in place when it can avoid it: it
//! restores into a *side* database next to the target (a new database on
//! the same PostgreSQL server, a file in the same directory for SQLite and
//! DuckDB), works on that, and swaps it in by renaming, keeping the old database
//! under another name as the rollback point. A [`Home`] is where a target
//! lives and where its sides go; [`home`] gives the one of a URL, so tools
//! never match on the engine.
//!
//! Sides are named `<target>_dbpromote_<tag>` (files keep their extension),
//! so whatever a crash leaves behind is recognisable and [`Home::sides`]
//! finds it.

use super::Engine;
use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What marks a side's name.
pub const MARK: &str = "_dbpromote_";

/// PostgreSQL truncates identifiers to 63 bytes.
pub const PG_NAME_MAX: usize = 63;

/// A client session connected to a database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// Server process id.
    pub pid: i64,
    /// The database it is connected to.
    pub database: String,
    /// Role name.
    pub user: String,
    /// `application_name`.
    pub application: String,
    /// Client address (empty for unix sockets).
    pub client: String,
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} (", self.pid)?;
        if !self.user.is_empty() {
            write!(f, "{}@", self.user)?;
        }
        f.write_str(&self.database)?;
        if !self.application.is_empty() {
            write!(f, ", {}", self.application)?;
        }
        if !self.client.is_empty() {
            write!(f, ", from {}", self.client)?;
        }
        f.write_str(")")
    }
}

/// What a swap did.
#[derive(Debug, Clone, Default)]
pub struct Swap {
    /// How long it waited for sessions to leave on their own (the grace period used).
    pub waited: Duration,
    /// Sessions it ended.
    pub ended: Vec<Session>,
    /// How long the target was unavailable: from refusing new connections
    /// (or taking the file's lock) to the renamed database accepting them.
    pub duration: Duration,
    /// What the swap could not do fully (settings or grants not carried over).
    pub notes: Vec<String>,
}

/// Where a target database lives, and where its side databases go.
pub trait Home: Send + Sync {
    /// The target's name on its home: the database name, or the file name.
    fn target(&self) -> String;
    /// The name of a side of the target: `<target>_dbpromote_<tag>`.
    fn side_name(&self, tag: &str) -> String;
    /// The engine of the database `name` on this home (it need not exist yet).
    fn engine_of(&self, name: &str) -> Result<Box<dyn Engine>>;
    /// The environment a child process needs to connect to `name`:
    /// `DATABASE_URL` (with the password, if the target URL has one: the
    /// environment is where secrets may go) and the client's own variables.
    fn child_env(&self, name: &str) -> Vec<(String, String)>;
    /// Whether `name` exists.
    fn exists(&self, name: &str) -> Result<bool>;
    /// The target's sides whose tag starts with `kind` (`prev`, `rehearsal`, ...), sorted.
    fn sides(&self, kind: &str) -> Result<Vec<String>>;
    /// Runs the SQL file on `name` in one transaction; an error rolls it all back.
    fn run_sql_file(&self, name: &str, file: &Path) -> Result<()>;
    /// Client sessions connected to any of `names` (empty where the engine cannot tell).
    fn sessions(&self, names: &[&str]) -> Result<Vec<Session>>;
    /// Renames the target to `keep_as` and `side` to the target.
    ///
    /// Sessions connected to the target are waited for up to `grace` and then
    /// ended; without `grace` their presence refuses the swap (exit 4) and
    /// nothing is changed. Either both renames happen or neither.
    fn swap(&self, side: &str, keep_as: &str, grace: Option<Duration>) -> Result<Swap>;
    /// Removes the side `name`; refuses to remove the target itself.
    fn remove(&self, name: &str) -> Result<()> {
        if name == self.target() || !name.contains(MARK) {
            return Err(Error::refused(format!(
                "{name} is not a side database of {}; not removing it",
                self.target()
            )));
        }
        self.engine_of(name)?.drop_target()
    }
}

/// The home of the target at `url`.
pub fn home(url: &str) -> Result<Box<dyn Home>> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Box::new(FileHome::new(super::sqlite::path_of(path))?));
    }
    if let Some(path) = url.strip_prefix("duckdb:") {
        return super::duckdb::side::home(super::duckdb::path_of(path));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return super::postgres::side::home(url);
    }
    let scheme = url.split(':').next().unwrap_or("");
    Err(Error::usage(format!(
        "side databases and swaps are not supported for {scheme:?} URLs"
    ))
    .hint("dbpromote works with postgres://, sqlite: and duckdb: targets"))
}

/// `<db>_dbpromote_<tag>`, with `db` shortened (never the tag) to fit `max` bytes.
pub fn side_name(db: &str, tag: &str, max: usize) -> String {
    let suffix = format!("{MARK}{tag}");
    let mut keep = max.saturating_sub(suffix.len()).min(db.len());
    while !db.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &db[..keep])
}

/// A random tag part, for sides that must not collide.
pub fn random_tag(kind: &str) -> String {
    format!("{kind}_{:08x}", rand::random::<u32>())
}

/// A tag that sorts by time (UTC) and does not collide within a second:
/// `<kind>_YYYYMMDD_HHMMSS_<hex>`, for the sides that are kept.
pub fn stamped_tag(kind: &str) -> String {
    format!(
        "{kind}_{}_{:04x}",
        chrono::Utc::now().format("%Y%m%d_%H%M%S"),
        rand::random::<u16>()
    )
}

/// Waits until `cond` holds, polling, for at most `limit`; says whether it held.
pub(crate) fn wait_for(limit: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<bool> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100).min(limit.saturating_sub(start.elapsed())));
    }
}

/// A database file and its directory, where its sides go as files named
/// `<stem>_dbpromote_<tag><ext>`.
pub(crate) struct FilePlace {
    /// The directory.
    pub dir: PathBuf,
    /// The target's file name.
    pub file: String,
}

impl FilePlace {
    /// The place of the file at `path`.
    pub fn new(path: PathBuf) -> Result<FilePlace> {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .ok_or_else(|| Error::usage(format!("{}: not a file name", path.display())))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(FilePlace { dir, file })
    }

    /// The path of the file `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn stem_ext(&self) -> (&str, &str) {
        match self.file.rfind('.') {
            Some(i) if i > 0 => (&self.file[..i], &self.file[i..]),
            _ => (&self.file, ""),
        }
    }

    /// [`Home::side_name`] for files.
    pub fn side_name(&self, tag: &str) -> String {
        let (stem, ext) = self.stem_ext();
        format!("{stem}{MARK}{tag}{ext}")
    }

    /// [`Home::sides`] for files.
    pub fn sides(&self, kind: &str) -> Result<Vec<String>> {
        let (stem, ext) = self.stem_ext();
        let prefix = format!("{stem}{MARK}{kind}");
        let mut out: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::failed(format!("listing {}: {e}", self.dir.display())))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix) && n.ends_with(ext))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Checks a file swap's preconditions: the side and the target exist, `keep_as` does not.
    pub fn check_swap(&self, side: &str, keep_as: &str) -> Result<()> {
        let (target, side, keep) = (self.path(&self.file), self.path(side), self.path(keep_as));
        if !side.is_file() {
            return Err(Error::not_found(format!(
                "{} does not exist",
                side.display()
            )));
        }
        if keep.exists() {
            return Err(Error::refused(format!(
                "{} already exists; nothing was changed",
                keep.display()
            )));
        }
        if !target.is_file() {
            return Err(Error::not_found(format!(
                "{} does not exist",
                target.display()
            )));
        }
        Ok(())
    }
}

/// A SQLite database file; its sides are files in the same directory.
struct FileHome {
    place: FilePlace,
}

impl FileHome {
    fn new(path: PathBuf) -> Result<FileHome> {
        Ok(FileHome {
            place: FilePlace::new(path)?,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.place.path(name)
    }

    fn open(&self, name: &str) -> Result<rusqlite::Connection> {
        rusqlite::Connection::open(self.path(name))
            .map_err(|e| Error::failed(format!("opening {}: {e}", self.path(name).display())))
    }
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

impl Home for FileHome {
    fn target(&self) -> String {
        self.place.file.clone()
    }

    fn side_name(&self, tag: &str) -> String {
        self.place.side_name(tag)
    }

    fn engine_of(&self, name: &str) -> Result<Box<dyn Engine>> {
        Ok(Box::new(super::sqlite::Sqlite::new(self.path(name))))
    }

    fn child_env(&self, name: &str) -> Vec<(String, String)> {
        vec![(
            "DATABASE_URL".into(),
            format!("sqlite:{}", self.path(name).display()),
        )]
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.path(name).is_file())
    }

    fn sides(&self, kind: &str) -> Result<Vec<String>> {
        self.place.sides(kind)
    }

    fn run_sql_file(&self, name: &str, file: &Path) -> Result<()> {
        let sql = std::fs::read_to_string(file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
        let conn = self.open(name)?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(sqlite_err("starting a transaction"))?;
        match conn.execute_batch(&sql) {
            Ok(()) => conn
                .execute_batch("COMMIT")
                .map_err(sqlite_err(format!("committing {}", file.display()))),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(Error::failed(format!(
                    "{} failed on {} (rolled back): {e}",
                    file.display(),
                    self.path(name).display()
                )))
            }
        }
    }

    fn sessions(&self, _names: &[&str]) -> Result<Vec<Session>> {
        // A file has no session list; the swap's lock is what detects users.
        Ok(Vec::new())
    }

    fn swap(&self, side: &str, keep_as: &str, grace: Option<Duration>) -> Result<Swap> {
        self.place.check_swap(side, keep_as)?;
        let file = &self.place.file;
        let (target, side_path, keep) = (self.path(file), self.path(side), self.path(keep_as));
        let conn = self.open(file)?;
        let wait = grace.unwrap_or(Duration::ZERO);
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
        let start = Instant::now();
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
        std::fs::hard_link(&target, &keep).map_err(|e| {
            Error::failed(format!(
                "keeping {} as {}: {e}",
                target.display(),
                keep.display()
            ))
        })?;
        if let Err(e) = std::fs::rename(&side_path, &target) {
            let _ = std::fs::remove_file(&keep);
            return Err(Error::failed(format!(
                "moving {} into place: {e}; nothing was changed",
                side_path.display()
            )));
        }
        crate::fsutil::fsync_dir(&self.place.dir)?;
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

    #[test]
    fn side_names_keep_the_tag_and_fit_postgres_identifiers() {
        assert_eq!(
            side_name("app", "prev_20250118_010000", PG_NAME_MAX),
            "app_dbpromote_prev_20250118_010000"
        );
        let long = "a".repeat(60);
        let n = side_name(&long, "rehearsal_0123abcd", PG_NAME_MAX);
        assert_eq!(n.len(), PG_NAME_MAX);
        assert!(n.ends_with("_dbpromote_rehearsal_0123abcd"), "{n}");
        let n = side_name(&"é".repeat(30), "prev_20250118_010000", PG_NAME_MAX);
        assert!(
            n.len() <= PG_NAME_MAX && n.ends_with("_dbpromote_prev_20250118_010000"),
            "{n}"
        );
    }

    #[test]
    fn file_sides_sit_next_to_the_target_with_its_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = FileHome::new(dir.path().join("staging.db")).expect("home");
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
        let h = FileHome::new(dir.path().join("app.db")).expect("home");
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
