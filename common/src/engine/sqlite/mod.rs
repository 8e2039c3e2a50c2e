//! SQLite: snapshots streamed page by page from one read transaction
//! (`sqlite_dbpage`), consistent while writers run; a snapshot of some
//! tables goes through the online backup API into a copy.

mod side;

use super::file;
use super::{Engine, PayloadCheck, RestoreOptions, SnapshotInfo, SnapshotOptions};
use crate::error::{Context, Error, Result};
use crate::meta::TableCount;
use crate::name::Payload;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A SQLite database file.
pub struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    /// The database at `path`.
    pub fn new(path: PathBuf) -> Sqlite {
        Sqlite { path }
    }
}

fn sql_err(what: impl std::fmt::Display) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::failed(format!("{what}: {e}"))
}

/// Copies `src` into `dst` in one backup step, so the copy is one consistent
/// read transaction; retries while the source is locked by a writer.
fn backup_into(src: &Connection, dst: &mut Connection) -> Result<()> {
    let backup = Backup::new(src, dst).map_err(sql_err("starting the SQLite backup"))?;
    let mut waited = Duration::ZERO;
    loop {
        match backup.step(-1).map_err(sql_err("SQLite backup"))? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked => {
                if waited > Duration::from_secs(60) {
                    return Err(Error::failed("the SQLite database stayed locked for 60s"));
                }
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
            }
            _ => {}
        }
    }
}

/// Streams the pages of `src` into `out` from one read transaction: one
/// consistent state of the database while writers go on (WAL mode) or wait
/// (rollback journal), compressed as the pages are read instead of after a
/// copy is made. The copy's header says rollback-journal mode, so the file
/// alone is the whole database. Returns the tables and row counts of that
/// same state, or `None` when this SQLite lacks the `sqlite_dbpage` table
/// (the caller copies through the backup API instead).
fn stream_pages(src: &Connection, out: &mut dyn Write) -> Result<Option<Vec<TableCount>>> {
    src.busy_timeout(Duration::from_secs(60))
        .map_err(sql_err("setting the busy timeout"))?;
    let has_dbpage: bool = src
        .query_row(
            "SELECT sqlite_compileoption_used('ENABLE_DBPAGE_VTAB')",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err("reading SQLite's compile options"))?;
    if !has_dbpage {
        return Ok(None);
    }
    let mut pages = src
        .prepare("SELECT pgno, data FROM sqlite_dbpage")
        .map_err(sql_err("reading the database's pages"))?;
    src.execute_batch("BEGIN")
        .map_err(sql_err("starting the read transaction"))?;
    let streamed = (|| {
        let mut rows = pages
            .query([])
            .map_err(sql_err("reading the database's pages"))?;
        let mut expected = 1i64;
        while let Some(row) = rows
            .next()
            .map_err(sql_err("reading the database's pages"))?
        {
            let pgno: i64 = row.get(0).map_err(sql_err("reading a page number"))?;
            let data = row
                .get_ref(1)
                .and_then(|v| Ok(v.as_blob()?))
                .map_err(sql_err(format!("reading page {pgno}")))?;
            if pgno != expected {
                return Err(Error::failed(format!(
                    "page {expected} of the database was not returned (got {pgno})"
                )));
            }
            if pgno == 1 && data.len() >= 20 {
                // Bytes 18-19: the file format versions, 1 for rollback journal, 2 for WAL.
                let mut first = data.to_vec();
                first[18] = 1;
                first[19] = 1;
                out.write_all(&first)?;
            } else {
                out.write_all(data)?;
            }
            expected += 1;
        }
        // The row counts of the same state the pages came from.
        count_tables(src)
    })();
    drop(pages);
    let ended = src
        .execute_batch("COMMIT")
        .map_err(sql_err("ending the read transaction"));
    let tables = streamed?;
    ended?;
    Ok(Some(tables))
}

/// The first column of every row `sql` returns, as text; `what` names the query in errors.
fn column(conn: &Connection, sql: &str, what: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(sql).map_err(sql_err(what))?;
    stmt.query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sql_err(what))
}

/// Tables and exact row counts of an open database.
fn count_tables(conn: &Connection) -> Result<Vec<TableCount>> {
    column(
        conn,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        "listing tables",
    )?
        .into_iter()
        .map(|name| {
            let rows: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {}", quote(&name)), [], |r| {
                    r.get(0)
                })
                .map_err(sql_err(format!("counting rows of {name}")))?;
            Ok(TableCount {
                name,
                rows: rows as u64,
            })
        })
        .collect()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn integrity_problems(conn: &Connection) -> Result<Vec<String>> {
    let lines = column(conn, "PRAGMA integrity_check", "integrity check")?;
    Ok(if lines == ["ok"] { Vec::new() } else { lines })
}

fn open_payload(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sql_err("opening the SQLite payload"))
}

/// `PRAGMA integrity_check` and row counts of a SQLite payload.
pub fn check(input: &mut dyn Read, tmpdir: &Path) -> Result<PayloadCheck> {
    crate::fsutil::create_private_dir(tmpdir)?;
    // Opened read-only afterwards, so SQLite leaves no journal beside it.
    let file = file::spool(input, &tmpdir.join("check.sqlite"))?;
    let conn = open_payload(file.path())?;
    let mut problems = integrity_problems(&conn).unwrap_or_else(|e| vec![e.message]);
    let tables = match count_tables(&conn) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(e.message);
            None
        }
    };
    Ok(PayloadCheck {
        checks: vec!["sqlite: PRAGMA integrity_check".into()],
        problems,
        tables,
    })
}

impl Engine for Sqlite {
    file::file_engine!("sqlite");

    fn snapshot(&self, opts: &SnapshotOptions, out: &mut dyn Write) -> Result<SnapshotInfo> {
        file::check_snapshot(opts, "SQLite", &self.path)?;
        let src = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql_err(format!("opening {}", self.path.display())))?;
        // What the copy does not carry: the copy is made in rollback mode
        // and written by this process, so the source's journal mode and
        // file mode are recorded and put back by the restore.
        let journal_mode: String = src
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(sql_err("reading the journal mode"))?;
        let file_mode = std::fs::metadata(&self.path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .context(self.path.display())?;
        let recorded = [
            ("journal_mode", journal_mode.to_ascii_lowercase().into()),
            ("file_mode", format!("{file_mode:04o}").into()),
        ];
        if opts.tables.is_empty() && opts.exclude_tables.is_empty() {
            if let Some(tables) = stream_pages(&src, out)? {
                return Ok(SnapshotInfo::new(tables, rusqlite::version(), recorded));
            }
        }
        // A private directory holds the copy and whatever journal SQLite makes beside it.
        let dir_guard = file::snapshot_dir(opts, "sqlite")?;
        let copy_path = dir_guard.path().join("snapshot.sqlite");
        let mut dst =
            Connection::open(&copy_path).map_err(sql_err("creating the snapshot copy"))?;
        backup_into(&src, &mut dst)?;
        drop(src);
        if !opts.tables.is_empty() || !opts.exclude_tables.is_empty() {
            for t in count_tables(&dst)? {
                if !super::table_selected(&t.name, &opts.tables, &opts.exclude_tables) {
                    dst.execute_batch(&format!("DROP TABLE {}", quote(&t.name)))
                        .map_err(sql_err(format!("leaving out table {}", t.name)))?;
                }
            }
            dst.execute_batch("VACUUM")
                .map_err(sql_err("compacting the snapshot"))?;
        }
        // The copy is in rollback-journal mode, so the file alone is the whole database.
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(sql_err("snapshot journal mode"))?;
        let tables = count_tables(&dst)?;
        dst.close()
            .map_err(|(_, e)| Error::failed(format!("closing the snapshot copy: {e}")))?;
        let mut f = std::fs::File::open(&copy_path).context("reading the snapshot copy")?;
        crate::pipeline::copy(&mut f, out)?;
        drop(dir_guard);
        Ok(SnapshotInfo::new(tables, rusqlite::version(), recorded))
    }

    fn tables(&self) -> Result<Vec<TableCount>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql_err(format!("opening {}", self.path.display())))?;
        count_tables(&conn)
    }

    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()> {
        file::expect_payload(
            payload,
            Payload::Sqlite,
            "SQLite database",
            "sqlite",
            &self.path,
        )?;
        let dir = file::restore_dir(&self.path, opts.create)?;
        // Spool next to the target and check it whole before touching the target.
        let file = file::spool(input, &self.path)?;
        let problems = integrity_problems(&open_payload(file.path())?)?;
        if !problems.is_empty() {
            return Err(Error::failed(format!(
                "the payload fails PRAGMA integrity_check: {}",
                problems.join("; ")
            )));
        }
        if !self.path.exists() && opts.tables.is_empty() {
            if let Some(mode) = recorded_mode(opts) {
                std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode))
                    .context(file.path().display())?;
            }
            std::fs::rename(file.path(), &self.path)
                .context("moving the restored database into place")?;
            file.keep();
            crate::fsutil::fsync_dir(dir)?;
            return self.restore_journal_mode(opts);
        }
        let mut target = Connection::open(&self.path)
            .map_err(sql_err(format!("opening {}", self.path.display())))?;
        target
            .busy_timeout(Duration::from_secs(30))
            .map_err(sql_err("busy timeout"))?;
        if opts.tables.is_empty() {
            // The backup API replaces the whole database under SQLite's own
            // locking, so other connections never see a torn file.
            let src = open_payload(file.path())?;
            // The backup API cannot change the page size of a database in
            // WAL mode: the target leaves WAL mode first (the recorded mode
            // is put back after).
            let page_size = |c: &Connection| -> Result<i64> {
                c.query_row("PRAGMA page_size", [], |r| r.get(0))
                    .map_err(sql_err("reading the page size"))
            };
            if page_size(&src)? != page_size(&target)? {
                target
                    .pragma_update_and_check(None, "journal_mode", "DELETE", |r| {
                        r.get::<_, String>(0)
                    })
                    .map_err(sql_err("leaving WAL mode for a new page size"))?;
            }
            backup_into(&src, &mut target)?;
            drop(target);
            return self.restore_journal_mode(opts);
        }
        restore_tables(&target, file.path(), &opts.tables)
    }

    fn drop_target(&self) -> Result<()> {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let p = PathBuf::from(format!("{}{suffix}", self.path.display()));
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

impl Sqlite {
    /// Puts back the journal mode the snapshot recorded (WAL is a property
    /// of the file; the copy was made in rollback mode).
    fn restore_journal_mode(&self, opts: &RestoreOptions) -> Result<()> {
        let Some(mode) = opts.recorded.get("journal_mode").and_then(|v| v.as_str()) else {
            return Ok(());
        };
        if !matches!(mode, "wal" | "delete" | "truncate" | "persist") {
            return Ok(());
        }
        let conn = Connection::open(&self.path)
            .map_err(sql_err(format!("opening {}", self.path.display())))?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(sql_err("busy timeout"))?;
        let now: String = conn
            .pragma_update_and_check(None, "journal_mode", mode, |r| r.get(0))
            .map_err(sql_err(format!("setting journal_mode={mode}")))?;
        if !now.eq_ignore_ascii_case(mode) {
            crate::output::warn(format!(
                "{}: journal mode is {now}, the backup's was {mode}",
                self.path.display()
            ));
        }
        Ok(())
    }
}

/// The file mode the snapshot recorded, if it did.
fn recorded_mode(opts: &RestoreOptions) -> Option<u32> {
    let m = opts.recorded.get("file_mode")?.as_str()?;
    u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o7777)
}

/// Replaces only the named tables (and their indexes and triggers) in one transaction.
fn restore_tables(target: &Connection, payload: &Path, tables: &[String]) -> Result<()> {
    target
        .execute("ATTACH DATABASE ?1 AS payload", [payload.to_string_lossy()])
        .map_err(sql_err("attaching the payload"))?;
    let result = (|| {
        target
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql_err("starting the restore transaction"))?;
        for t in tables {
            let mut stmt = target
                .prepare("SELECT type, sql FROM payload.sqlite_schema WHERE tbl_name = ?1 AND sql IS NOT NULL ORDER BY type = 'table' DESC")
                .map_err(sql_err("reading the payload schema"))?;
            let ddl: Vec<(String, String)> = stmt
                .query_map([t], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(sql_err("reading the payload schema"))?;
            if !ddl.iter().any(|(kind, _)| kind == "table") {
                return Err(Error::not_found(format!("table {t} is not in the backup")));
            }
            let q = quote(t);
            let mut batch = format!("DROP TABLE IF EXISTS main.{q};");
            for (kind, sql) in &ddl {
                batch.push_str(sql);
                batch.push(';');
                if kind == "table" {
                    batch.push_str(&format!("INSERT INTO main.{q} SELECT * FROM payload.{q};"));
                }
            }
            target
                .execute_batch(&batch)
                .map_err(sql_err(format!("restoring table {t}")))?;
        }
        target
            .execute_batch("COMMIT")
            .map_err(sql_err("committing the restore"))
    })();
    if result.is_err() {
        let _ = target.execute_batch("ROLLBACK");
    }
    let _ = target.execute("DETACH DATABASE payload", []);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_stream_from_one_read_transaction_including_what_is_still_in_the_wal() {
        let (dir, db) = crate::testing::temp_path("app.db");
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE t(x);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
                 INSERT INTO t SELECT i FROM n;",
            )
            .unwrap();
        assert!(
            std::fs::metadata(dir.path().join("app.db-wal"))
                .unwrap()
                .len()
                > 0,
            "the rows are still in the WAL"
        );
        let src = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut out = Vec::new();
        let tables = stream_pages(&src, &mut out)
            .unwrap()
            .expect("this build has sqlite_dbpage");
        assert_eq!(
            tables,
            vec![TableCount {
                name: "t".into(),
                rows: 5000
            }]
        );
        // The stream is a whole database file in rollback-journal mode.
        assert_eq!((out[18], out[19]), (1, 1));
        let copy = dir.path().join("copy.db");
        std::fs::write(&copy, &out).unwrap();
        let c = Connection::open(&copy).unwrap();
        assert!(integrity_problems(&c).unwrap().is_empty());
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        assert_eq!(count_tables(&c).unwrap(), tables);
    }
}
