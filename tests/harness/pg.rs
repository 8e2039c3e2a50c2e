//! PostgreSQL fixtures: an ephemeral PostgreSQL 15 cluster per test.
//!
//! Each [`Cluster`] has its own data directory, its own unix socket
//! directory and a free TCP port on 127.0.0.1, so tests run in parallel.
//! The superuser `postgres` is trusted on the socket; TCP connections need a
//! password (`scram-sha-256`), which the role [`APP_ROLE`] has. PostgreSQL
//! refuses to run as root, so as root the cluster belongs to the `postgres`
//! system user and `initdb`/`pg_ctl` run through `runuser`. Dropping the
//! cluster stops the server and removes every file.

use crate::testdb::{ConcurrentWrites, Engine, Passwords, TestDb, STOP_WRITER, WRITER_CONTROL};
use crate::Cmd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Where Debian installs the PostgreSQL 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The role the password tests connect as over TCP.
pub const APP_ROLE: &str = "app";

/// A running throwaway PostgreSQL server.
pub struct Cluster {
    dir: tempfile::TempDir,
    data: PathBuf,
    /// The unix socket directory.
    pub sock: PathBuf,
    /// The TCP port on 127.0.0.1 (the socket file uses it too).
    pub port: u16,
    /// The password of [`APP_ROLE`]; it has characters a URL must percent-encode.
    pub password: String,
    as_postgres: bool,
}

use crate::running_as_root;

/// The path of a PostgreSQL server binary; fails naming the packages when absent.
pub fn server_bin(name: &str) -> PathBuf {
    let p = Path::new(PG_BIN).join(name);
    assert!(
        p.is_file(),
        "{} is required by the PostgreSQL tests and is not installed: install the Debian packages \
         postgresql-15 and postgresql-client-15 (scripts/test-deps.sh does)",
        p.display()
    );
    p
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Cluster {
    /// initdb and start a fresh cluster with [`APP_ROLE`] created.
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Like [`Cluster::start`], with more initdb arguments (`--wal-segsize=64`).
    pub fn start_with(initdb_args: &[&str]) -> Cluster {
        let initdb = server_bin("initdb");
        server_bin("pg_ctl");
        let dir = crate::temp_dir("pg");
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).expect("socket dir");
        let as_postgres = running_as_root();
        let mut c = Cluster {
            data,
            sock,
            port: 0,
            password: format!(
                "Pw-{:08x}@/:!x",
                std::process::id() ^ (crate::rand_u64() as u32)
            ),
            as_postgres,
            dir,
        };
        if as_postgres {
            Cmd::new("chown")
                .args(["-R", "postgres:"])
                .arg(c.dir.path())
                .succeeds();
        }
        c.server_cmd(&initdb)
            .arg("-D")
            .arg(&c.data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .args(initdb_args)
            .succeeds();
        let conf = format!(
            "\n# dbsafe tests\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n\
             max_connections = 40\nmax_wal_size = 256MB\n",
            c.sock.display()
        );
        let conf_path = c.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        // Another test may take the port between our probe and the server's
        // bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            c.port = crate::free_port();
            let r = c.pg_ctl("start").run();
            if r.out.status.success() {
                c.psql(
                    "postgres",
                    &format!(
                        "CREATE ROLE {APP_ROLE} LOGIN CREATEDB PASSWORD '{}';",
                        c.password.replace('\'', "''")
                    ),
                );
                return c;
            }
            last = format!(
                "{}\n{}\n{}",
                r.stdout(),
                r.stderr(),
                std::fs::read_to_string(c.dir.path().join("server.log")).unwrap_or_default()
            );
        }
        panic!("cannot start a PostgreSQL test cluster:\n{last}");
    }

    fn server_cmd(&self, program: &Path) -> Cmd {
        if self.as_postgres {
            Cmd::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(program)
        } else {
            Cmd::new(program)
        }
    }

    /// `pg_ctl ACTION` on this cluster's data directory and port, waiting
    /// for it and logging to `server.log`.
    fn pg_ctl(&self, action: &str) -> Cmd {
        self.server_cmd(&server_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg(action)
    }

    /// Runs SQL as the superuser on `db`; returns the unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_cmd(db).stdin(sql).succeeds().stdout()
    }

    /// A psql command (superuser, socket, `-X -q -A -t`, stop on error) reading SQL on stdin.
    pub fn psql_cmd(&self, db: &str) -> Cmd {
        psql_at(&self.sock, self.port, db)
    }

    /// A pgbench command on `db` as the superuser, through the socket.
    pub fn pgbench(&self, db: &str) -> Cmd {
        Cmd::new(server_bin("pgbench"))
            .arg("-h")
            .arg(&self.sock)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", db])
    }

    /// Creates an empty database owned by the superuser.
    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\";"));
    }

    /// Creates an empty database owned by [`APP_ROLE`].
    pub fn create_app_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" OWNER {APP_ROLE};"),
        );
    }

    /// The single value a query returns.
    pub fn scalar(&self, db: &str, sql: &str) -> String {
        self.psql(db, sql).trim().to_string()
    }

    /// Row count of one table, or of `table WHERE ...`.
    pub fn count(&self, db: &str, table: &str) -> u64 {
        self.scalar(db, &format!("SELECT count(*) FROM {table};"))
            .parse()
            .expect("count")
    }

    /// Per table: `schema.table` and the sha256 of `COPY (SELECT * FROM t ORDER BY 1) TO STDOUT`.
    pub fn digests(&self, db: &str) -> Vec<(String, String)> {
        self.counts(db)
            .into_iter()
            .map(|(t, _)| {
                let (schema, table) = t.split_once('.').expect("qualified");
                let copy = self
                    .psql_cmd(db)
                    .stdin(format!(
                        "COPY (SELECT * FROM \"{schema}\".\"{table}\" ORDER BY 1) TO STDOUT;"
                    ))
                    .succeeds();
                let sum = Cmd::new("sha256sum")
                    .stdin(copy.out.stdout.clone())
                    .succeeds()
                    .stdout();
                (
                    t,
                    sum.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// Turns on archiving into `store` with scripts/postgres-wal-config.sh
    /// (walship push, recipients from `recipients_file` when given, else
    /// plain WAL) and restarts.
    pub fn archive_to(&self, store: &Path, recipients_file: Option<&Path>) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres-wal-config.sh");
        let mut cmd = Cmd::new(script)
            .arg(self.url("postgres"))
            .arg(store)
            .arg("60s")
            .env("WALSHIP", crate::bin("walship"))
            .env(
                "PATH",
                format!("{PG_BIN}:{}", std::env::var("PATH").unwrap_or_default()),
            );
        cmd = match recipients_file {
            Some(r) => cmd.env("DBSAFE_RECIPIENTS_FILE", r),
            None => cmd.env("DBSAFE_NO_ENCRYPT", "1"),
        };
        cmd.succeeds();
        self.psql("postgres", "ALTER SYSTEM SET full_page_writes = on;");
        self.restart();
    }

    /// Restarts the server (for settings that need it).
    pub fn restart(&self) {
        self.pg_ctl("restart").succeeds();
    }

    /// Switches to a new WAL segment and waits until the finished one is archived.
    pub fn switch_and_wait_archived(&self) {
        switch_wal_and_wait_archived(|sql| self.scalar("postgres", sql), || self.log());
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(Path::new(PG_BIN).join("pg_ctl"));
            c
        } else {
            Command::new(Path::new(PG_BIN).join("pg_ctl"))
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Switches a server (`query` runs SQL on it) to a new WAL segment and waits
/// until the segment it left is archived; returns that segment's name.
/// `log` is what the server said, for the failure message.
fn switch_wal_and_wait_archived(
    query: impl Fn(&str) -> String,
    log: impl FnOnce() -> String,
) -> String {
    let seg = query("SELECT pg_walfile_name(pg_switch_wal());");
    let archived = || {
        let last = query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;");
        !last.is_empty() && last.as_str() >= seg.as_str()
    };
    assert!(
        crate::poll_until(std::time::Duration::from_secs(60), archived),
        "WAL {seg} was not archived:\n{}",
        log()
    );
    seg
}

/// A psql command as `postgres` on `db` of the server whose socket is in
/// `socket_dir` (`-X -q -A -t`, stop on error), reading SQL on stdin.
fn psql_at(socket_dir: &Path, port: u16, db: &str) -> Cmd {
    Cmd::new(server_bin("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(socket_dir)
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", db])
}

/// Makes a test directory usable by the `postgres` system user (archive_command
/// and restore_command run as the server's user), when running as root.
pub fn share_with_server(dir: &Path) {
    if running_as_root() {
        Cmd::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir)
            .succeeds();
    }
}

/// A server that dbrestore started in a data directory; stopped on drop.
pub struct Restored {
    /// The data directory (also the socket directory).
    pub data: PathBuf,
    /// Its port.
    pub port: u16,
}

impl Restored {
    /// Runs SQL as `postgres` on the restored server.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql_at(&self.data, self.port, db)
            .stdin(sql)
            .succeeds()
            .stdout()
            .trim()
            .to_string()
    }

    /// Switches the restored server to a new WAL segment and waits until
    /// the segment it left is archived; returns that segment's name.
    pub fn switch_and_wait_archived(&self) -> String {
        switch_wal_and_wait_archived(
            |sql| self.psql("postgres", sql),
            || format!("(its log is under {})", self.data.display()),
        )
    }
}

impl Restored {
    /// `pg_ctl -D DATA` as the server's user.
    fn pg_ctl(&self) -> Command {
        let pg_ctl = Path::new(PG_BIN).join("pg_ctl");
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        cmd.arg("-D").arg(&self.data);
        cmd
    }

    /// Starts the restored data directory with pg_ctl, as a runbook would
    /// after `dbrestore --pgdata` without `--start`, and waits for it.
    pub fn start_by_hand(&self) {
        let log = self.data.join("log/by-hand.log");
        let out = self
            .pg_ctl()
            .arg("-l")
            .arg(&log)
            .args(["-w", "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The fixture schema: tables in two schemas, a view, a sequence, an index,
/// a foreign key, non-ASCII text, NULLs and bytea, deterministic contents.
pub fn fixture_sql(rows: u64) -> String {
    format!(
        "CREATE SCHEMA shop;
CREATE TABLE customers(id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, note text);
CREATE TABLE orders(id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id), total numeric(12,2), payload bytea,
  placed_at timestamptz NOT NULL DEFAULT '2025-01-01 00:00:00+00');
CREATE INDEX orders_customer_idx ON orders(customer_id);
CREATE TABLE events(id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), kind text);
CREATE TABLE shop.items(sku text PRIMARY KEY, label text, price numeric(10,2), tags text[]);
CREATE SEQUENCE invoice_no START 1000;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
INSERT INTO customers(name, email, note)
  SELECT 'Zoë Ångström ' || i, 'user' || i || '@example.com', CASE WHEN i % 3 = 0 THEN NULL ELSE '日本語 ✓ ' || i END
  FROM generate_series(1, {rows}) i;
INSERT INTO orders(customer_id, total, payload)
  SELECT i, (i % 250) * 1.5, CASE WHEN i % 5 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') || '\\x00ff'::bytea END
  FROM generate_series(1, {rows}) i;
INSERT INTO events(at, kind)
  SELECT '2025-01-01 00:00:00+00'::timestamptz + i * interval '1 minute', 'k' || (i % 7) FROM generate_series(1, {half}) i;
INSERT INTO shop.items SELECT 'sku-' || i, 'Ärmel №' || i, i * 0.99, ARRAY['a', NULL, 'ü'] FROM generate_series(1, 20) i;
SELECT setval('invoice_no', 1234);
",
        half = rows / 2
    )
}

/// The writer of the concurrent-writes scenario: a row in `events` (and
/// one in `orders`) per transaction until `writer_control.stop`.
const WRITER_SQL: &str = "DO $$
DECLARE deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
  LOOP
    INSERT INTO events(kind) VALUES ('writer');
    INSERT INTO orders(customer_id, total) VALUES (1, 1);
    COMMIT;
    EXIT WHEN clock_timestamp() > deadline OR (SELECT stop FROM writer_control);
    PERFORM pg_sleep(0.002);
  END LOOP;
END $$;";

impl TestDb for Cluster {
    const ENGINE: Engine = Engine::server("postgres", "pgdump");
    fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@{}:{}/{db}",
            encode(&self.sock.to_string_lossy()),
            self.port
        )
    }
    fn fixture(&self, db: &str, rows: u64) {
        self.create_app_db(db);
        // As the owner, so the role of the password tests can dump it all.
        self.psql(db, &format!("SET ROLE {APP_ROLE};\n{}", fixture_sql(rows)));
    }
    fn alter(&self, db: &str) {
        self.psql(
            db,
            "INSERT INTO shop.items VALUES ('only-here', 'x', 1, NULL);",
        );
    }
    fn counts(&self, db: &str) -> Vec<(String, u64)> {
        self.psql(
            db,
            "SELECT n.nspname || '.' || c.relname, \
               (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname !~ '^pg_' \
             ORDER BY 1;",
        )
        .lines()
        .map(|l| {
            let (t, n) = l.split_once('|').expect("name|count");
            (t.to_string(), n.parse().expect("count"))
        })
        .collect()
    }
    fn contents(&self, db: &str) -> Vec<(String, String)> {
        let mut v = self.digests(db);
        v.push((
            "invoice_no".to_string(),
            self.scalar(db, "SELECT last_value FROM invoice_no;"),
        ));
        v
    }
    fn databases(&self) -> Vec<String> {
        crate::lines_of(&self.psql("postgres", "SELECT datname FROM pg_database ORDER BY 1;"))
    }
    fn plain_restore(&self, db: &str) -> String {
        let pg_restore = crate::require("pg_restore", "the Debian package postgresql-client");
        self.create_db(db);
        format!("'{}' -d '{}'", pg_restore.display(), self.url(db))
    }
}

impl ConcurrentWrites for Cluster {
    const WRITER_TABLE: &'static str = "public.events";
    const BUSY_ROWS: u64 = 20_000;
    fn start_writer(&self, db: &str) -> Child {
        self.psql(db, WRITER_CONTROL);
        self.psql_cmd(db).arg("-c").arg(WRITER_SQL).spawn()
    }
    fn stop_writer(&self, db: &str) {
        self.psql(db, STOP_WRITER);
    }
}

impl Passwords for Cluster {
    const CLIENT_TOOLS: &'static [&'static str] = &["pg_dump", "pg_restore", "psql"];
    const PASSWORD_ENV: &'static str = "PGPASSWORD";
    const WRONG_PASSWORD: &'static str = "password authentication failed";
    const SCHEME: &'static str = "postgresql";
    const ROLE: &'static str = APP_ROLE;
    fn login(&self) -> (u16, &str) {
        (self.port, &self.password)
    }
    fn dumping(&self, db: &str) -> String {
        // How the clients are told where to connect.
        format!("postgresql://{APP_ROLE}@127.0.0.1:{}/{db}", self.port)
    }
    fn connects(&self, argv: &str) -> bool {
        // `pg_restore --list` reads a dump and connects nowhere.
        argv.contains(" -d ")
    }
}
