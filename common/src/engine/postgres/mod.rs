//! PostgreSQL, logical: `pg_dump` custom format out, `pg_restore` in.
//!
//! The client tools run as child processes and are streamed; they receive a
//! password-free connection URI as `-d`, and the URL's password (if any) only
//! through `PGPASSWORD`, so nothing secret is in any argv and `.pgpass` and
//! the `PG*` variables work as libpq users expect.
//!
//! Row counts must be those of the dump even while writers run: a `psql`
//! session opens a repeatable-read transaction and exports its snapshot,
//! `pg_dump --snapshot` dumps exactly that snapshot while the same session
//! counts the rows in it, and the transaction stays open until `pg_dump` is
//! done.

mod base;
mod count;
pub mod data;
mod database;
pub mod roles;
pub(super) mod side;
mod url;

use self::url::ConnUrl;
use super::child::Child;
use super::{Engine, PayloadCheck, RestoreOptions, SnapshotInfo, SnapshotOptions};
use crate::error::{Error, Result};
use crate::meta::TableCount;
use crate::name::Payload;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

/// The Debian package that ships `pg_dump`, `pg_restore` and `psql`, as
/// missing-tool errors name it.
const CLIENT_PACKAGE_HINT: &str =
    "the Debian package postgresql-client (apt-get install postgresql-client)";
/// What a restore target of this engine takes.
const TAKES: &str = "a PostgreSQL target takes pg_dump custom-format (pgdump) artifacts";
/// Connected to for what cannot run inside the target database itself.
const MAINTENANCE_DBS: [&str; 2] = ["postgres", "template1"];

/// A PostgreSQL database reached through a `postgres://` or `postgresql://` URL.
#[derive(Debug, Clone)]
pub struct Postgres {
    conn: ConnUrl,
    /// The database for CREATE/DROP DATABASE and existence checks, when the
    /// user named one (a scratch server URL with a database).
    maintenance: Option<String>,
    /// A scratch database is dropped if the tool is interrupted.
    _scratch: Option<std::sync::Arc<crate::cleanup::ActionGuard>>,
}

/// The SQLSTATE of the first error in psql's stderr, as `VERBOSITY=verbose`
/// prints it: `ERROR:  42P01: relation ...` (the severity word may be in
/// any language; the code after it is not).
fn sqlstate(stderr: &str) -> Option<crate::error::ServerCode> {
    stderr.lines().find_map(|line| {
        let (_, rest) = line.split_once(":  ")?;
        let code = rest.split(':').next()?;
        (code.len() == 5
            && code
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
        .then(|| crate::error::ServerCode::Sqlstate(code.to_string()))
    })
}

/// Whether psql could not open (or lost) its session: it exits 2 then.
/// libpq reports connection failures without a SQLSTATE, so a missing
/// database at connection time is one of these.
fn no_session(e: &Error) -> bool {
    e.kind == crate::error::Kind::Child(Some(2))
}

/// `"ident"`, quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'literal'`, quotes doubled (standard_conforming_strings is on).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A pg_dump `-t`/`-T` pattern as (schema regex, name regex), following
/// psql's pattern rules: unquoted letters fold to lower case, `*` and `?` are
/// wildcards, `.` separates the schema, double quotes make everything literal.
fn pattern_regex(pattern: &str) -> (Option<String>, String) {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut().expect("one part at least");
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            '*' if !quoted => cur.push_str(".*"),
            '?' if !quoted => cur.push('.'),
            '$' if !quoted => cur.push_str("\\$"),
            c if quoted && "|*+?()[]{}.^$\\".contains(c) => {
                cur.push('\\');
                cur.push(c);
            }
            c if !quoted => cur.extend(c.to_lowercase()),
            c => cur.push(c),
        }
    }
    let name = parts.pop().unwrap_or_default();
    (parts.pop(), name)
}

/// An SQL condition on `n` (pg_namespace) and `c` (pg_class) matching any of `patterns`.
fn pattern_condition(patterns: &[String]) -> String {
    let terms: Vec<String> = patterns
        .iter()
        .map(|p| {
            let (schema, name) = pattern_regex(p);
            let schema_cond = match schema {
                Some(s) => format!("n.nspname ~ {}", quote_literal(&format!("^({s})$"))),
                // Like pg_dump, an unqualified pattern means the tables the search path sees.
                None => "pg_catalog.pg_table_is_visible(c.oid)".to_string(),
            };
            format!(
                "(c.relname ~ {} AND {schema_cond})",
                quote_literal(&format!("^({name})$"))
            )
        })
        .collect();
    format!("({})", terms.join(" OR "))
}

/// One query that lists the user tables (as pg_dump selects them) with exact
/// row counts, as JSON arrays `[schema, table, rows]`, one a line.
fn count_query(include: &[String], exclude: &[String]) -> String {
    let mut filter = String::new();
    if !include.is_empty() {
        filter.push_str(&format!(" AND {}", pattern_condition(include)));
    }
    if !exclude.is_empty() {
        filter.push_str(&format!(" AND NOT {}", pattern_condition(exclude)));
    }
    // query_to_xml runs each count inside this statement, hence inside the
    // caller's transaction snapshot, in one round trip.
    format!(
        "SELECT json_build_array(n.nspname, c.relname, \
           (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass \
                           AND d.objid = c.oid AND d.deptype = 'e'){filter} \
         ORDER BY n.nspname, c.relname;"
    )
}

fn parse_counts(lines: &[String]) -> Result<Vec<TableCount>> {
    lines
        .iter()
        .map(|l| {
            let (schema, table, rows): (String, String, u64) =
                serde_json::from_str(l).map_err(|e| {
                    Error::failed(format!("unexpected row count line from psql {l:?}: {e}"))
                })?;
            Ok(TableCount {
                name: format!("{schema}.{table}"),
                rows,
            })
        })
        .collect()
}

/// The error for a client tool that is not installed.
fn missing_tool(program: &str) -> Error {
    super::child::missing_tool(program, CLIENT_PACKAGE_HINT)
}

/// Fails early, before connecting anywhere, when a client tool is missing.
fn require_tools(programs: &[&str]) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in programs {
        if !std::env::split_paths(&path).any(|d| d.join(program).is_file()) {
            return Err(missing_tool(program));
        }
    }
    Ok(())
}

/// `--table` names as pg_restore takes them: bare names for `-t`, and the
/// schema for `-n` when they are qualified. pg_restore matches `-n` and `-t`
/// together, so qualified names must all be in one schema, and cannot be
/// mixed with bare ones.
fn table_selection(tables: &[String]) -> Result<(Option<String>, Vec<String>)> {
    let split: Vec<(Option<&str>, &str)> = tables
        .iter()
        .map(|t| match t.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, t.as_str()),
        })
        .collect();
    let mut schemas: Vec<Option<&str>> = split.iter().map(|(s, _)| *s).collect();
    schemas.dedup();
    if schemas.len() > 1 {
        return Err(Error::usage(format!(
            "cannot restore tables {} in one go: pg_restore selects qualified tables by one schema",
            tables.join(", ")
        ))
        .hint("give tables of one schema (schema.table) or only unqualified names, and restore the others in another run"));
    }
    let schema = schemas.into_iter().next().flatten().map(str::to_string);
    Ok((
        schema,
        split.into_iter().map(|(_, t)| t.to_string()).collect(),
    ))
}

/// A `psql` coprocess: statements go to its stdin, results come back a row a line.
struct Psql {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    marker: String,
    what: String,
}

impl Psql {
    /// Reads result lines up to the end-of-batch marker.
    fn read_batch(
        stdout: &mut BufReader<ChildStdout>,
        marker: &str,
    ) -> io::Result<Option<Vec<String>>> {
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let l = line.trim_end_matches(['\n', '\r']);
            if l == marker {
                return Ok(Some(lines));
            }
            lines.push(l.to_string());
        }
    }

    /// Sends statements followed by the marker, without reading the results.
    fn send(&mut self, sql: &str) -> Result<()> {
        let batch = format!("{sql}\n\\echo {}\n", self.marker);
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::failed("psql's input is closed"))?;
        match stdin
            .write_all(batch.as_bytes())
            .and_then(|_| stdin.flush())
        {
            Ok(()) => Ok(()),
            // psql died; its stderr says why, which `died` reports.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(Error::io("writing to psql", e)),
        }
    }

    /// Runs statements and returns their output lines.
    fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.send(sql)?;
        match Self::read_batch(&mut self.stdout, &self.marker) {
            Ok(Some(lines)) => Ok(lines),
            Ok(None) => Err(self.died()),
            Err(e) => Err(Error::io("reading from psql", e)),
        }
    }

    /// The error for a psql that stopped answering.
    fn died(&mut self) -> Error {
        self.stdin = None;
        let status = self.child.child.wait().ok().and_then(|s| s.code());
        let stderr = self.child.stderr_text();
        let detail = stderr.strip_prefix("psql: error: ").unwrap_or(&stderr);
        if detail.is_empty() {
            return Error::child(status, format!("{}: psql ended unexpectedly", self.what));
        }
        let err = super::child::failure(
            status,
            format!("{}: {detail}", self.what),
            &stderr,
            Some(sqlstate),
        );
        if no_session(&err) {
            return err.hint(
                "check that the server is running and the URL's host, port, user and database; \
                 a password comes from the URL, PGPASSWORD or ~/.pgpass",
            );
        }
        err
    }

    /// Ends the session: closes its input and waits.
    fn finish(mut self) -> Result<()> {
        self.stdin = None;
        self.child.finish(&self.what)
    }
}

/// The roles answer of [`roles::QUERY`]: one line of JSON.
fn roles_of(lines: &[String]) -> Result<roles::Globals> {
    let line = lines
        .iter()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| Error::failed(format!("unexpected answer to the roles query: {lines:?}")))?;
    serde_json::from_str(line)
        .map_err(|e| Error::failed(format!("unexpected answer to the roles query: {e}")))
}

/// The database of a `postgres://` or `postgresql://` URL.
pub(crate) fn open(url: &str) -> Result<Box<dyn Engine>> {
    Ok(Box::new(Postgres::new(url)?))
}

/// A fresh database on the `--scratch` server, to restore a dump into.
pub(crate) fn scratch_dump(payload: Payload, url: Option<&str>) -> Result<Box<dyn Engine>> {
    let url = super::registry::scratch_server("postgres", payload, url)?;
    Ok(Box::new(Postgres::scratch(url)?))
}

/// The home of a `postgres://` target: sides are databases on its server.
pub(crate) fn home(url: &str) -> Result<Box<dyn super::side::Home>> {
    side::home(url)
}

/// The payload read whole by `pg_restore` into a script sent nowhere
/// (`-f /dev/null`, no server): every block of every entry, so an archive
/// cut short anywhere is a problem, where `--list` reads only the table of
/// contents. Its progress (`-v`, in English) counts the entries.
pub(crate) fn check(input: &mut dyn Read) -> Result<PayloadCheck> {
    let mut cmd = Command::new("pg_restore");
    cmd.args(["-v", "-f", "/dev/null"])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Child::spawn("pg_restore", CLIENT_PACKAGE_HINT, cmd)?.fed(input)?;
    let status = child
        .child
        .wait()
        .map_err(|e| Error::io("waiting for pg_restore", e))?;
    let stderr = child.stderr_text();
    // A progress line: `pg_restore: VERB ...`.
    let is = |line: &str, verbs: &[&str]| {
        line.strip_prefix("pg_restore: ")
            .is_some_and(|l| verbs.iter().any(|v| l.starts_with(v)))
    };
    let count = |verbs: &[&str]| stderr.lines().filter(|l| is(l, verbs)).count();
    let (data, entries) = (
        count(&["processing data for table "]),
        count(&["creating ", "executing ", "processing "]),
    );
    let mut problems = Vec::new();
    if !status.success() {
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| !is(l, &["creating ", "executing ", "processing ", "restoring "]))
            .collect();
        problems.push(format!(
            "pg_restore cannot read the archive ({status}): {}",
            super::child::brief(&said.join("\n")).replace('\n', "; ")
        ));
    } else if entries == 0 {
        problems.push("pg_restore found no entries in the archive".into());
    }
    Ok(PayloadCheck {
        checks: vec![format!(
            "pg_restore read the whole archive: {entries} entries, {data} TABLE DATA"
        )],
        problems,
        tables: None,
    })
}

impl Postgres {
    /// The database of a `postgres://` or `postgresql://` URL.
    pub fn new(url: &str) -> Result<Postgres> {
        Ok(Postgres {
            conn: ConnUrl::parse(url)?,
            maintenance: None,
            _scratch: None,
        })
    }

    /// A fresh, empty `dbsafe_verify_<hex>` database on the server of
    /// `server_url`, whose own database (if any) serves to create and drop it.
    pub fn scratch(server_url: &str) -> Result<Postgres> {
        let server = Postgres::new(server_url).map_err(|e| e.context("--scratch"))?;
        let name = super::scratch_name();
        let mut conn = server.conn.clone();
        let maintenance = conn.dbname.take();
        conn.dbname = Some(name.clone());
        let mut pg = Postgres {
            conn,
            maintenance,
            _scratch: None,
        };
        pg.drop_stale_scratch();
        pg.create_database(&name)?;
        let dropper = pg.clone();
        pg._scratch = Some(std::sync::Arc::new(crate::cleanup::ActionGuard::new(
            move || {
                let _ = dropper.drop_target();
            },
        )));
        Ok(pg)
    }

    /// Drops the scratch databases that runs of this host left when killed.
    fn drop_stale_scratch(&self) {
        let listed = self.run_maintenance(&format!(
            "SELECT datname FROM pg_catalog.pg_database WHERE starts_with(datname, {});",
            quote_literal(super::SCRATCH_PREFIX)
        ));
        for name in listed.unwrap_or_default() {
            let name = name.trim();
            if super::scratch_is_stale(name) {
                let _ = self.run_maintenance(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE);",
                    quote_ident(name)
                ));
            }
        }
    }

    fn db(&self) -> String {
        self.conn.effective_db()
    }

    /// A client tool with the password (if any) in its environment.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(pw) = &self.conn.login.password {
            cmd.env("PGPASSWORD", pw);
        }
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd.env("PGCONNECT_TIMEOUT", "15");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts a psql session on `db`.
    fn psql(&self, db: &str) -> Result<Psql> {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-v", "VERBOSITY=verbose", "-d"])
            .arg(self.conn.uri(db));
        let mut child = Child::spawn("psql", CLIENT_PACKAGE_HINT, cmd)?.classify(Some(sqlstate));
        let stdin = child.child.stdin.take();
        let stdout = BufReader::new(child.child.stdout.take().expect("piped stdout"));
        Ok(Psql {
            child,
            stdin,
            stdout,
            marker: format!("__dbsafe_{:016x}__", rand::random::<u64>()),
            what: format!("psql on {}", self.conn.uri(db)),
        })
    }

    /// Runs statements in one session on `db` and returns the output lines.
    fn run_sql(&self, db: &str, sql: &str) -> Result<Vec<String>> {
        let mut psql = self.psql(db)?;
        let lines = psql.query(sql)?;
        psql.finish()?;
        Ok(lines)
    }

    /// Runs `f` on the maintenance database: the named one, else
    /// `postgres`, else `template1` when `postgres` is missing (or cannot
    /// be connected to: libpq does not say why by code).
    fn on_maintenance<T>(&self, mut f: impl FnMut(&str) -> Result<T>) -> Result<T> {
        if let Some(db) = &self.maintenance {
            return f(db);
        }
        let mut first_err = None;
        for db in MAINTENANCE_DBS {
            match f(db) {
                Ok(v) => return Ok(v),
                Err(e) if e.code() == crate::ExitCode::Usage => return Err(e),
                Err(e) => {
                    // Only a missing maintenance database is worth a second try.
                    let missing = e.is_undefined_object() || no_session(&e);
                    first_err.get_or_insert(e);
                    if !missing {
                        break;
                    }
                }
            }
        }
        Err(first_err.expect("tried at least once"))
    }

    /// Runs statements on the maintenance database.
    fn run_maintenance(&self, sql: &str) -> Result<Vec<String>> {
        self.on_maintenance(|db| self.run_sql(db, sql))
    }

    /// The statements that recreate this database's own properties, read
    /// in `snapshot`: a `pg_dump --create` that selects no schema.
    fn database_properties(&self, snapshot: &str) -> Result<Vec<String>> {
        let mut cmd = self.command("pg_dump");
        cmd.stdin(Stdio::null());
        cmd.args([
            "-Fp",
            "--create",
            "--schema-only",
            "-n",
            "pg_toast",
            "--snapshot",
        ])
        .arg(snapshot)
        .arg("-d")
        .arg(self.conn.uri(&self.db()));
        let mut dump = Child::spawn("pg_dump", CLIENT_PACKAGE_HINT, cmd)?;
        let mut text = String::new();
        let mut out = dump.child.stdout.take().expect("piped stdout");
        let read = out.read_to_string(&mut text);
        drop(out);
        dump.finish("pg_dump of the database's properties failed")?;
        read.map_err(|e| Error::io("reading pg_dump's output", e))?;
        Ok(database::statements(&text))
    }

    /// Runs SQL on the maintenance database, stopping at the first error.
    fn run_script(&self, sql: &str, what: &str) -> Result<()> {
        self.run_maintenance(sql)
            .map(drop)
            .map_err(|e| e.context(what))
    }

    /// `--clean` of a whole database: the backup is restored into a new
    /// database beside the target, which replaces the target by rename only
    /// once the restore succeeded; the old target is then dropped. Objects
    /// the backup does not have are gone with it, and a failed restore
    /// leaves the target as it was. Refused while clients are connected.
    fn restore_by_swap(&self, input: Input<'_>, opts: &RestoreOptions) -> Result<()> {
        let db = self.db();
        let home = side::PgHome { pg: self.clone() };
        let side_db = super::side::side_name(&db, &super::side::random_tag("restore"), 63);
        let keep = super::side::side_name(&db, &super::side::random_tag("replaced"), 63);
        let side_pg = home.at(&side_db);
        side_pg.create_target(opts)?;
        let restored = (|| {
            let _drop_side = crate::cleanup::ActionGuard::new({
                let pg = side_pg.clone();
                move || {
                    let _ = pg.drop_target();
                }
            });
            let args = side_pg.restore_args(
                &RestoreOptions {
                    clean: false,
                    ..opts.clone()
                },
                input.workers(opts),
            )?;
            side_pg.run_restore(args, input, opts)
        })();
        if let Err(e) = restored {
            let _ = side_pg.drop_target();
            return Err(e.context(format!("{} was not changed", self.url())));
        }
        // Without recorded properties, the target's own stay (owner, settings, grants).
        let carry = !opts.recorded.contains_key("database_sql");
        if let Err(e) = home.swap_carrying(&side_db, &keep, None, carry) {
            let _ = side_pg.drop_target();
            return Err(e);
        }
        home.at(&keep).drop_target()
    }

    /// The restore behind [`Engine::restore`] and [`Engine::restore_file`].
    fn restore_from(
        &self,
        payload: Payload,
        input: Input<'_>,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let target = format!("PostgreSQL database {}", self.url());
        super::expect_payload(payload, Payload::Pgdump, target, TAKES)?;
        require_tools(&["psql", "pg_restore"])?;
        let created = !self.exists()?;
        if created && !opts.create {
            return Err(super::missing_target(&self.url()));
        }
        self.create_roles(opts)?;
        if opts.clean && opts.tables.is_empty() && !created {
            return self.restore_by_swap(input, opts);
        }
        // Into an existing database, one transaction keeps it as it was if the restore fails.
        let workers = if created { input.workers(opts) } else { 1 };
        let args = self.restore_args(opts, workers)?;
        if created {
            self.create_target(opts)?;
        }
        let result = self.run_restore(args, input, opts);
        if result.is_err() && created {
            // Leave the server as it was: no half-made database behind a failure.
            let _ = self.drop_target();
        }
        result
    }

    /// Creates the roles the snapshot recorded that this server lacks.
    fn create_roles(&self, opts: &RestoreOptions) -> Result<()> {
        if opts.no_roles {
            return Ok(());
        }
        match opts.recorded.get("roles_sql").and_then(|v| v.as_str()) {
            Some(script) => self.run_script(script, "creating the roles the backup needs"),
            None => Ok(()),
        }
    }

    /// Creates the target with the recorded owner, encoding, locale,
    /// settings, privileges and comment (a plain database when the snapshot
    /// recorded none).
    fn create_target(&self, opts: &RestoreOptions) -> Result<()> {
        let recorded: Vec<String> = opts
            .recorded
            .get("database_sql")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let source = opts.recorded.get("database_name").and_then(|v| v.as_str());
        let (Some(source), false) = (source, recorded.is_empty()) else {
            return self.create_database(&self.db());
        };
        let mut statements = database::for_target(&recorded, source, &self.db());
        if opts.no_owner {
            statements.retain(|s| !(s.starts_with("ALTER DATABASE ") && s.contains(" OWNER TO ")));
        }
        let (create, rest): (Vec<String>, Vec<String>) = statements
            .into_iter()
            .partition(|s| s.starts_with("CREATE DATABASE "));
        match create.first() {
            Some(c) => self.run_script(c, &format!("creating database {}", self.db()))?,
            None => self.create_database(&self.db())?,
        }
        if !rest.is_empty() {
            let script = rest.join("\n");
            if let Err(e) = self.run_script(&script, "restoring the database's properties") {
                let _ = self.drop_target();
                return Err(e);
            }
        }
        Ok(())
    }

    fn create_database(&self, name: &str) -> Result<()> {
        // template0: a restore needs an empty database, whatever template1 holds.
        self.run_maintenance(&format!(
            "CREATE DATABASE {} TEMPLATE template0;",
            quote_ident(name)
        ))
        .map(drop)
        .map_err(|e| e.context(format!("creating database {name}")))
    }

    /// Runs pg_restore on the payload. Reading a stream, pg_restore cannot
    /// seek, so it restores in one transaction without -j: all or nothing.
    /// From a file into a database this restore created, it runs `-j N`
    /// workers; the database is dropped if the restore fails.
    fn run_restore(
        &self,
        args: Vec<String>,
        input: Input<'_>,
        opts: &RestoreOptions,
    ) -> Result<()> {
        if let (Some(schema), false) = (table_selection(&opts.tables)?.0, opts.tables.is_empty()) {
            // The schema is not part of a table's own entries in the archive.
            self.run_sql(
                &self.db(),
                &format!("CREATE SCHEMA IF NOT EXISTS {};", quote_ident(&schema)),
            )?;
        }
        let mut cmd = self.command("pg_restore");
        cmd.args(args);
        cmd.stdout(Stdio::null());
        let failed = format!("pg_restore into {} failed (rolled back)", self.url());
        let input = match input {
            Input::File(path) => {
                cmd.arg(path).stdin(Stdio::null());
                return Child::spawn("pg_restore", CLIENT_PACKAGE_HINT, cmd)?.finish(&failed);
            }
            Input::Stream(input) => input,
        };
        // Killed before it saw the end of its input, pg_restore commits nothing.
        Child::spawn("pg_restore", CLIENT_PACKAGE_HINT, cmd)?
            .fed(input)
            .map_err(|e| e.context("reading the artifact; nothing was restored"))?
            .finish(&failed)
    }

    /// pg_restore's arguments; `workers` above 1 (a file restored into a
    /// database this restore created) replaces the one transaction by `-j`.
    fn restore_args(&self, opts: &RestoreOptions, workers: usize) -> Result<Vec<String>> {
        let mut args = vec!["--exit-on-error".to_string()];
        if workers > 1 {
            args.push(format!("--jobs={workers}"));
        } else {
            args.push("--single-transaction".into());
        }
        // Owners are part of the database; --no-owner is the caller's choice.
        if opts.no_owner {
            args.push("--no-owner".into());
        }
        // A partial restore replaces the named tables, as it does for every
        // engine; pg_restore scopes --clean to the selected tables.
        if opts.clean || !opts.tables.is_empty() {
            args.extend(["--clean".into(), "--if-exists".into()]);
        }
        let (schema, tables) = table_selection(&opts.tables)?;
        for t in tables {
            args.extend(["-t".into(), t]);
        }
        if let Some(s) = schema {
            args.extend(["-n".into(), s]);
        }
        args.extend(["-d".into(), self.conn.uri(&self.db())]);
        Ok(args)
    }
}

/// What pg_restore reads: a stream on its stdin, or a file it can seek in.
enum Input<'i> {
    Stream(&'i mut dyn Read),
    File(&'i Path),
}

impl Input<'_> {
    /// Workers for a restore into a fresh database: `-j` needs a file.
    fn workers(&self, opts: &RestoreOptions) -> usize {
        match self {
            Input::File(_) if opts.tables.is_empty() => opts.jobs.max(1),
            _ => 1,
        }
    }
}

impl Engine for Postgres {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn database(&self) -> String {
        crate::name::sanitize_database(&self.db())
    }

    fn url(&self) -> String {
        self.conn.uri(&self.db())
    }

    fn host(&self) -> String {
        self.conn.host()
    }

    fn snapshot(&self, opts: &SnapshotOptions, out: &mut dyn Write) -> Result<SnapshotInfo> {
        if opts.base {
            return self.base_backup(opts, out);
        }
        require_tools(&["psql", "pg_dump"])?;
        let db = self.db();
        let mut psql = self.psql(&db)?;
        let head = psql.query(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n\
             SELECT pg_catalog.pg_export_snapshot() || '|' || pg_catalog.current_setting('server_version');",
        )?;
        let (snapshot_id, server_version) = head
            .first()
            .and_then(|l| l.split_once('|'))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or_else(|| Error::failed(format!("unexpected answer from psql: {head:?}")))?;

        let mut cmd = self.command("pg_dump");
        cmd.stdin(Stdio::null());
        // --create: the archive carries the database's own properties, for
        // `pg_restore --create` without dbsafe (a restore without it skips them).
        cmd.args(["-Fc", "-Z0", "--create", "--snapshot"])
            .arg(&snapshot_id);
        for t in &opts.tables {
            cmd.arg("-t").arg(t);
        }
        for t in &opts.exclude_tables {
            cmd.arg("-T").arg(t);
        }
        cmd.arg("-d").arg(self.conn.uri(&db));
        let mut dump = Child::spawn("pg_dump", CLIENT_PACKAGE_HINT, cmd)?;
        let mut dump_out = dump.child.stdout.take().expect("piped stdout");

        // Rows are counted off the dump stream as it passes: exactly what
        // the dump holds, without scanning the tables a second time.
        let mut counter = count::DumpCounter::new(out);
        let copied = crate::pipeline::copy(&mut dump_out, &mut counter);
        drop(dump_out);
        if let Err(e) = copied {
            dump.kill();
            let _ = psql.child.child.kill();
            return Err(Error::from(e).context("streaming pg_dump's output"));
        }
        dump.finish(&format!("pg_dump of {} failed", self.url()))?;
        let (tables, counted) = match counter.counts() {
            Some(t) => (t, "from the dump stream"),
            // A dump format this build does not read: count in the dump's
            // snapshot, held open until now for exactly this.
            None => (
                parse_counts(&psql.query(&count_query(&opts.tables, &opts.exclude_tables))?)?,
                "in the dump's snapshot",
            ),
        };
        // What the dump needs from outside the database, read in the same
        // snapshot: the roles it names and the database's own properties.
        let globals = roles_of(&psql.query(roles::QUERY)?)?;
        let properties = self.database_properties(&snapshot_id)?;
        psql.query("COMMIT;")?;
        psql.finish()?;

        let mut info = SnapshotInfo::new(
            tables,
            server_version,
            [
                ("pg_dump_format", "custom".into()),
                ("row_counts", counted.into()),
                ("database_name", db.clone().into()),
                ("database_sql", properties.into()),
                ("roles_sql", globals.script(&db).into()),
            ],
        );
        info.extra.insert(
            "roles".into(),
            serde_json::to_value(&globals).map_err(|e| Error::failed(e.to_string()))?,
        );
        Ok(info)
    }

    fn exists(&self) -> Result<bool> {
        let lines = self.run_maintenance(&format!(
            "SELECT count(*) FROM pg_catalog.pg_database WHERE datname = {};",
            quote_literal(&self.db())
        ))?;
        Ok(lines.first().map(|l| l.trim() != "0").unwrap_or(false))
    }

    fn tables(&self) -> Result<Vec<TableCount>> {
        parse_counts(&self.run_sql(&self.db(), &count_query(&[], &[]))?)
    }

    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()> {
        self.restore_from(payload, Input::Stream(input), opts)
    }

    fn restore_file(&self, payload: Payload, path: &Path, opts: &RestoreOptions) -> Result<()> {
        self.restore_from(payload, Input::File(path), opts)
    }

    fn restores_in_parallel(&self) -> bool {
        true
    }

    fn drop_target(&self) -> Result<()> {
        self.run_maintenance(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE);",
            quote_ident(&self.db())
        ))
        .map(drop)
        .map_err(|e| e.context(format!("dropping database {}", self.db())))
    }

    fn replace_needs_clean(&self) -> bool {
        true
    }

    fn restore_point(&self, name: &str) -> Result<(crate::timeline::Lsn, u32)> {
        if name.is_empty() || name.len() >= 64 {
            return Err(Error::usage(format!(
                "restore point name {name:?}: 1 to 63 characters"
            )));
        }
        let lines = self.run_sql(
            &self.db(),
            &format!(
                "SELECT pg_catalog.pg_create_restore_point({})::text || ' ' || \
                 (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())::text;\n\
                 SELECT pg_catalog.pg_switch_wal()::text;",
                quote_literal(name)
            ),
        )?;
        lines
            .first()
            .and_then(|l| l.trim().split_once(' '))
            .and_then(|(l, t)| Some((crate::timeline::Lsn::parse(l)?, t.parse().ok()?)))
            .ok_or_else(|| {
                Error::failed(format!(
                    "unexpected answer to pg_create_restore_point: {lines:?}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified_by_sqlstate_in_any_language() {
        use crate::error::ServerCode;
        let de = "psql:<stdin>:1: FEHLER:  42P01: Relation »nope« existiert nicht\n\
                  ZEILE 1: SELECT * FROM nope;\n\
                  ORT:  parserOpenTable, parse_relation.c:1392";
        assert_eq!(sqlstate(de), Some(ServerCode::Sqlstate("42P01".into())));
        let e = super::super::child::failure(Some(3), "psql".into(), de, Some(sqlstate));
        assert!(e.is_undefined_object(), "{e:?}");
        // Without a code (a connection refused by libpq) it stays a child error.
        let refused = "psql: error: connection to server on socket \"/s/.s.PGSQL.1\" failed: \
                       FATAL:  database \"x\" does not exist";
        assert_eq!(sqlstate(refused), None);
        let e = super::super::child::failure(Some(2), "psql".into(), refused, Some(sqlstate));
        assert!(no_session(&e) && !e.is_undefined_object(), "{e:?}");
        assert_eq!(
            sqlstate("LOCATION:  parserOpenTable, parse_relation.c:1392"),
            None
        );
    }

    #[test]
    fn patterns_follow_psql_rules() {
        assert_eq!(pattern_regex("Orders"), (None, "orders".into()));
        assert_eq!(
            pattern_regex("shop.ord*"),
            (Some("shop".into()), "ord.*".into())
        );
        assert_eq!(pattern_regex("\"My.Table\""), (None, "My\\.Table".into()));
        assert_eq!(pattern_regex("a?c"), (None, "a.c".into()));
    }

    #[test]
    fn partial_restores_replace_only_the_named_tables() {
        let pg = Postgres::new("postgres://u@h/d").expect("valid");
        let opts = RestoreOptions {
            tables: vec!["shop.items".into(), "shop.stock".into()],
            jobs: 4,
            ..Default::default()
        };
        let workers = Input::File(Path::new("x")).workers(&opts);
        assert_eq!(workers, 1, "a partial restore keeps its one transaction");
        let args = pg.restore_args(&opts, workers).expect("one schema");
        assert!(args.contains(&"--single-transaction".to_string()));
        assert!(args.windows(2).any(|w| w == ["-t", "items"]));
        assert!(args.windows(2).any(|w| w == ["-n", "shop"]));
        assert!(args.contains(&"--clean".to_string()));
        assert!(table_selection(&["shop.items".into(), "customers".into()]).is_err());
        assert!(table_selection(&["a.x".into(), "b.y".into()]).is_err());
        assert_eq!(args.last().expect("valid"), "postgres://u@h/d");
    }
}
