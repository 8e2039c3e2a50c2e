//! SQLite fixtures.

use crate::testdb::{ConcurrentWrites, Engine};
use crate::{Cmd, Scene};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::Child;

/// The dbsafe URL of the database file at `path`.
pub fn url(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

/// Creates a database with a few tables, NULLs, non-ASCII text and blobs.
pub fn sample(path: &Path, rows: u64) {
    let c = Connection::open(path).expect("open sample");
    c.execute_batch(
        "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, note TEXT);
         CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL, payload BLOB);
         CREATE INDEX orders_customer ON orders(customer_id);
         CREATE TABLE events(id INTEGER PRIMARY KEY, at TEXT, kind TEXT);
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;",
    )
    .expect("schema");
    let tx = c.unchecked_transaction().expect("tx");
    for i in 0..rows {
        tx.execute(
            "INSERT INTO customers(name, email, note) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                format!("Zoë Ångström {i}"),
                format!("user{i}@example.com"),
                if i % 3 == 0 {
                    None
                } else {
                    Some("日本語 ✓")
                }
            ],
        )
        .expect("insert");
        tx.execute(
            "INSERT INTO orders(customer_id, total, payload) VALUES (?1, ?2, randomblob(64))",
            rusqlite::params![i + 1, (i % 250) as f64 * 1.5],
        )
        .expect("insert");
    }
    for i in 0..rows / 2 {
        tx.execute(
            "INSERT INTO events(at, kind) VALUES (datetime('now'), ?1)",
            [format!("k{}", i % 7)],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
}

/// A [`sample`] database `name` in the test's directory; returns its path.
pub fn sample_in(s: &Scene, name: &str, rows: u64) -> PathBuf {
    let path = s.path(name);
    sample(&path, rows);
    path
}

/// A new test directory holding `app.db`, a [`sample`] database of `rows`
/// rows; returns the directory and the database's path.
pub fn app_db(rows: u64) -> (Scene, PathBuf) {
    let s = Scene::new();
    let app = sample_in(&s, "app.db", rows);
    (s, app)
}

/// Row counts of every table, sorted by name.
pub fn counts(path: &Path) -> Vec<(String, u64)> {
    let c = Connection::open(path).expect("open");
    let mut st = c
        .prepare("SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .expect("prepare");
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    names
        .into_iter()
        .map(|n| {
            let k: i64 = c
                .query_row(&format!("SELECT count(*) FROM \"{n}\""), [], |r| r.get(0))
                .unwrap();
            (n, k as u64)
        })
        .collect()
}

/// A digest of every table's full contents, for exact comparisons.
pub fn contents(path: &Path) -> Vec<(String, String)> {
    let c = Connection::open(path).expect("open");
    counts(path)
        .into_iter()
        .map(|(n, _)| {
            let mut st = c
                .prepare(&format!("SELECT * FROM \"{n}\" ORDER BY 1"))
                .unwrap();
            let cols = st.column_count();
            let mut acc = String::new();
            let mut rows = st.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() {
                for i in 0..cols {
                    acc.push_str(&format!("{:?}|", r.get_ref(i).unwrap()));
                }
                acc.push('\n');
            }
            (n, acc)
        })
        .collect()
}

crate::file_db! {
    /// SQLite databases `NAME.db` in a directory of their own.
    SqliteDb,
    Engine::files("sqlite", "sqlite"),
    ".db";

    fn fixture(&self, db: &str, rows: u64) {
        sample(&self.path(db), rows);
    }
    fn alter(&self, db: &str) {
        Connection::open(self.path(db))
            .expect("open")
            .execute_batch(
                "CREATE TABLE precious(x); INSERT INTO precious VALUES ('only in this one');",
            )
            .expect("alter");
    }
    fn counts(&self, db: &str) -> Vec<(String, u64)> {
        counts(&self.path(db))
    }
    fn contents(&self, db: &str) -> Vec<(String, String)> {
        contents(&self.path(db))
    }
    fn plain_restore(&self, db: &str) -> String {
        format!("cat > '{}'", self.path(db).display())
    }
}

impl ConcurrentWrites for SqliteDb {
    const WRITER_TABLE: &'static str = "events";
    const BUSY_ROWS: u64 = 20_000;
    fn start_writer(&self, db: &str) -> Child {
        crate::require("python3", "python3");
        let script = format!(
            "import os, sqlite3\n\
             c = sqlite3.connect('{db}', timeout=30, isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=WAL')\n\
             c.execute('PRAGMA synchronous=OFF')\n\
             while not os.path.exists('{stop}'):\n    \
             c.execute(\"INSERT INTO events(at, kind) VALUES (datetime('now'), 'writer')\")\n",
            db = self.path(db).display(),
            stop = self.stop_file(db).display()
        );
        Cmd::new("python3").arg("-c").arg(script).spawn()
    }
    fn stop_writer(&self, db: &str) {
        std::fs::write(self.stop_file(db), "").expect("stop file");
    }
}

impl SqliteDb {
    fn stop_file(&self, db: &str) -> PathBuf {
        self.0.path(&format!("{db}.stop"))
    }
}

/// Creates a database of `mb` MiB of incompressible blobs, big enough that
/// a snapshot of it takes a while.
pub fn blobs(path: &Path, mb: u64) {
    Connection::open(path)
        .expect("open")
        .execute_batch(&format!(
            "CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {})
             INSERT INTO blobs(b) SELECT randomblob(65536) FROM n;",
            mb * 16
        ))
        .expect("blobs");
}

/// A [`blobs`] database `name` of `mb` MiB in the test's directory; returns its path.
pub fn blobs_in(s: &Scene, name: &str, mb: u64) -> PathBuf {
    let path = s.path(name);
    blobs(&path, mb);
    path
}
