//! MySQL and MariaDB (`mysql://`, `mariadb://`): `mariadb-dump` out, `mariadb` in.
//!
//! The dump is `--single-transaction --routines --triggers --events
//! --hex-blob`, streamed as it is written (`mysqldump` and `mysql` stand in
//! when the MariaDB names are missing). The URL's password reaches the
//! client tools only through `MYSQL_PWD` in their environment, never argv;
//! without one, the usual option files (`~/.my.cnf`) apply.
//!
//! Row counts must be those of the dump even while writers run, and a
//! second connection would see another moment. So they are counted from the
//! dump stream itself as it passes ([`DumpScanner`]): each `INSERT INTO`
//! statement's row tuples, minding quoted strings with commas, parentheses,
//! doubled quotes and backslash escapes. Tables whose `CREATE TABLE` has no
//! `INSERT` have zero rows. The same scanner is `dbverify`'s structural
//! check: a dump must start with the dump header, end with `-- Dump
//! completed`, and have no statement cut short.
//!
//! A restore streams the dump into the `mariadb` client. `--clean` drops
//! and recreates the database (with its character set and collation);
//! `--table T` keeps only T's sections of the dump (structure, data,
//! triggers), so only T is replaced. Table names are bare (the database is
//! the URL's).

mod scan;
mod url;

pub(crate) use self::scan::check;
use self::scan::filter_tables;
pub use self::scan::DumpScanner;
use self::url::ConnUrl;
use super::child::{self, Child};
use super::{Engine, Origin, RestoreOptions, SnapshotInfo, SnapshotOptions};
use crate::error::{Error, Result, ServerCode};
use crate::meta::TableCount;
use crate::name::Payload;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// The package that ships the client tools.
const PACKAGE: &str =
    "the Debian package mariadb-client (apt-get install mariadb-client), or a MySQL client";
const DUMP_TOOLS: [&str; 2] = ["mariadb-dump", "mysqldump"];
/// MariaDB's own client, which takes options Oracle's `mysql` does not.
const MARIADB_CLIENT: &str = "mariadb";
const CLIENT_TOOLS: [&str; 2] = [MARIADB_CLIENT, "mysql"];

/// The server's error number in a client tool's stderr: the client prints
/// `ERROR 1049 (42000) at line 1: ...`, the dump tools `Got error: 1049: ...`.
fn error_number(stderr: &str) -> Option<ServerCode> {
    stderr.lines().find_map(|line| {
        let rest = line
            .strip_prefix("ERROR ")
            .or_else(|| line.split_once("Got error: ").map(|(_, r)| r))?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().map(ServerCode::Mysql)
    })
}

/// The database of a `mysql://` or `mariadb://` URL.
pub(crate) fn open(url: &str) -> Result<Box<dyn Engine>> {
    Ok(Box::new(Mysql::new(url)?))
}

/// A fresh database on the `--scratch` server.
pub(crate) fn scratch(
    payload: Payload,
    _origin: &Origin,
    url: Option<&str>,
    _tmpdir: &std::path::Path,
) -> Result<Box<dyn Engine>> {
    let url = super::registry::scratch_server("mysql", payload, url)?;
    Ok(Box::new(Mysql::scratch(url)?))
}

/// What a restore target of this engine takes.
const TAKES: &str = "a MySQL/MariaDB target takes sql dumps made by mariadb-dump or mysqldump";

/// `` `ident` ``, backticks doubled.
fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `'literal'`, with the characters MySQL escapes.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A MySQL/MariaDB database reached through a `mysql://` or `mariadb://` URL.
pub struct Mysql {
    conn: ConnUrl,
    /// A scratch database is dropped if the tool is interrupted.
    _scratch: Option<crate::cleanup::ActionGuard>,
}

impl Mysql {
    /// The database of a URL.
    pub fn new(url: &str) -> Result<Mysql> {
        Ok(Mysql {
            _scratch: None,
            conn: ConnUrl::parse(url)?,
        })
    }

    /// A fresh, empty `dbsafe_verify_<hex>` database on the server of `server_url`.
    pub fn scratch(server_url: &str) -> Result<Mysql> {
        let mut conn = ConnUrl::parse(server_url).map_err(|e| e.context("--scratch"))?;
        conn.db = super::scratch_name();
        let mut m = Mysql {
            conn,
            _scratch: None,
        };
        m.drop_stale_scratch();
        m.create_database()?;
        let dropper = Mysql {
            conn: m.conn.clone(),
            _scratch: None,
        };
        m._scratch = Some(crate::cleanup::ActionGuard::new(move || {
            let _ = dropper.drop_target();
        }));
        Ok(m)
    }

    /// Drops the scratch databases that runs of this host left when killed.
    fn drop_stale_scratch(&self) {
        let listed = self.run_sql(
            None,
            &format!(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE {};",
                quote_literal(&format!("{}%", super::SCRATCH_PREFIX))
            ),
            "listing scratch databases",
        );
        for name in listed.unwrap_or_default() {
            if super::scratch_is_stale(name.trim()) {
                let _ = self.run_sql(
                    None,
                    &format!("DROP DATABASE IF EXISTS {};", quote_ident(name.trim())),
                    "dropping a stale scratch database",
                );
            }
        }
    }

    fn require_db(&self) -> Result<()> {
        if self.conn.db.is_empty() {
            return Err(
                Error::usage(format!("{} names no database", self.conn.display("")))
                    .hint("add the database to the URL: mysql://user@host:port/DATABASE"),
            );
        }
        Ok(())
    }

    /// A client tool with the password (if any) in its environment.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(pw) = &self.conn.login.password {
            cmd.env("MYSQL_PWD", pw);
        }
        cmd.args(self.conn.args());
        cmd
    }

    /// Runs SQL with the `mariadb` client (in `db`, when given); returns the output lines.
    fn run_sql(&self, db: Option<&str>, sql: &str, what: &str) -> Result<Vec<String>> {
        let program = child::require(&CLIENT_TOOLS, PACKAGE)?;
        let mut cmd = self.command(program);
        cmd.args([
            "--batch",
            "--skip-column-names",
            "--raw",
            "--connect-timeout=15",
        ]);
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        let out = child::run(
            program,
            PACKAGE,
            cmd,
            sql.as_bytes(),
            what,
            Some(error_number),
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    fn create_database(&self) -> Result<()> {
        self.create_database_as(&serde_json::Map::new())
    }

    /// Creates the database with the default character set and collation
    /// the snapshot recorded (utf8mb4 when it recorded none).
    fn create_database_as(
        &self,
        recorded: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        self.run_sql(
            None,
            &format!(
                "CREATE DATABASE {}{};",
                quote_ident(&self.conn.db),
                charset_clause(recorded).unwrap_or_else(|| " CHARACTER SET utf8mb4".into())
            ),
            &format!("creating database {}", self.conn.db),
        )
        .map(drop)
    }

    /// `columns` of the database's row in information_schema.SCHEMATA, one
    /// tab-separated line (aggregates answer even when there is no row).
    fn schemata(&self, columns: &str, what: &str) -> Result<Vec<String>> {
        self.run_sql(
            None,
            &format!(
                "SELECT {columns} FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};",
                quote_literal(&self.conn.db)
            ),
            what,
        )
    }

    /// The database's default character set and collation.
    fn charset(&self) -> Result<(String, String)> {
        let lines = self.schemata(
            "DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME",
            &format!("reading the character set of {}", self.url()),
        )?;
        lines
            .first()
            .and_then(|l| l.split_once('\t'))
            .map(|(c, o)| (c.to_string(), o.to_string()))
            .ok_or_else(|| Error::failed(format!("no character set for {}", self.url())))
    }

    /// Drops and recreates the database: with the character set and
    /// collation the snapshot recorded, else with its own.
    fn recreate_database(
        &self,
        recorded: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let db = quote_ident(&self.conn.db);
        if let Some(clause) = charset_clause(recorded) {
            return self
                .run_sql(
                    None,
                    &format!("DROP DATABASE {db};\nCREATE DATABASE {db}{clause};"),
                    &format!("dropping and recreating {}", self.url()),
                )
                .map(drop);
        }
        let lines = self.run_sql(
            None,
            &format!("SHOW CREATE DATABASE {db};"),
            "reading the database's definition",
        )?;
        let create = lines
            .first()
            .and_then(|l| l.split_once('\t'))
            .map(|(_, c)| c.to_string())
            .ok_or_else(|| Error::failed(format!("SHOW CREATE DATABASE {db} answered nothing")))?;
        self.run_sql(
            None,
            &format!("DROP DATABASE {db};\n{create};"),
            &format!("dropping and recreating {}", self.url()),
        )
        .map(drop)
    }

    fn version(&self) -> Result<String> {
        let lines = self.run_sql(
            Some(&self.conn.db),
            "SELECT VERSION();",
            &format!("connecting to {}", self.url()),
        )?;
        Ok(lines.first().cloned().unwrap_or_default())
    }
}

/// ` CHARACTER SET cs COLLATE co` from what a snapshot recorded (names are
/// plain words; anything else is not used).
fn charset_clause(recorded: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let word = |k: &str| {
        recorded
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    match (word("charset"), word("collation")) {
        (Some(c), Some(o)) => Some(format!(" CHARACTER SET {c} COLLATE {o}")),
        (Some(c), None) => Some(format!(" CHARACTER SET {c}")),
        _ => None,
    }
}

impl Engine for Mysql {
    fn engine(&self) -> &'static str {
        "mysql"
    }

    fn database(&self) -> String {
        crate::name::sanitize_database(&self.conn.db)
    }

    fn url(&self) -> String {
        self.conn.display(&self.conn.db)
    }

    fn host(&self) -> String {
        if self.conn.socket.is_some() || self.conn.host.is_empty() || self.conn.host == "localhost"
        {
            crate::fsutil::host_name()
        } else {
            self.conn.host.clone()
        }
    }

    fn snapshot(&self, opts: &SnapshotOptions, out: &mut dyn Write) -> Result<SnapshotInfo> {
        if opts.base {
            return Err(Error::usage(
                "--base is for PostgreSQL; MySQL/MariaDB snapshots are logical dumps",
            ));
        }
        self.require_db()?;
        let dump_tool = child::require(&DUMP_TOOLS, PACKAGE)?;
        child::require(&CLIENT_TOOLS, PACKAGE)?;
        // A missing source database is a failed snapshot (exit 1), not a missing artifact.
        let version = self.version().map_err(|e| match e.is_undefined_object() {
            true => Error::failed(e.message.clone()).with_source(e),
            false => e,
        })?;
        let mut cmd = self.command(dump_tool);
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
        ]);
        for t in &opts.exclude_tables {
            cmd.arg(format!("--ignore-table={}.{t}", self.conn.db));
        }
        cmd.arg(&self.conn.db);
        cmd.args(&opts.tables);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut dump = Child::spawn(dump_tool, PACKAGE, cmd)?;
        let mut dump_out = dump.child.stdout.take().expect("piped stdout");
        let mut scanner = DumpScanner::new();
        let mut buf = vec![0u8; 1 << 16];
        let copied: Result<()> = (|| loop {
            let n = match dump_out.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::failed(format!("reading {dump_tool}'s output: {e}"))),
            };
            scanner.feed(&buf[..n]);
            out.write_all(&buf[..n]).map_err(Error::from)?;
        })();
        drop(dump_out);
        if let Err(e) = copied {
            dump.kill();
            return Err(e.context(format!("streaming {dump_tool}'s output")));
        }
        dump.finish(&format!("{dump_tool} of {} failed", self.url()))?;
        let (tables, problems) = scanner.finish();
        if !problems.is_empty() {
            return Err(Error::failed(format!(
                "the dump of {} is not well-formed: {}",
                self.url(),
                problems.join("; ")
            )));
        }
        let (charset, collation) = self.charset()?;
        Ok(SnapshotInfo::new(
            tables,
            version,
            [
                ("dump_tool", dump_tool.into()),
                ("charset", charset.into()),
                ("collation", collation.into()),
            ],
        ))
    }

    fn exists(&self) -> Result<bool> {
        self.require_db()?;
        let lines = self.schemata("COUNT(*)", &format!("connecting to {}", self.url()))?;
        Ok(lines.first().map(|l| l.trim() != "0").unwrap_or(false))
    }

    fn tables(&self) -> Result<Vec<TableCount>> {
        let names: Vec<String> = self
            .run_sql(
                Some(&self.conn.db),
                "SELECT JSON_ARRAY(table_name) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') \
                 ORDER BY table_name;",
                &format!("listing the tables of {}", self.url()),
            )?
            .iter()
            .map(|l| {
                serde_json::from_str::<(String,)>(l)
                    .map(|(n,)| n)
                    .map_err(|e| Error::failed(format!("unexpected table name line {l:?}: {e}")))
            })
            .collect::<Result<_>>()?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let sql: String = names
            .iter()
            .map(|n| {
                format!(
                    "SELECT JSON_ARRAY({}, COUNT(*)) FROM {};\n",
                    quote_literal(n),
                    quote_ident(n)
                )
            })
            .collect();
        let mut counts: Vec<TableCount> = self
            .run_sql(
                Some(&self.conn.db),
                &sql,
                &format!("counting rows in {}", self.url()),
            )?
            .iter()
            .map(|l| {
                serde_json::from_str::<(String, u64)>(l)
                    .map(|(name, rows)| TableCount { name, rows })
                    .map_err(|e| Error::failed(format!("unexpected row count line {l:?}: {e}")))
            })
            .collect::<Result<_>>()?;
        counts.sort();
        Ok(counts)
    }

    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()> {
        let target = format!("MySQL database {}", self.url());
        super::expect_payload(payload, Payload::Sql, target, TAKES)?;
        self.require_db()?;
        let client = child::require(&CLIENT_TOOLS, PACKAGE)?;
        let created = !self.exists()?;
        if created {
            if !opts.create {
                return Err(super::missing_target(&self.url()));
            }
            self.create_database_as(&opts.recorded)?;
        } else if opts.clean && opts.tables.is_empty() {
            self.recreate_database(&opts.recorded)?;
        }
        let mut cmd = self.command(client);
        cmd.args(["--batch", "--connect-timeout=15"])
            .arg(format!("--database={}", self.conn.db));
        if client == MARIADB_CLIENT {
            // MariaDB's client prints a failing statement whole: a dump's
            // rows, which must not reach messages, the audit log or hooks.
            cmd.arg("--skip-print-query-on-error");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let result = (|| {
            let mut child = Child::spawn(client, PACKAGE, cmd)?;
            let mut stdin = child.child.stdin.take().expect("piped stdin");
            let fed = if opts.tables.is_empty() {
                child::feed(input, &mut stdin).map(|_| Vec::new())
            } else {
                match filter_tables(input, &mut stdin, &opts.tables) {
                    // The client stopped reading: its own error says why.
                    Err(e) if e.is_broken_pipe() => Ok(Vec::new()),
                    other => other,
                }
            };
            drop(stdin);
            let kept = match fed {
                Ok(k) => k,
                Err(e) => {
                    child.kill();
                    return Err(e.context("reading the artifact"));
                }
            };
            child.finish(&format!("{client} restoring into {} failed", self.url()))?;
            if let Some(missing) = opts.tables.iter().find(|w| {
                !kept
                    .iter()
                    .any(|k| super::table_selected(k, std::slice::from_ref(w), &[]))
            }) {
                return Err(Error::not_found(format!(
                    "table {missing} is not in the backup"
                )));
            }
            Ok(())
        })();
        if result.is_err() && created {
            // Leave the server as it was: no half-made database behind a failure.
            let _ = self.drop_target();
        }
        result
    }

    fn drop_target(&self) -> Result<()> {
        self.require_db()?;
        self.run_sql(
            None,
            &format!("DROP DATABASE IF EXISTS {};", quote_ident(&self.conn.db)),
            &format!("dropping database {}", self.conn.db),
        )
        .map(drop)
    }

    fn replace_needs_clean(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified_by_error_number() {
        let client = "ERROR 1049 (42000) at line 1: Base de datos desconocida 'nope'";
        assert_eq!(error_number(client), Some(ServerCode::Mysql(1049)));
        let dump = "mariadb-dump: Got error: 1045: \"Access denied\" when trying to connect";
        assert_eq!(error_number(dump), Some(ServerCode::Mysql(1045)));
        assert_eq!(error_number("mariadb: unknown option '--x'"), None);
        let e = child::failure(Some(1), "m".into(), client, Some(error_number));
        assert!(e.is_undefined_object());
    }
}
