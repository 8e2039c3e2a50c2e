//! MariaDB fixtures: an ephemeral `mariadbd` per test.
//!
//! Each [`Server`] is installed by `mariadb-install-db` into its own
//! temporary directory and listens on its own unix socket and a free TCP
//! port on 127.0.0.1, so tests run in parallel. `root` has no password and
//! is used over the socket; the role [`APP_USER`] has a password with
//! characters a URL must percent-encode, for TCP. As root the server runs
//! with `--user=root`. Dropping the server stops it and removes every file.

use crate::testdb::{ConcurrentWrites, Engine, Passwords, TestDb, STOP_WRITER, WRITER_CONTROL};
use crate::Cmd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The user the password tests connect as over TCP.
pub const APP_USER: &str = "app";
/// What to install when a server binary is missing.
pub const SERVER_PACKAGE: &str = "the Debian package mariadb-server";
/// What to install when a client tool is missing.
pub const CLIENT_PACKAGE: &str = "the Debian package mariadb-client";

/// InnoDB settings shared by install and start (the system tablespace
/// must be described the same way both times); small and unsynced, for tests.
const INNODB: [&str; 2] = [
    "--innodb-data-file-path=ibdata1:8M:autoextend",
    "--innodb-log-file-size=8M",
];

/// A running throwaway MariaDB server.
pub struct Server {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The unix socket.
    pub sock: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The password of [`APP_USER`].
    pub password: String,
}

use crate::running_as_root;

/// The path of a server binary; fails naming the package when absent.
pub fn server_bin(name: &str) -> PathBuf {
    crate::which(name)
        .or_else(|| {
            ["/usr/sbin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is required by the MariaDB tests and is not installed: install {SERVER_PACKAGE} (scripts/test-deps.sh does)"
            )
        })
}

/// The path of a client tool; fails naming the package when absent.
pub fn client_bin(name: &str) -> PathBuf {
    crate::require(name, CLIENT_PACKAGE)
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    crate::pg::encode(s)
}

impl Server {
    /// Installs and starts a fresh server with [`APP_USER`] created.
    pub fn start() -> Server {
        let install = server_bin("mariadb-install-db");
        client_bin("mariadb");
        client_bin("mariadb-dump");
        let dir = crate::temp_dir("mariadb");
        let data = dir.path().join("data");
        let install_cmd = || {
            let c = Cmd::new(&install)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .args(INNODB);
            if running_as_root() {
                c.arg("--user=root")
            } else {
                c
            }
        };
        // mariadbd's bootstrap now and then dies of a signal on a loaded
        // machine (not something dbsafe does): a fresh data directory and
        // another try, then the error as it stands.
        for _ in 0..2 {
            if install_cmd().run().out.status.success() {
                break;
            }
            let _ = std::fs::remove_dir_all(&data);
        }
        if !data.join("mysql").is_dir() {
            install_cmd().succeeds();
        }
        let mut s = Server {
            sock: dir.path().join("mysqld.sock"),
            port: 0,
            password: format!(
                "Pw-{:08x}@/:!x'\"",
                std::process::id() ^ (crate::rand_u64() as u32)
            ),
            child: None,
            dir,
        };
        let mut last = String::new();
        // Another test may take the port between our probe and the bind: try a few.
        for _ in 0..5 {
            s.port = crate::free_port();
            let log = s.dir.path().join("server.log");
            let tmp = s.dir.path().join("tmp");
            std::fs::create_dir_all(&tmp).expect("server tmpdir");
            let _ = std::fs::remove_file(&log);
            let mut cmd = Command::new(server_bin("mariadbd"));
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", s.sock.display()))
                .arg(format!("--port={}", s.port))
                .arg(format!(
                    "--pid-file={}",
                    s.dir.path().join("mysqld.pid").display()
                ))
                .arg(format!("--log-error={}", log.display()))
                // Its own directory for internal temporary (Aria) tables, not
                // the /tmp every other test and server writes in.
                .arg(format!("--tmpdir={}", tmp.display()))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=64M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-doublewrite=0",
                    "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_general_ci",
                    "--performance-schema=OFF",
                    "--default-time-zone=+00:00",
                    "--max-connections=60",
                ])
                .args(INNODB)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if running_as_root() {
                cmd.arg("--user=root");
            }
            let mut child = cmd.spawn().expect("start mariadbd");
            let ping = || {
                Command::new(client_bin("mariadb-admin"))
                    .arg("--no-defaults")
                    .arg(format!("--socket={}", s.sock.display()))
                    .args(["-uroot", "ping"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let mut up = false;
            // Ends early when mariadbd exits: the port was taken meanwhile, try another.
            crate::poll_until(Duration::from_secs(60), || {
                up = ping();
                up || matches!(child.try_wait(), Ok(Some(_)))
            });
            if up {
                s.child = Some(child);
                s.sql(
                    "",
                    &format!(
                        "CREATE USER '{APP_USER}'@'127.0.0.1' IDENTIFIED BY '{pw}';\n\
                         GRANT ALL ON *.* TO '{APP_USER}'@'127.0.0.1';",
                        pw = s.password.replace('\\', "\\\\").replace('\'', "''")
                    ),
                );
                return s;
            }
            crate::kill_and_reap(&mut child);
            last = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("cannot start a MariaDB test server:\n{last}");
    }

    /// A `mariadb` client command as root on `db` (empty: none), reading SQL on stdin.
    pub fn client(&self, db: &str) -> Cmd {
        let mut c = Cmd::new(client_bin("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.sock.display()))
            .args([
                "-uroot",
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
            ]);
        if !db.is_empty() {
            c = c.arg(format!("--database={db}"));
        }
        c
    }

    /// Runs SQL as root; returns the tab-separated output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.client(db).stdin(sql.to_string()).succeeds().stdout()
    }

    /// The single value a query returns.
    pub fn scalar(&self, db: &str, sql: &str) -> String {
        self.sql(db, sql).trim().to_string()
    }

    /// The base tables of `db`, sorted.
    pub fn tables(&self, db: &str) -> Vec<String> {
        crate::lines_of(&self.sql(
            db,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_type = 'BASE TABLE' ORDER BY table_name;",
        ))
    }

    /// Row count of a table (or `table WHERE ...`).
    pub fn count(&self, db: &str, table: &str) -> u64 {
        self.scalar(db, &format!("SELECT COUNT(*) FROM {table};"))
            .parse()
            .expect("count")
    }

    /// Per table: the contents in primary-key order, as a sha256 of the client's output.
    pub fn digests(&self, db: &str) -> Vec<(String, String)> {
        self.tables(db)
            .into_iter()
            .map(|t| {
                let out = self
                    .client(db)
                    .stdin(format!("SELECT * FROM `{t}` ORDER BY 1;"))
                    .succeeds();
                let sum = Cmd::new("sha256sum")
                    .stdin(out.out.stdout.clone())
                    .succeeds()
                    .stdout();
                (t, sum.split_whitespace().next().unwrap_or("").to_string())
            })
            .collect()
    }

    /// `CHECKSUM TABLE` of every base table, sorted by table.
    pub fn checksums(&self, db: &str) -> Vec<(String, String)> {
        self.tables(db)
            .into_iter()
            .map(|t| {
                let line = self.scalar(db, &format!("CHECKSUM TABLE `{t}`;"));
                let sum = line.rsplit('\t').next().unwrap_or("").to_string();
                (t, sum)
            })
            .collect()
    }

    /// Routines, triggers, events and views of a database, for comparisons.
    pub fn objects(&self, db: &str) -> String {
        self.sql(
            db,
            "SELECT routine_type, routine_name FROM information_schema.routines WHERE routine_schema = DATABASE() ORDER BY 2;\n\
             SELECT 'TRIGGER', trigger_name FROM information_schema.triggers WHERE trigger_schema = DATABASE() ORDER BY 2;\n\
             SELECT 'EVENT', event_name FROM information_schema.events WHERE event_schema = DATABASE() ORDER BY 2;\n\
             SELECT 'VIEW', table_name FROM information_schema.views WHERE table_schema = DATABASE() ORDER BY 2;\n",
        )
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The server's side of a failed test (a crash shows only here).
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- MariaDB server log (last lines)");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut child) = self.child.take() {
            // SIGTERM (through kill(1)) asks for a clean shutdown; SIGKILL after 30s.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            if crate::poll_until(Duration::from_secs(30), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                return;
            }
            crate::kill_and_reap(&mut child);
        }
    }
}

/// The fixture schema: strings with commas, parentheses, quotes,
/// backslashes and newlines, binary data, NULLs, a view, a trigger, a
/// procedure, a function, an event, an empty table; deterministic contents.
pub fn fixture_sql(rows: u64) -> String {
    format!(
        "CREATE TABLE customers(id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(200) NOT NULL,
  email VARCHAR(200) UNIQUE, note TEXT) ENGINE=InnoDB;
CREATE TABLE orders(id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL,
  total DECIMAL(12,2), payload BLOB, placed_at DATETIME NOT NULL DEFAULT '2025-01-01 00:00:00',
  KEY orders_customer (customer_id), FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB;
CREATE TABLE events(id BIGINT PRIMARY KEY AUTO_INCREMENT, at DATETIME(6) NOT NULL DEFAULT NOW(6), kind VARCHAR(50)) ENGINE=InnoDB;
CREATE TABLE audit_log(id BIGINT PRIMARY KEY AUTO_INCREMENT, order_id BIGINT) ENGINE=InnoDB;
CREATE TABLE empty_table(x INT) ENGINE=InnoDB;
CREATE TABLE `odd name, (x)`(k VARCHAR(20) PRIMARY KEY, v TEXT) ENGINE=InnoDB;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit_log(order_id) VALUES (NEW.id);
DELIMITER //
CREATE PROCEDURE fill(n INT) BEGIN
  DECLARE i INT DEFAULT 1;
  WHILE i <= n DO
    INSERT INTO customers(name, email, note) VALUES (
      CONCAT('Zoë Ångström, \"the\" (', i, ') it''s'), CONCAT('user', i, '@example.com'),
      IF(i % 3 = 0, NULL, CONCAT('日本語 ✓ ', i, ' back\\\\slash; semi; (paren) \\n newline')));
    INSERT INTO orders(customer_id, total, payload) VALUES (i, (i % 250) * 1.5,
      IF(i % 5 = 0, NULL, CONCAT(UNHEX(MD5(i)), X'00FF2728')));
    SET i = i + 1;
  END WHILE;
END//
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2//
DELIMITER ;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM events WHERE at < '2000-01-01';
START TRANSACTION;
CALL fill({rows});
COMMIT;
INSERT INTO events(at, kind) SELECT '2025-01-01 00:00:00' + INTERVAL seq MINUTE, CONCAT('k', seq % 7)
  FROM (SELECT id AS seq FROM customers WHERE id <= {half}) s;
INSERT INTO `odd name, (x)` VALUES ('a', 'x''y'), ('b', ');'), ('c', NULL);
"
    ,
        half = rows / 2
    )
}

/// The writer of the concurrent-writes scenario: a row in `events` (and
/// one in `orders`) per statement, autocommitted, until `writer_control.stop`.
const WRITER_SQL: &str = "CREATE PROCEDURE writer() BEGIN
  DECLARE deadline DATETIME DEFAULT NOW() + INTERVAL 60 SECOND;
  REPEAT
    INSERT INTO events(kind) VALUES ('writer');
    INSERT INTO orders(customer_id, total) VALUES (1, 1);
    DO SLEEP(0.002);
  UNTIL NOW() > deadline OR (SELECT stop FROM writer_control) END REPEAT;
END";

impl TestDb for Server {
    const ENGINE: Engine = Engine::server("mysql", "sql");
    fn url(&self, db: &str) -> String {
        format!(
            "mysql://root@/{db}?socket={}",
            encode(&self.sock.to_string_lossy()).replace("%2F", "/")
        )
    }
    fn fixture(&self, db: &str, rows: u64) {
        self.sql("", &format!("CREATE DATABASE `{db}`;"));
        self.sql(db, &fixture_sql(rows));
    }
    fn alter(&self, db: &str) {
        self.sql(db, "CREATE TABLE only_here(x INT);");
    }
    fn counts(&self, db: &str) -> Vec<(String, u64)> {
        self.tables(db)
            .into_iter()
            .map(|t| {
                let n = self.scalar(db, &format!("SELECT COUNT(*) FROM `{t}`;"));
                (t, n.parse().expect("count"))
            })
            .collect()
    }
    fn contents(&self, db: &str) -> Vec<(String, String)> {
        let mut v = self.digests(db);
        v.extend(self.checksums(db));
        v.push(("objects".to_string(), self.objects(db)));
        v
    }
    fn databases(&self) -> Vec<String> {
        crate::lines_of(&self.sql("", "SHOW DATABASES;"))
    }
    fn plain_restore(&self, db: &str) -> String {
        self.sql("", &format!("CREATE DATABASE `{db}`;"));
        format!(
            "'{}' --no-defaults --socket='{}' -uroot '{db}'",
            client_bin("mariadb").display(),
            self.sock.display()
        )
    }
}

impl ConcurrentWrites for Server {
    const WRITER_TABLE: &'static str = "events";
    const BUSY_ROWS: u64 = 30_000;
    fn start_writer(&self, db: &str) -> Child {
        self.sql(
            db,
            &format!("{WRITER_CONTROL}DELIMITER //\n{WRITER_SQL}//\nDELIMITER ;\n"),
        );
        self.client(db).arg("-e").arg("CALL writer();").spawn()
    }
    fn stop_writer(&self, db: &str) {
        self.sql(db, STOP_WRITER);
    }
}

impl Passwords for Server {
    const CLIENT_TOOLS: &'static [&'static str] = &["mariadb-dump", "mariadb"];
    const PASSWORD_ENV: &'static str = "MYSQL_PWD";
    const WRONG_PASSWORD: &'static str = "Access denied";
    const SCHEME: &'static str = "mariadb";
    const ROLE: &'static str = APP_USER;
    fn login(&self) -> (u16, &str) {
        (self.port, &self.password)
    }
    fn dumping(&self, _db: &str) -> String {
        "--single-transaction".to_string()
    }
}
