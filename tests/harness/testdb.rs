//! What the shared scenarios need of an engine's test database.
//!
//! Each engine's harness implements [`TestDb`] once (a PostgreSQL cluster,
//! a MariaDB server, a directory of SQLite or DuckDB files, a directory of
//! trees); the scenarios in [`crate::scenarios`] are written against it and
//! instantiated for every engine with [`crate::scenarios!`]. A database is
//! named by a short name (`shop`, `prod`): a database on a server, a file
//! or a directory beside the others on the file-backed engines.

use std::path::PathBuf;
use std::process::Child;

/// What the scenarios expect of an engine's artifacts and targets.
pub struct Engine {
    /// The engine's name in metadata.
    pub name: &'static str,
    /// The payload kind in metadata, also the file extension of an
    /// uncompressed, unencrypted artifact.
    pub payload: &'static str,
    /// Whether databases live on a server: a new one needs `--create`, a
    /// non-empty one `--clean`, and `--level restore` a `--scratch` server.
    pub server: bool,
}

impl Engine {
    /// An engine whose databases live on a server.
    pub const fn server(name: &'static str, payload: &'static str) -> Engine {
        Engine {
            name,
            payload,
            server: true,
        }
    }
    /// An engine whose databases are files (or trees).
    pub const fn files(name: &'static str, payload: &'static str) -> Engine {
        Engine {
            name,
            payload,
            server: false,
        }
    }
}

/// A directory of file-backed databases (or trees), removed on drop.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// An empty directory for the databases of `engine`.
    pub fn new(engine: &str) -> Files {
        Files {
            dir: crate::temp_dir(engine),
        }
    }
    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Declares a file-backed engine's test database: a [`Files`] directory
/// whose database `db` is the path `db` + `suffix`, with the URL
/// `ENGINE:PATH`; the rest of its [`TestDb`] implementation follows the `;`.
#[macro_export]
macro_rules! file_db {
    ($(#[$doc:meta])* $name:ident, $engine:expr, $suffix:literal; $($test_db:tt)*) => {
        $(#[$doc])*
        pub struct $name($crate::testdb::Files);

        impl $name {
            /// An empty directory for databases.
            pub fn start() -> $name {
                $name($crate::testdb::Files::new(
                    <$name as $crate::testdb::TestDb>::ENGINE.name,
                ))
            }
            /// The path of database `db`.
            pub fn path(&self, db: &str) -> std::path::PathBuf {
                self.0.path(&format!("{db}{}", $suffix))
            }
        }

        impl $crate::testdb::TestDb for $name {
            const ENGINE: $crate::testdb::Engine = $engine;
            fn url(&self, db: &str) -> String {
                format!("{}:{}", Self::ENGINE.name, self.path(db).display())
            }
            $($test_db)*
        }
    };
}

/// A place to create databases of one engine; stopped and removed on drop.
pub trait TestDb {
    /// The engine.
    const ENGINE: Engine;
    /// The URL of database `db`, as dbsafe takes it.
    fn url(&self, db: &str) -> String;
    /// Creates database `db` holding the engine's sample schema and `rows` rows.
    fn fixture(&self, db: &str, rows: u64);
    /// Adds to `db` something no backup of the sample has, so that a
    /// replaced database is told apart from a merged one.
    fn alter(&self, db: &str);
    /// The tables (or entry kinds) and their row counts, as metadata lists them.
    fn counts(&self, db: &str) -> Vec<(String, u64)>;
    /// Everything a restore must reproduce, per table (or entry), for equality.
    fn contents(&self, db: &str) -> Vec<(String, String)>;
    /// The `--scratch` URL for restore-level verification (server
    /// engines): the server itself, a URL that names no database.
    fn scratch_url(&self) -> String {
        assert!(
            Self::ENGINE.server,
            "{} has no scratch server",
            Self::ENGINE.name
        );
        self.url("")
    }
    /// The databases on the server (server engines), to find leftovers.
    fn databases(&self) -> Vec<String> {
        Vec::new()
    }
    /// A shell command that restores a decrypted, decompressed payload read
    /// on stdin into the new database `db` with the engine's own tools.
    fn plain_restore(&self, db: &str) -> String;
    /// Checks what is particular to the engine after `db` was replaced by a restore.
    fn check_replaced(&self, _db: &str) {}
}

/// Creates the table that a server engine's writer polls (in the same SQL
/// on every engine): it writes until [`STOP_WRITER`] sets `stop`.
pub const WRITER_CONTROL: &str = "CREATE TABLE writer_control(stop BOOLEAN NOT NULL);
INSERT INTO writer_control VALUES (false);
";

/// Tells a server engine's writer, polling [`WRITER_CONTROL`], to stop.
pub const STOP_WRITER: &str = "UPDATE writer_control SET stop = true;";

/// An engine whose databases take writers while a snapshot runs.
pub trait ConcurrentWrites: TestDb {
    /// The table the writer inserts into.
    const WRITER_TABLE: &'static str;
    /// How many sample rows make a snapshot last long enough to overlap writes.
    const BUSY_ROWS: u64;
    /// Starts a writer inserting into [`Self::WRITER_TABLE`] of `db`, one
    /// row per transaction, until told to stop; it then exits 0.
    fn start_writer(&self, db: &str) -> Child;
    /// Tells the writer of `db` to stop.
    fn stop_writer(&self, db: &str);
}

/// An engine whose URLs carry passwords, which dbsafe must keep out of sight.
pub trait Passwords: TestDb {
    /// The client tools dbsafe runs, which the scenario wraps to record their argv.
    const CLIENT_TOOLS: &'static [&'static str];
    /// The environment variable that hands the password to the client tools.
    const PASSWORD_ENV: &'static str;
    /// What the server says to a wrong password.
    const WRONG_PASSWORD: &'static str;
    /// The URL scheme of [`Passwords::password_url`].
    const SCHEME: &'static str;
    /// The role the password URLs log in as.
    const ROLE: &'static str;
    /// The server's TCP port on 127.0.0.1 and the role's password (which
    /// has characters a URL must percent-encode).
    fn login(&self) -> (u16, &str);
    /// The role's password.
    fn password(&self) -> &str {
        self.login().1
    }
    /// A URL for the role over TCP with the password in it (empty `db`: the server).
    fn password_url(&self, db: &str) -> String {
        format!(
            "{}://{}:{}@127.0.0.1:{}/{db}",
            Self::SCHEME,
            Self::ROLE,
            crate::pg::encode(self.password()),
            self.login().0
        )
    }
    /// A part of a client tool's argv that shows a dump of `db` is running.
    fn dumping(&self, db: &str) -> String;
    /// Whether a recorded client command line connects to a server (and so needs the password).
    fn connects(&self, _argv: &str) -> bool {
        true
    }
}
