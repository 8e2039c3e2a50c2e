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

/// The home of the target at `url`, from the engine registry.
pub fn home(url: &str) -> Result<Box<dyn Home>> {
    super::registry::home(url)
}

/// `<db>_dbpromote_<tag>`; when that passes `max` bytes, `db` is shortened
/// (never the tag) and followed by a hash of it whole, so two databases
/// whose names begin alike never take each other's sides for their own.
pub fn side_name(db: &str, tag: &str, max: usize) -> String {
    let suffix = format!("{MARK}{tag}");
    if db.len() + suffix.len() <= max {
        return format!("{db}{suffix}");
    }
    let hash = name_hash(db);
    let mut keep = max.saturating_sub(suffix.len() + hash.len()).min(db.len());
    while !db.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{hash}{suffix}", &db[..keep])
}

/// `_` and 8 hex digits of the sha256 of a database's name.
fn name_hash(db: &str) -> String {
    use sha2::Digest;
    format!("_{}", &hex::encode(sha2::Sha256::digest(db))[..8])
}

/// Whether `stem`, what stands before the mark in a side's name, is the
/// database `target`'s: its name whole, or shortened with its hash.
pub fn stem_of(stem: &str, target: &str) -> bool {
    stem == target
        || stem
            .strip_suffix(&name_hash(target))
            .is_some_and(|short| target.starts_with(short))
}

/// A random tag part, for sides that must not collide.
pub fn random_tag(kind: &str) -> String {
    format!("{kind}_{:08x}", rand::random::<u32>())
}

/// The tag of a working side this process makes and drops (`<kind>_PID-START`):
/// a side whose maker is dead is a killed run's, and [`stale_sides`] finds it.
pub fn owned_tag(kind: &str) -> String {
    format!("{kind}_{}", crate::cleanup::owner_tag())
}

/// The sides of kind `kind` (made with [`owned_tag`], or older random
/// tags) whose maker is not running: what killed runs left. Callers hold
/// the target's promotion lock, so no live run of another host is making one.
pub fn stale_sides(home: &dyn Home, kind: &str) -> Result<Vec<String>> {
    let prefix = format!("{kind}_");
    Ok(home
        .sides(&prefix)?
        .into_iter()
        .filter(|name| {
            let tag = name
                .split_once(MARK)
                .map(|(_, t)| t)
                .unwrap_or("")
                .trim_start_matches(&prefix);
            let tag = tag.split('.').next().unwrap_or(tag);
            !crate::cleanup::owner_alive(tag)
        })
        .collect())
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
        let dir = super::file::parent(&path).to_path_buf();
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

    /// Keeps the target under the name `keep_as` too (a hard link), so
    /// renaming a side over the target never leaves the path missing.
    pub fn link_target_as(&self, keep_as: &Path) -> Result<()> {
        let target = self.path(&self.file);
        std::fs::hard_link(&target, keep_as).map_err(|e| {
            Error::failed(format!(
                "keeping {} as {}: {e}",
                target.display(),
                keep_as.display()
            ))
        })
    }

    /// Renames `side` over the target in one step and syncs the directory.
    /// On failure `undo` runs, the link `keep` that
    /// [`FilePlace::link_target_as`] made goes, and the target is as it was.
    pub fn rename_over_target(&self, side: &Path, keep: &Path, undo: impl FnOnce()) -> Result<()> {
        if let Err(e) = std::fs::rename(side, self.path(&self.file)) {
            undo();
            let _ = std::fs::remove_file(keep);
            return Err(Error::failed(format!(
                "moving {} into place: {e}; nothing was changed",
                side.display()
            )));
        }
        crate::fsutil::fsync_dir(&self.dir)
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

/// What a file-backed engine does for its side files; [`FileHome`] does the rest.
pub(crate) trait FileSides: Send + Sync + 'static {
    /// The URL scheme of the engine's databases.
    const SCHEME: &'static str;
    /// The engine of the database file at `path`.
    fn engine(path: PathBuf) -> Box<dyn Engine>;
    /// Runs `sql` (read from `file`) on the database at `path` in one transaction.
    fn run_sql(path: &Path, sql: &str, file: &Path) -> Result<()>;
    /// Processes holding any of `names` open (empty where the engine cannot tell).
    fn sessions(place: &FilePlace, names: &[&str]) -> Result<Vec<Session>>;
    /// [`Home::swap`] of the files, its preconditions checked.
    fn swap(place: &FilePlace, side: &str, keep_as: &str, grace: Option<Duration>) -> Result<Swap>;
}

/// A database file; its sides are files in the same directory.
pub(crate) struct FileHome<S> {
    place: FilePlace,
    sides: std::marker::PhantomData<fn() -> S>,
}

impl<S: FileSides> FileHome<S> {
    /// The home of the file at `path`.
    pub fn new(path: PathBuf) -> Result<FileHome<S>> {
        Ok(FileHome {
            place: FilePlace::new(path)?,
            sides: std::marker::PhantomData,
        })
    }

    /// The home of the file a `scheme:PATH` URL names.
    pub fn boxed(url: &str) -> Result<Box<dyn Home>> {
        Ok(Box::new(Self::new(super::file::path_of(url))?))
    }
}

impl<S: FileSides> Home for FileHome<S> {
    fn target(&self) -> String {
        self.place.file.clone()
    }

    fn side_name(&self, tag: &str) -> String {
        self.place.side_name(tag)
    }

    fn engine_of(&self, name: &str) -> Result<Box<dyn Engine>> {
        Ok(S::engine(self.place.path(name)))
    }

    fn child_env(&self, name: &str) -> Vec<(String, String)> {
        vec![(
            "DATABASE_URL".into(),
            format!("{}:{}", S::SCHEME, self.place.path(name).display()),
        )]
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.place.path(name).is_file())
    }

    fn sides(&self, kind: &str) -> Result<Vec<String>> {
        self.place.sides(kind)
    }

    fn run_sql_file(&self, name: &str, file: &Path) -> Result<()> {
        let sql = std::fs::read_to_string(file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))?;
        S::run_sql(&self.place.path(name), &sql, file)
    }

    fn sessions(&self, names: &[&str]) -> Result<Vec<Session>> {
        S::sessions(&self.place, names)
    }

    fn swap(&self, side: &str, keep_as: &str, grace: Option<Duration>) -> Result<Swap> {
        self.place.check_swap(side, keep_as)?;
        S::swap(&self.place, side, keep_as, grace)
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
    fn shortened_names_of_databases_that_begin_alike_stay_apart() {
        let tag = "prev_20261202_063043_a29b";
        let (dev, staging) = (
            "warehouse_inventory_service_dev01",
            "warehouse_inventory_service_staging",
        );
        let stem = |db: &str| {
            let n = side_name(db, tag, PG_NAME_MAX);
            assert!(n.len() <= PG_NAME_MAX, "{n}");
            n.split_once(MARK).unwrap().0.to_string()
        };
        assert!(stem_of(&stem(dev), dev));
        assert!(!stem_of(&stem(dev), staging));
        assert!(!stem_of(&stem(staging), dev));
        assert!(stem_of("app", "app") && !stem_of("app", "app2"));
    }
}
