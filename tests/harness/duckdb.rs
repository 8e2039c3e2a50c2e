//! DuckDB fixtures, driven through the real `duckdb` CLI.

use crate::testdb::Engine;
use crate::{require, Cmd};
use std::path::{Path, PathBuf};

/// The package hint for a missing `duckdb`.
pub const PACKAGE: &str = "the DuckDB CLI (pip install duckdb-cli)";

/// The `duckdb` CLI; fails naming the package when it is not installed.
pub fn cli() -> PathBuf {
    require("duckdb", PACKAGE)
}

/// A `duckdb` command on `db` reading SQL on stdin, printing `|`-separated
/// rows without a header, stopping at the first error.
pub fn cmd(db: &Path) -> Cmd {
    Cmd::new(cli())
        .args([
            "-batch",
            "-bail",
            "-init",
            "/dev/null",
            "-list",
            "-noheader",
        ])
        .arg(db)
}

/// A `duckdb` session on `db` that holds it open, reading SQL on its stdin
/// (its output discarded) until the stdin is closed.
pub fn session(db: &Path) -> std::process::Child {
    std::process::Command::new(cli())
        .args(["-batch", "-init", "/dev/null"])
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start duckdb")
}

/// Runs SQL on `db` and returns what it printed.
pub fn sql(db: &Path, sql: &str) -> String {
    cmd(db).stdin(sql.to_string()).succeeds().stdout()
}

/// Creates a database with tables in two schemas, a view, a sequence, a
/// macro, an enum, an index, a foreign key, nested types, NULLs, blobs and
/// non-ASCII text; deterministic contents.
///
/// The tables of schema `inventory` are named with the file's catalog, so
/// a database file called `inventory.duckdb` (whose catalog name clashes
/// with the schema) works too.
pub fn fixture(db: &Path, rows: u64) {
    let catalog = db
        .file_stem()
        .expect("file name")
        .to_string_lossy()
        .replace('"', "\"\"");
    let items = format!("\"{catalog}\".inventory.items");
    sql(
        db,
        &format!(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE customers(id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, note VARCHAR, m mood);
CREATE TABLE orders(id BIGINT PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
  total DECIMAL(12,2), payload BLOB, tags VARCHAR[], meta STRUCT(a INTEGER, b VARCHAR));
CREATE INDEX orders_customer ON orders(customer_id);
CREATE SCHEMA inventory;
CREATE TABLE {items}(sku VARCHAR PRIMARY KEY, label VARCHAR, price DOUBLE);
CREATE TABLE empty_table(x INTEGER);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE SEQUENCE invoice_no START 1000;
CREATE MACRO twice(a) AS a * 2;
INSERT INTO customers SELECT i, 'Zoë Ångström, \"the\" (' || i || ')', CASE WHEN i % 3 = 0 THEN NULL ELSE '日本語 ✓ ' || i END,
  CASE i % 3 WHEN 0 THEN 'sad' WHEN 1 THEN 'ok' ELSE 'happy' END FROM range(1, {rows} + 1) r(i);
INSERT INTO orders SELECT i, i, i % 250 * 1.5, CASE WHEN i % 5 = 0 THEN NULL ELSE ('\\x00\\xFF' || i)::BLOB END,
  ['a', NULL, 'ü' || i], {{'a': i, 'b': 'x' || i}} FROM range(1, {rows} + 1) r(i);
INSERT INTO {items} SELECT 'sku-' || i, 'Ärmel №' || i, i * 0.99 FROM range(1, 21) r(i);
SELECT nextval('invoice_no') FROM range(5);
CHECKPOINT;
"
        ),
    );
}

/// Tables (`schema.table`) and exact row counts, sorted.
pub fn counts(db: &Path) -> Vec<(String, u64)> {
    tables(db)
        .into_iter()
        .map(|t| {
            let n = sql(db, &format!("SELECT count(*) FROM {};", quoted(db, &t)));
            (t, n.trim().parse().expect("count"))
        })
        .collect()
}

/// `"catalog"."schema"."table"`: a file's catalog is named after its stem,
/// which may also be a schema's name.
fn quoted(db: &Path, qualified: &str) -> String {
    let catalog = sql(db, "SELECT current_database();");
    let (s, t) = qualified.split_once('.').expect("schema.table");
    format!("\"{}\".\"{s}\".\"{t}\"", catalog.trim())
}

/// The user tables, `schema.table`, sorted.
pub fn tables(db: &Path) -> Vec<String> {
    crate::lines_of(&sql(
        db,
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() \
         WHERE database_name = current_database() AND NOT internal ORDER BY 1;",
    ))
}

/// Per table: the md5 of all its rows rendered as text, in order.
pub fn checksums(db: &Path) -> Vec<(String, String)> {
    tables(db)
        .into_iter()
        .map(|t| {
            let sum = sql(
                db,
                &format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(x::VARCHAR, chr(10) ORDER BY x::VARCHAR)), '') FROM {} AS x;",
                    quoted(db, &t)
                ),
            );
            (t, sum.trim().to_string())
        })
        .collect()
}

/// The write-ahead log beside a database file.
pub fn wal(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.wal", db.display()))
}

crate::file_db! {
    /// DuckDB databases `NAME.duckdb` in a directory of their own.
    DuckDb,
    Engine::files("duckdb", "duckdb"),
    ".duckdb";

    fn fixture(&self, db: &str, rows: u64) {
        fixture(&self.path(db), rows);
    }
    /// A row left in the WAL (no checkpoint at exit), which a restore must
    /// not replay onto the file it puts in place.
    fn alter(&self, db: &str) {
        sql(
            &self.path(db),
            "PRAGMA disable_checkpoint_on_shutdown;\nINSERT INTO inventory.items VALUES ('only-here', 'x', 1);\n",
        );
        assert!(wal(&self.path(db)).exists(), "the row is not in a WAL");
    }
    fn counts(&self, db: &str) -> Vec<(String, u64)> {
        counts(&self.path(db))
    }
    fn contents(&self, db: &str) -> Vec<(String, String)> {
        checksums(&self.path(db))
    }
    fn plain_restore(&self, db: &str) -> String {
        format!("cat > '{}'", self.path(db).display())
    }
    fn check_replaced(&self, db: &str) {
        assert!(
            !wal(&self.path(db)).exists(),
            "the old WAL was left beside the new file"
        );
    }
}
