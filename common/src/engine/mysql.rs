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

use super::child::{self, Child};
use super::{Engine, PayloadCheck, RestoreOptions, SnapshotInfo, SnapshotOptions};
use crate::error::{Error, Result};
use crate::meta::TableCount;
use crate::name::Payload;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

/// The package that ships the client tools.
const PACKAGE: &str =
    "the Debian package mariadb-client (apt-get install mariadb-client), or a MySQL client";
const DUMP_TOOLS: [&str; 2] = ["mariadb-dump", "mysqldump"];
const CLIENT_TOOLS: [&str; 2] = ["mariadb", "mysql"];

/// A MySQL/MariaDB URL taken apart, with the password held aside.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnUrl {
    scheme: String,
    user: Option<String>,
    /// Decoded; never printed.
    password: Option<String>,
    /// As written (percent-encoded), for display.
    host_raw: String,
    /// Decoded host, or empty.
    host: String,
    port: Option<u16>,
    socket: Option<String>,
    db: String,
}

impl ConnUrl {
    fn parse(url: &str) -> Result<ConnUrl> {
        let bad = |why: &str| {
            Error::usage(format!("invalid MySQL URL: {why}")).hint(
                "use mysql://user@host:port/db or mariadb://user@host/db?socket=/run/mysqld/mysqld.sock (percent-encode special characters)",
            )
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected mysql://... or mariadb://..."))?;
        if scheme != "mysql" && scheme != "mariadb" {
            return Err(bad("the scheme must be mysql:// or mariadb://"));
        }
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)?), Some(percent_decode(p)?)),
                None => (Some(percent_decode(u)?), None),
            },
        };
        let (host_raw, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in host"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
        };
        let host = percent_decode(&host_raw)?;
        let mut socket = host.starts_with('/').then(|| host.clone());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "socket" => socket = Some(percent_decode(v)?),
                _ => return Err(bad(&format!("unknown parameter {k:?} (supported: socket)"))),
            }
        }
        let db = percent_decode(path.trim_end_matches('/'))?;
        if db.contains('/') {
            return Err(bad("the database name cannot contain /"));
        }
        Ok(ConnUrl {
            scheme: scheme.into(),
            user,
            password,
            host_raw,
            host,
            port,
            socket,
            db,
        })
    }

    /// The URL for `db`, without the password.
    fn display(&self, db: &str) -> String {
        let mut s = format!("{}://", self.scheme);
        if let Some(u) = &self.user {
            s.push_str(&percent_encode(u).replace('/', "%2F"));
            s.push('@');
        }
        if self.host_raw.contains(':') {
            s.push_str(&format!("[{}]", self.host_raw));
        } else {
            s.push_str(&self.host_raw);
        }
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push('/');
        s.push_str(&percent_encode(db).replace('/', "%2F"));
        if let (Some(sock), false) = (&self.socket, self.host.starts_with('/')) {
            s.push_str(&format!("?socket={}", percent_encode(sock)));
        }
        s
    }

    /// Connection options for the client tools (no password: see [`Mysql::command`]).
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(u) = &self.user {
            a.push(format!("--user={u}"));
        }
        if let Some(sock) = &self.socket {
            a.push("--protocol=socket".into());
            a.push(format!("--socket={sock}"));
        } else if !self.host.is_empty() {
            a.push(format!("--host={}", self.host));
            if self.host != "localhost" {
                a.push("--protocol=tcp".into());
            }
        }
        if let Some(p) = self.port {
            a.push(format!("--port={p}"));
        }
        a.push("--default-character-set=utf8mb4".into());
        a
    }
}

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
}

impl Mysql {
    /// The database of a URL.
    pub fn new(url: &str) -> Result<Mysql> {
        Ok(Mysql {
            conn: ConnUrl::parse(url)?,
        })
    }

    /// A fresh, empty `dbsafe_verify_<hex>` database on the server of `server_url`.
    pub fn scratch(server_url: &str) -> Result<Mysql> {
        let mut conn = ConnUrl::parse(server_url).map_err(|e| e.context("--scratch"))?;
        conn.db = format!("dbsafe_verify_{:016x}", rand::random::<u64>());
        let m = Mysql { conn };
        m.create_database()?;
        Ok(m)
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
        if let Some(pw) = &self.conn.password {
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
        let out = child::run(program, PACKAGE, cmd, sql.as_bytes(), what)?;
        Ok(out.lines().map(str::to_string).collect())
    }

    fn create_database(&self) -> Result<()> {
        self.run_sql(
            None,
            &format!(
                "CREATE DATABASE {} CHARACTER SET utf8mb4;",
                quote_ident(&self.conn.db)
            ),
            &format!("creating database {}", self.conn.db),
        )
        .map(drop)
    }

    /// Drops and recreates the database with its own character set and collation.
    fn recreate_database(&self) -> Result<()> {
        let db = quote_ident(&self.conn.db);
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

/// A table's name from a backticked identifier at the start of `s`, and
/// the bytes it took; `None` while the closing backtick has not arrived.
fn backticked(s: &[u8]) -> Option<(String, usize)> {
    if s.first() != Some(&b'`') {
        return None;
    }
    let mut name = Vec::new();
    let mut i = 1;
    while i < s.len() {
        if s[i] == b'`' {
            if s.get(i + 1) == Some(&b'`') {
                name.push(b'`');
                i += 2;
                continue;
            }
            if i + 1 == s.len() {
                // A doubled backtick may still be on its way.
                return None;
            }
            return Some((String::from_utf8_lossy(&name).into_owned(), i + 1));
        }
        name.push(s[i]);
        i += 1;
    }
    None
}

/// Longest line prefix kept to recognise a statement.
const PREFIX_CAP: usize = 8192;
const INSERT_PREFIXES: [&[u8]; 3] = [b"INSERT INTO ", b"INSERT IGNORE INTO ", b"REPLACE INTO "];
const CREATE_TABLE: &[u8] = b"CREATE TABLE ";
const FOOTER: &[u8] = b"-- Dump completed";

#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting the start of a line to see what it is.
    Line,
    /// Nothing more of interest on this line.
    Skip,
    /// Inside an INSERT's VALUES list.
    Values {
        table: usize,
        depth: i64,
        quote: u8,
        escape: bool,
        /// Just left a quoted string: a second quote means a doubled one.
        closed: u8,
    },
}

/// Counts the rows of a SQL dump as it streams past, and checks its shape.
///
/// Fed the dump's bytes in any chunking, it tracks line starts, the client
/// `DELIMITER` (so trigger and routine bodies are never taken for data), and
/// inside `INSERT ... VALUES` the depth of parentheses outside quoted
/// strings: every `(` at depth zero is a row.
pub struct DumpScanner {
    state: State,
    line: Vec<u8>,
    /// The last non-blank bytes of the current line.
    tail: Vec<u8>,
    delimiter: Vec<u8>,
    stmt_start: bool,
    lines: u64,
    header: bool,
    footer: bool,
    tables: Vec<(String, u64)>,
    index: HashMap<String, usize>,
    problems: Vec<String>,
}

impl Default for DumpScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl DumpScanner {
    /// A scanner at the start of a dump.
    pub fn new() -> DumpScanner {
        DumpScanner {
            state: State::Line,
            line: Vec::new(),
            tail: Vec::new(),
            delimiter: b";".to_vec(),
            stmt_start: true,
            lines: 0,
            header: false,
            footer: false,
            tables: Vec::new(),
            index: HashMap::new(),
            problems: Vec::new(),
        }
    }

    fn table(&mut self, name: String) -> usize {
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        self.tables.push((name.clone(), 0));
        self.index.insert(name, self.tables.len() - 1);
        self.tables.len() - 1
    }

    fn note_tail(&mut self, b: u8) {
        if !b.is_ascii_whitespace() {
            if self.tail.len() >= 8 {
                self.tail.remove(0);
            }
            self.tail.push(b);
        }
    }

    /// Looks at the line collected so far; may switch state.
    fn classify(&mut self) {
        if self.line.len() >= PREFIX_CAP {
            self.state = State::Skip;
            return;
        }
        let line = &self.line;
        if self.lines < 3
            && (line.starts_with(b"-- MariaDB dump") || line.starts_with(b"-- MySQL dump"))
        {
            self.header = true;
        }
        if line.starts_with(FOOTER) {
            self.footer = true;
            self.state = State::Skip;
            return;
        }
        let at_stmt = self.stmt_start && self.delimiter == b";";
        if at_stmt {
            for p in INSERT_PREFIXES {
                if line.len() > p.len() && line.starts_with(p) {
                    if let Some((name, used)) = backticked(&line[p.len()..]) {
                        if line[p.len() + used..].ends_with(b"VALUES") {
                            let table = self.table(name);
                            self.state = State::Values {
                                table,
                                depth: 0,
                                quote: 0,
                                escape: false,
                                closed: 0,
                            };
                        }
                    }
                    return;
                }
            }
            if line.len() > CREATE_TABLE.len() && line.starts_with(CREATE_TABLE) {
                if let Some((name, _)) = backticked(&line[CREATE_TABLE.len()..]) {
                    self.table(name);
                    self.state = State::Skip;
                }
                return;
            }
        }
        let still_possible = INSERT_PREFIXES
            .iter()
            .chain([&CREATE_TABLE, &FOOTER, &&b"DELIMITER "[..], &&b"-- M"[..]])
            .any(|p| p.starts_with(line) || line.starts_with(p));
        if !still_possible {
            self.state = State::Skip;
        }
    }

    fn end_of_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let trimmed = line.trim_ascii();
        if let Some(d) = trimmed.strip_prefix(b"DELIMITER ") {
            self.delimiter = d.trim_ascii().to_vec();
            self.stmt_start = true;
        } else if self.tail.is_empty() || (self.stmt_start && trimmed.starts_with(b"--")) {
            // Blank lines and comments between statements change nothing.
        } else {
            self.stmt_start = self.tail.ends_with(&self.delimiter);
            if self.footer && !trimmed.starts_with(FOOTER) {
                self.footer = false;
            }
        }
        self.tail.clear();
        self.lines += 1;
        self.state = State::Line;
    }

    /// Keeps the last non-blank bytes of `bytes` in `tail`.
    fn note_tail_slice(&mut self, bytes: &[u8]) {
        let mut last: Vec<u8> = bytes
            .iter()
            .rev()
            .filter(|b| !b.is_ascii_whitespace())
            .take(8)
            .copied()
            .collect();
        last.reverse();
        self.tail.extend_from_slice(&last);
        let excess = self.tail.len().saturating_sub(8);
        self.tail.drain(..excess);
    }

    /// Scans an INSERT's VALUES from `buf[start..]`; returns where it stopped
    /// (the end of `buf`, or just past the statement's end).
    ///
    /// The hot loop of the whole scanner: it jumps from one byte that
    /// matters to the next instead of looking at every byte.
    fn scan_values(&mut self, buf: &[u8], start: usize) -> usize {
        let State::Values {
            table,
            mut depth,
            mut quote,
            mut escape,
            mut closed,
        } = self.state
        else {
            return start;
        };
        let special = |b: &u8| matches!(b, b'(' | b')' | b'\'' | b'"' | b';');
        let mut i = start;
        while i < buf.len() {
            if quote != 0 {
                if escape {
                    escape = false;
                    i += 1;
                    continue;
                }
                match buf[i..].iter().position(|&b| b == b'\\' || b == quote) {
                    None => i = buf.len(),
                    Some(p) => {
                        i += p;
                        if buf[i] == b'\\' {
                            escape = true;
                        } else {
                            closed = quote;
                            quote = 0;
                        }
                        i += 1;
                    }
                }
                continue;
            }
            if closed != 0 {
                // '' inside a string: still the same string.
                if buf[i] == closed {
                    quote = closed;
                    i += 1;
                }
                closed = 0;
                continue;
            }
            match buf[i..].iter().position(special) {
                None => {
                    i = buf.len();
                    continue;
                }
                Some(p) => i += p,
            }
            let b = buf[i];
            i += 1;
            match b {
                b'(' => {
                    if depth == 0 {
                        self.tables[table].1 += 1;
                    }
                    depth += 1;
                }
                b')' => {
                    depth -= 1;
                    if depth < 0 {
                        self.problems.push(format!(
                            "unbalanced parentheses in an INSERT into `{}`",
                            self.tables[table].0
                        ));
                        self.state = State::Skip;
                        return i;
                    }
                }
                b';' if depth == 0 => {
                    self.tail.clear();
                    self.tail.push(b';');
                    self.state = State::Skip;
                    return i;
                }
                b';' => {}
                q => quote = q,
            }
        }
        self.state = State::Values {
            table,
            depth,
            quote,
            escape,
            closed,
        };
        i
    }

    /// Feeds the next bytes of the dump.
    pub fn feed(&mut self, buf: &[u8]) {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Values { .. } => i = self.scan_values(buf, i),
                State::Line => {
                    let b = buf[i];
                    i += 1;
                    if b == b'\n' {
                        self.end_of_line();
                        continue;
                    }
                    self.note_tail(b);
                    self.line.push(b);
                    self.classify();
                }
                State::Skip => match buf[i..].iter().position(|&b| b == b'\n') {
                    Some(p) => {
                        self.note_tail_slice(&buf[i..i + p]);
                        i += p + 1;
                        self.end_of_line();
                    }
                    None => {
                        self.note_tail_slice(&buf[i..]);
                        i = buf.len();
                    }
                },
            }
        }
    }

    /// The row counts, sorted by table, and what was wrong with the dump's shape.
    pub fn finish(mut self) -> (Vec<TableCount>, Vec<String>) {
        if !self.line.is_empty() || !self.tail.is_empty() {
            let state = self.state;
            self.end_of_line();
            if let State::Values { table, .. } = state {
                self.problems.push(format!(
                    "the dump ends inside an INSERT into `{}`: it is truncated",
                    self.tables[table].0
                ));
            }
        } else if let State::Values { table, .. } = self.state {
            self.problems.push(format!(
                "the dump ends inside an INSERT into `{}`: it is truncated",
                self.tables[table].0
            ));
        }
        if !self.header {
            self.problems.push(
                "no `-- MariaDB dump` or `-- MySQL dump` header: not a mariadb-dump/mysqldump file"
                    .into(),
            );
        }
        if !self.footer {
            self.problems
                .push("no `-- Dump completed` line at the end: the dump is incomplete".into());
        }
        let mut tables: Vec<TableCount> = self
            .tables
            .into_iter()
            .map(|(name, rows)| TableCount { name, rows })
            .collect();
        tables.sort();
        (tables, self.problems)
    }
}

/// Copies a dump, keeping the header, the footer and only the sections of
/// `wanted` tables (and views); returns the names that were kept.
fn filter_tables(
    input: &mut dyn Read,
    out: &mut dyn Write,
    wanted: &[String],
) -> Result<Vec<String>> {
    const MARKERS: [&str; 4] = [
        "-- Table structure for table ",
        "-- Dumping data for table ",
        "-- Temporary table structure for view ",
        "-- Final view structure for view ",
    ];
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut keep = true;
    let mut footer = false;
    let mut kept = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if !footer {
            let text = String::from_utf8_lossy(&line[..line.len().min(1024)]);
            if let Some(rest) = MARKERS.iter().find_map(|m| text.strip_prefix(m)) {
                let rest = rest.trim_end();
                let name = rest
                    .strip_prefix('`')
                    .and_then(|r| r.strip_suffix('`'))
                    .unwrap_or(rest)
                    .to_string();
                keep = super::table_selected(&name, wanted, &[]);
                if keep && !kept.contains(&name) {
                    kept.push(name);
                }
            } else if text.starts_with("-- Dumping events for database ")
                || text.starts_with("-- Dumping routines for database ")
            {
                keep = false;
            } else if text.starts_with("/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */") {
                footer = true;
                keep = true;
            }
        }
        if keep {
            out.write_all(&line)?;
        }
    }
    Ok(kept)
}

/// Checks a SQL dump's shape and counts its rows from the stream.
pub fn check(input: &mut dyn Read) -> Result<PayloadCheck> {
    let mut scanner = DumpScanner::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e)),
        };
        bytes += n as u64;
        scanner.feed(&buf[..n]);
    }
    let (tables, problems) = scanner.finish();
    Ok(PayloadCheck {
        checks: vec![format!(
            "sql dump: header, `-- Dump completed` footer and INSERT statements checked ({bytes} bytes, {} tables)",
            tables.len()
        )],
        problems,
        tables: Some(tables),
    })
}

impl Engine for Mysql {
    fn engine(&self) -> &'static str {
        "mysql"
    }

    fn payload(&self, _base: bool) -> Payload {
        Payload::Sql
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
        let version = self.version()?;
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
        let mut extra = serde_json::Map::new();
        extra.insert("dump_tool".into(), dump_tool.into());
        Ok(SnapshotInfo {
            tables,
            engine_version: version,
            extra,
            ..Default::default()
        })
    }

    fn exists(&self) -> Result<bool> {
        self.require_db()?;
        let lines = self.run_sql(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {};",
                quote_literal(&self.conn.db)
            ),
            &format!("connecting to {}", self.url()),
        )?;
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
        if payload != Payload::Sql {
            return Err(Error::usage(format!(
                "cannot restore a {} payload into MySQL database {}",
                payload.ext(),
                self.url()
            ))
            .hint("a MySQL/MariaDB target takes sql dumps made by mariadb-dump or mysqldump"));
        }
        self.require_db()?;
        let client = child::require(&CLIENT_TOOLS, PACKAGE)?;
        let created = !self.exists()?;
        if created {
            if !opts.create {
                return Err(
                    Error::not_found(format!("database {} does not exist", self.url()))
                        .hint("pass --create to create it"),
                );
            }
            self.create_database()?;
        } else if opts.clean && opts.tables.is_empty() {
            self.recreate_database()?;
        }
        let mut cmd = self.command(client);
        cmd.args(["--batch", "--connect-timeout=15"])
            .arg(format!("--database={}", self.conn.db));
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
                    Err(e) if e.message.contains("Broken pipe") => Ok(Vec::new()),
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

fn percent_decode(s: &str) -> Result<String> {
    super::urlenc::decode(s, "MySQL URL")
}

fn percent_encode(s: &str) -> String {
    super::urlenc::encode(s, b"/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)\n\
--\n\
/*!40101 SET NAMES utf8mb4 */;\n\
\n\
--\n\
-- Table structure for table `t`\n\
--\n\
\n\
DROP TABLE IF EXISTS `t`;\n\
CREATE TABLE `t` (\n\
  `id` int(11) NOT NULL,\n\
  `s` varchar(100) DEFAULT 'a;b',\n\
  PRIMARY KEY (`id`)\n\
) ENGINE=InnoDB;\n\
\n\
--\n\
-- Dumping data for table `t`\n\
--\n\
\n\
LOCK TABLES `t` WRITE;\n\
INSERT INTO `t` VALUES\n\
(1,'a,b)(\\'x\\\\y\\n',0x00FF28),\n\
(2,NULL,NULL),\n\
(3,'it''s (x',''),\n\
(4,'\\\\',\"q\\\"(\");\n\
INSERT INTO `t` VALUES (5,'x'),(6,'y');\n\
UNLOCK TABLES;\n\
DELIMITER ;;\n\
/*!50003 CREATE*/ /*!50003 TRIGGER trg AFTER INSERT ON t FOR EACH ROW\n\
INSERT INTO `log` VALUES (NEW.id) */;;\n\
DELIMITER ;\n\
\n\
--\n\
-- Table structure for table `empty``odd`\n\
--\n\
\n\
CREATE TABLE `empty``odd` (\n\
  `x` int(11) DEFAULT NULL\n\
);\n\
\n\
--\n\
-- Dumping routines for database 'shop'\n\
--\n\
DELIMITER ;;\n\
CREATE PROCEDURE p() BEGIN\n\
INSERT INTO `t` VALUES (99,'no');\n\
END ;;\n\
DELIMITER ;\n\
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\
\n\
-- Dump completed on 2025-01-18  1:00:00\n";

    fn scan(bytes: &[u8], chunk: usize) -> (Vec<TableCount>, Vec<String>) {
        let mut s = DumpScanner::new();
        for c in bytes.chunks(chunk) {
            s.feed(c);
        }
        s.finish()
    }

    #[test]
    fn rows_are_counted_from_the_stream_in_any_chunking() {
        let expected = vec![
            TableCount {
                name: "empty`odd".into(),
                rows: 0,
            },
            TableCount {
                name: "t".into(),
                rows: 6,
            },
        ];
        for chunk in [1, 2, 3, 7, 64, 1 << 16] {
            let (tables, problems) = scan(DUMP.as_bytes(), chunk);
            assert_eq!(problems, Vec::<String>::new(), "chunk {chunk}");
            assert_eq!(tables, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn a_truncated_dump_is_a_problem() {
        let cut = &DUMP[..DUMP.find("(3,").expect("row 3") + 6];
        let (_, problems) = scan(cut.as_bytes(), 5);
        assert!(
            problems.iter().any(|p| p.contains("truncated")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("Dump completed")),
            "{problems:?}"
        );
        let (_, problems) = scan(b"SELECT 1;\n", 5);
        assert!(
            problems.iter().any(|p| p.contains("header")),
            "{problems:?}"
        );
    }

    #[test]
    fn table_filter_keeps_header_footer_and_the_named_sections() {
        let mut out = Vec::new();
        let kept = filter_tables(&mut DUMP.as_bytes(), &mut out, &["t".into()]).expect("filter");
        assert_eq!(kept, vec!["t".to_string()]);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("SET NAMES utf8mb4"));
        assert!(text.contains("INSERT INTO `t` VALUES (5"));
        assert!(text.contains("TRIGGER trg"));
        assert!(!text.contains("empty``odd"));
        assert!(!text.contains("PROCEDURE"));
        assert!(text.contains("-- Dump completed"));
    }

    #[test]
    fn url_password_is_held_aside() {
        let c = ConnUrl::parse("mysql://app:p%40ss%3Aw@db.example:3307/shop").expect("valid");
        assert_eq!(c.password.as_deref(), Some("p@ss:w"));
        assert_eq!(c.display("shop"), "mysql://app@db.example:3307/shop");
        assert!(!c.args().iter().any(|a| a.contains("p@ss")));
        assert!(c.args().contains(&"--protocol=tcp".to_string()));
        let c = ConnUrl::parse("mariadb://root@/x?socket=%2Ftmp%2Fm.sock").expect("valid");
        assert_eq!(c.socket.as_deref(), Some("/tmp/m.sock"));
        assert_eq!(c.display("x"), "mariadb://root@/x?socket=/tmp/m.sock");
        assert!(ConnUrl::parse("mysql://u@h/d?sslmode=x").is_err());
        assert!(ConnUrl::parse("postgres://u@h/d").is_err());
    }
}
