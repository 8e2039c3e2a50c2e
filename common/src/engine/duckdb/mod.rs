//! DuckDB (`duckdb:PATH`): a consistent database file through the `duckdb` CLI.
//!
//! DuckDB lets one process write a database, and no other process open it
//! while that one does: a writer holds a POSIX write lock on the file, every
//! reader a read lock. A snapshot takes the same read lock itself, copies
//! the database file and its `.wal` while holding it (so no writer can
//! exist, and the copy is of a database at rest), then has the `duckdb` CLI
//! open the private copy and `CHECKPOINT` it: whatever was still only in the
//! WAL is merged into the one file the artifact holds. A database held open
//! for writing by another process cannot be snapshotted consistently from
//! outside it; that is an error (exit 1) naming the holder's pid.
//!
//! `--table`/`--exclude-table` drop the other tables from the private copy
//! and rewrite it with `COPY FROM DATABASE`, so nothing of a left-out table
//! remains in the file's free blocks.
//!
//! A restore spools the payload into a hidden file next to the target,
//! checks it (every table read whole), then takes the write lock on the
//! target (refusing, exit 4, while another process holds the database),
//! moves the target's stale `.wal` aside and renames the new file in place.
//! `--table T` instead replaces only T (with its indexes) inside the target,
//! in one transaction through the CLI.
//!
//! Row counts are `count(*)` on the snapshot file itself.

use super::{child, file};
use super::{Engine, PayloadCheck, RestoreOptions, SnapshotInfo, SnapshotOptions};
use crate::cleanup::TempGuard;
use crate::error::{Context, Error, Result};
use crate::meta::TableCount;
use crate::name::Payload;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) mod side;

/// Where the `duckdb` CLI comes from.
const PACKAGE: &str =
    "the DuckDB CLI (`pip install duckdb-cli`, or the duckdb binary from duckdb.org)";
/// The alias the payload gets when it is attached beside a target.
const PAYLOAD_ALIAS: &str = "dbsafe_payload";

/// A DuckDB database file.
pub struct Duckdb {
    path: PathBuf,
}

impl Duckdb {
    /// The database at `path`.
    pub fn new(path: PathBuf) -> Duckdb {
        Duckdb { path }
    }

    fn wal_path(&self) -> PathBuf {
        wal_of(&self.path)
    }
}

fn wal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.wal", db.display()))
}

/// `'literal'`, quotes doubled.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `"ident"`, quotes doubled.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The alias a database is attached under in every CLI run: a file's own
/// catalog name (its stem) could clash with a schema of the same name.
const DB_ALIAS: &str = "dbsafe_db";

/// How a CLI run attaches the database it works on (as [`DB_ALIAS`]).
enum Open<'a> {
    /// Nothing attached: an in-memory session.
    Nothing,
    ReadOnly(&'a Path),
    ReadWrite(&'a Path),
}

/// Runs SQL through the `duckdb` CLI and returns the rows of every result,
/// one JSON object each. The SQL goes on stdin, never in argv.
fn cli(
    db: Open<'_>,
    sql: &str,
    what: &str,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let program = child::require(&["duckdb"], PACKAGE)?;
    let mut cmd = Command::new(program);
    // -init /dev/null: the user's ~/.duckdbrc has no say in a backup.
    cmd.args(["-batch", "-bail", "-init", "/dev/null", "-jsonlines"]);
    let attach = |p: &Path, mode: &str| {
        format!(
            "ATTACH {} AS {DB_ALIAS}{mode};\nUSE {DB_ALIAS};\n",
            lit(&p.to_string_lossy())
        )
    };
    let script = match db {
        Open::Nothing => sql.to_string(),
        Open::ReadOnly(p) => attach(p, " (READ_ONLY)") + sql,
        Open::ReadWrite(p) => attach(p, "") + sql,
    };
    let out = child::run(program, PACKAGE, cmd, script.as_bytes(), what, None)?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn text(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    match row.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// A DuckDB table, `schema` and `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    schema: String,
    name: String,
    sql: String,
}

impl Table {
    fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    fn quoted(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
    /// Fully qualified in the database attached as `alias`.
    fn in_db(&self, alias: &str) -> String {
        format!("{alias}.{}", self.quoted())
    }
}

const LIST_TABLES: &str = "SELECT schema_name AS s, table_name AS t, sql FROM duckdb_tables() \
     WHERE database_name = 'dbsafe_db' AND NOT internal AND NOT temporary ORDER BY 1, 2;\n";

fn parse_tables(rows: &[serde_json::Map<String, serde_json::Value>]) -> Vec<Table> {
    rows.iter()
        .filter(|r| r.contains_key("s") && r.contains_key("t") && r.contains_key("sql"))
        .map(|r| Table {
            schema: text(r, "s"),
            name: text(r, "t"),
            sql: text(r, "sql"),
        })
        .collect()
}

/// Exact row counts of `tables` in the database at `db`; with `read_all`,
/// every column of every row is read too (so every block's checksum is).
fn count(db: &Path, tables: &[Table], read_all: bool, what: &str) -> Result<Vec<TableCount>> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = String::new();
    for t in tables {
        let hash = if read_all { ", sum(hash(x)) AS h" } else { "" };
        sql.push_str(&format!(
            "SELECT {} AS name, count(*) AS n{hash} FROM {} AS x;\n",
            lit(&t.qualified()),
            t.in_db(DB_ALIAS)
        ));
    }
    let rows = cli(Open::ReadOnly(db), &sql, what)?;
    let counts: Vec<TableCount> = rows
        .iter()
        .filter(|r| r.contains_key("name"))
        .map(|r| TableCount {
            name: text(r, "name"),
            rows: r.get("n").and_then(|n| n.as_u64()).unwrap_or(0),
        })
        .collect();
    if counts.len() != tables.len() {
        return Err(Error::failed(format!(
            "{what}: the duckdb CLI answered {} row counts for {} tables",
            counts.len(),
            tables.len()
        )));
    }
    Ok(counts)
}

/// A POSIX lock on a whole database file, the kind DuckDB itself takes:
/// while we hold it, no DuckDB process can have the database open for
/// writing (read lock) or at all (write lock). Closing the file releases it.
struct FileLock {
    file: File,
}

/// Who holds a conflicting lock, for the message.
fn lock_holder(file: &File, kind: libc::c_short) -> Option<i32> {
    // SAFETY: flock is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the fd is open for the lifetime of `file`, `fl` is a valid flock.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    (rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid)
}

impl FileLock {
    /// Takes the lock without waiting; `Err(holder pid)` when another process has a conflicting one.
    fn take(path: &Path, write: bool) -> Result<std::result::Result<FileLock, Option<i32>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let kind = if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short;
        // SAFETY: as in lock_holder.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: the fd is open, `fl` is a valid flock (whole file: start 0, len 0).
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        if rc == 0 {
            return Ok(Ok(FileLock { file }));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(Err(lock_holder(&file, kind))),
            _ => Err(Error::failed(format!(
                "cannot lock {}: {err}",
                path.display()
            ))),
        }
    }
}

fn holder_text(pid: Option<i32>) -> String {
    match pid {
        Some(p) => {
            let comm = fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| format!(" ({})", c.trim()))
                .unwrap_or_default();
            format!("process {p}{comm}")
        }
        None => "another process".into(),
    }
}

/// Who holds a lock on the database at `path` that keeps this process
/// from opening it (for writing, with `write`), asked of the kernel after
/// the CLI failed to open it: `Some(holder)` when there is one.
fn lock_conflict(path: &Path, write: bool) -> Option<Option<i32>> {
    let file = File::open(path).ok()?;
    let kind = if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short;
    lock_holder(&file, kind).map(Some)
}

fn held_error(path: &Path, pid: Option<i32>, refused: bool) -> Error {
    let msg = format!(
        "DuckDB database {} is held open for writing by {}; DuckDB lets no other process read or replace a database while one writes it",
        path.display(),
        holder_text(pid)
    );
    let e = if refused {
        Error::refused(msg)
    } else {
        Error::failed(msg)
    };
    e.hint("stop that process or have it close the database (DETACH), then retry; or, inside it, ATTACH a new file and COPY FROM DATABASE into it, and snapshot that file")
}

/// Tables and exact counts of a DuckDB file, read whole; problems as text.
fn inspect(db: &Path, what: &str) -> Result<Vec<TableCount>> {
    let tables = parse_tables(&cli(Open::ReadOnly(db), LIST_TABLES, what)?);
    count(db, &tables, true, what)
}

/// Opens a DuckDB payload (spooled to a temporary file) and reads every table.
pub fn check(input: &mut dyn Read, tmpdir: &Path) -> Result<PayloadCheck> {
    crate::fsutil::create_private_dir(tmpdir)?;
    let file = file::spool(input, &tmpdir.join("check.duckdb"))?;
    let (tables, problems) = match inspect(file.path(), "the DuckDB payload cannot be read") {
        Ok(t) => (Some(t), Vec::new()),
        Err(e) if e.code() == crate::ExitCode::Usage => return Err(e),
        Err(e) => (None, vec![e.message]),
    };
    Ok(PayloadCheck {
        checks: vec!["duckdb: opened read-only, every table read whole".into()],
        problems,
        tables,
    })
}

impl Duckdb {
    /// The live tables, mapping a lock held by another process to `held`.
    fn live_tables(&self, refused: bool) -> Result<Vec<Table>> {
        cli(
            Open::ReadOnly(&self.path),
            LIST_TABLES,
            &format!("reading DuckDB database {}", self.path.display()),
        )
        .map(|rows| parse_tables(&rows))
        .map_err(|e| match lock_conflict(&self.path, false) {
            Some(pid) => held_error(&self.path, pid, refused).with_source(e),
            None => e,
        })
    }

    /// Copies the database and its WAL under a read lock into `dir`.
    fn copy_at_rest(&self, dir: &Path) -> Result<PathBuf> {
        let copy = dir.join("snapshot.duckdb");
        let lock = match FileLock::take(&self.path, false)? {
            Ok(l) => l,
            Err(pid) => return Err(held_error(&self.path, pid, false)),
        };
        // Read through the locked descriptor: closing any other descriptor
        // of this file in this process would drop the lock.
        let mut src = &lock.file;
        let mut dst = crate::fsutil::create_private_file(&copy)?;
        std::io::copy(&mut src, &mut dst)
            .with_context(|| format!("copying {}", self.path.display()))?;
        match File::open(self.wal_path()) {
            Ok(mut wal) => {
                let mut wal_copy = crate::fsutil::create_private_file(&wal_of(&copy))?;
                std::io::copy(&mut wal, &mut wal_copy)
                    .with_context(|| format!("copying {}", self.wal_path().display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::failed(format!(
                    "cannot read {}: {e}",
                    self.wal_path().display()
                )))
            }
        }
        drop(lock);
        Ok(copy)
    }

    fn restore_tables(&self, payload: &Path, wanted: &[String]) -> Result<()> {
        let available = parse_tables(&cli(
            Open::ReadOnly(payload),
            LIST_TABLES,
            "reading the DuckDB payload",
        )?);
        let index_rows = cli(
            Open::ReadOnly(payload),
            "SELECT schema_name AS s, table_name AS t, sql AS isql FROM duckdb_indexes() \
             WHERE database_name = 'dbsafe_db' AND sql IS NOT NULL;\n",
            "reading the DuckDB payload's indexes",
        )?;
        let mut sql = format!(
            "ATTACH {} AS {PAYLOAD_ALIAS} (READ_ONLY);\nBEGIN TRANSACTION;\n",
            lit(&payload.to_string_lossy())
        );
        // The table's own DDL names it relative to the current database, the target.
        for w in wanted {
            let t = available
                .iter()
                .find(|t| super::table_selected(&t.qualified(), std::slice::from_ref(w), &[]))
                .ok_or_else(|| Error::not_found(format!("table {w} is not in the backup")))?;
            sql.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {};\nDROP TABLE IF EXISTS {};\n{}\n\
                 INSERT INTO {} SELECT * FROM {};\n",
                ident(&t.schema),
                t.in_db(DB_ALIAS),
                t.sql,
                t.in_db(DB_ALIAS),
                t.in_db(PAYLOAD_ALIAS)
            ));
            for i in index_rows
                .iter()
                .filter(|r| text(r, "s") == t.schema && text(r, "t") == t.name)
            {
                sql.push_str(&text(i, "isql"));
                sql.push('\n');
            }
        }
        sql.push_str(&format!(
            "COMMIT;\nDETACH {PAYLOAD_ALIAS};\nCHECKPOINT {DB_ALIAS};\n"
        ));
        cli(
            Open::ReadWrite(&self.path),
            &sql,
            &format!("restoring tables into {}", self.path.display()),
        )
        .map(drop)
        .map_err(|e| match lock_conflict(&self.path, true) {
            Some(pid) => held_error(&self.path, pid, true).with_source(e),
            None => e,
        })
    }

    /// Renames `file` over the target under the target's write lock.
    fn replace_with(&self, file: TempGuard, dir: &Path) -> Result<()> {
        let lock = if self.path.exists() {
            match FileLock::take(&self.path, true)? {
                Ok(l) => Some(l),
                Err(pid) => return Err(held_error(&self.path, pid, true)),
            }
        } else {
            None
        };
        // The old WAL belongs to the old file: replayed against the new one
        // it would corrupt it. It is moved aside (not deleted) first, and
        // put back if the new file cannot be moved in.
        let wal = self.wal_path();
        let stale = crate::fsutil::temp_name_for(&wal);
        let moved = match fs::rename(&wal, &stale) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(Error::failed(format!(
                    "cannot move {} aside: {e}",
                    wal.display()
                )))
            }
        };
        let renamed = file::take_over_attributes(file.path(), &self.path)
            .and_then(|()| fs::rename(file.path(), &self.path).map_err(Error::from));
        if let Err(e) = renamed {
            if moved {
                let _ = fs::rename(&stale, &wal);
            }
            return Err(Error::failed(format!(
                "cannot move the restored database to {}: {e}",
                self.path.display()
            )));
        }
        file.keep();
        drop(lock);
        if moved {
            let _ = fs::remove_file(&stale);
        }
        crate::fsutil::fsync_dir(dir)
    }
}

impl Engine for Duckdb {
    file::file_engine!("duckdb");

    fn snapshot(&self, opts: &SnapshotOptions, out: &mut dyn Write) -> Result<SnapshotInfo> {
        file::check_snapshot(opts, "DuckDB", &self.path)?;
        child::require(&["duckdb"], PACKAGE)?;
        let dir_guard = file::snapshot_dir(opts, "duckdb")?;
        let dir = dir_guard.path().to_path_buf();
        let copy = self.copy_at_rest(&dir)?;

        // Opening the copy read-write replays its WAL; CHECKPOINT writes it
        // into the file, and closing removes the WAL.
        let rows = cli(
            Open::ReadWrite(&copy),
            &format!(
                "CHECKPOINT {DB_ALIAS};\nSELECT library_version AS v FROM pragma_version();\n{LIST_TABLES}"
            ),
            "checkpointing the snapshot copy",
        )?;
        let version = rows
            .iter()
            .find(|r| r.contains_key("v"))
            .map(|r| text(r, "v"))
            .unwrap_or_default();
        let mut tables = parse_tables(&rows);
        let mut file = copy.clone();
        if !opts.tables.is_empty() || !opts.exclude_tables.is_empty() {
            let (keep, drop): (Vec<Table>, Vec<Table>) = tables.into_iter().partition(|t| {
                super::table_selected(&t.qualified(), &opts.tables, &opts.exclude_tables)
            });
            let selected = dir.join("selected.duckdb");
            let mut sql = format!(
                "ATTACH {} AS src;\nATTACH {} AS dst;\n",
                lit(&copy.to_string_lossy()),
                lit(&selected.to_string_lossy())
            );
            for t in &drop {
                sql.push_str(&format!("DROP TABLE {};\n", t.in_db("src")));
            }
            sql.push_str("COPY FROM DATABASE src TO dst;\nDETACH dst;\n");
            cli(Open::Nothing, &sql, "leaving tables out of the snapshot")
                .map_err(|e| e.hint("COPY FROM DATABASE rewrites the snapshot without the left-out tables; it cannot when the remaining tables have foreign keys"))?;
            tables = keep;
            file = selected;
        }
        if wal_of(&file).exists() {
            return Err(Error::failed(
                "the snapshot copy still has a WAL after CHECKPOINT; refusing an incomplete snapshot",
            ));
        }
        let counts = count(&file, &tables, false, "counting rows in the snapshot")?;
        let mut f = File::open(&file).context("reading the snapshot copy")?;
        crate::pipeline::copy(&mut f, out)?;
        drop(dir_guard);
        Ok(SnapshotInfo::new(counts, version, []))
    }

    fn tables(&self) -> Result<Vec<TableCount>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let tables = self.live_tables(true)?;
        count(
            &self.path,
            &tables,
            false,
            &format!("counting rows in {}", self.path.display()),
        )
    }

    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()> {
        file::expect_payload(
            payload,
            Payload::Duckdb,
            "DuckDB database",
            "duckdb",
            &self.path,
        )?;
        child::require(&["duckdb"], PACKAGE)?;
        let dir = file::restore_dir(&self.path, opts.create)?;
        // Spooled next to the target and read whole before the target is touched.
        let file = file::spool(input, &self.path)?;
        inspect(file.path(), "the DuckDB payload cannot be read")?;
        if opts.tables.is_empty() {
            self.replace_with(file, dir)
        } else {
            self.restore_tables(file.path(), &opts.tables)
        }
    }

    fn drop_target(&self) -> Result<()> {
        let _ = fs::remove_file(self.wal_path());
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::failed(format!(
                "cannot remove {}: {e}",
                self.path.display()
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let t = Table {
            schema: "main".into(),
            name: "odd \"name\"".into(),
            sql: String::new(),
        };
        assert_eq!(t.quoted(), "\"main\".\"odd \"\"name\"\"\"");
        assert_eq!(t.qualified(), "main.odd \"name\"");
    }

    #[test]
    fn a_held_database_is_named_with_its_holder() {
        let e = held_error(Path::new("/x/app.duckdb"), Some(1), true);
        assert_eq!(e.code(), crate::ExitCode::Refused);
        assert!(e.message.contains("process 1"), "{e}");
        assert!(held_error(Path::new("a"), None, false).code() == crate::ExitCode::Failure);
    }
}
