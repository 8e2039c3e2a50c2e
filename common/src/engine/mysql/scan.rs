//! Counting the rows of a mariadb-dump/mysqldump stream as it passes, and
//! checking its shape; keeping only some tables' sections of a dump.

use crate::engine::PayloadCheck;
use crate::error::{Error, Result};
use crate::meta::TableCount;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};

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
pub(super) fn filter_tables(
    input: &mut dyn Read,
    out: &mut dyn Write,
    wanted: &[String],
) -> Result<Vec<String>> {
    // A sequence is a section of its own (mariadb-dump puts them first,
    // before any table): kept only when named, never as the header.
    const MARKERS: [&str; 5] = [
        "-- Table structure for table ",
        "-- Dumping data for table ",
        "-- Temporary table structure for view ",
        "-- Final view structure for view ",
        "-- Sequence structure for ",
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
                keep = crate::engine::table_selected(&name, wanted, &[]);
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

    /// mariadb-dump writes sequences first, before any table: a restore of
    /// one table must not take them for the header and reset them.
    #[test]
    fn table_filter_keeps_a_sequence_only_when_it_is_named() {
        let at = DUMP
            .find("--\n-- Table structure for table")
            .expect("a table section");
        let dump = format!(
            "{}--\n-- Sequence structure for `sq`\n--\n\nDROP SEQUENCE IF EXISTS `sq`;\n\
             CREATE SEQUENCE `sq` start with 1;\nDO SETVAL(`sq`, 5000, 0);\n\n{}",
            &DUMP[..at],
            &DUMP[at..]
        );
        for (wanted, has) in [(vec!["t"], false), (vec!["t", "sq"], true)] {
            let wanted: Vec<String> = wanted.into_iter().map(String::from).collect();
            let mut out = Vec::new();
            let kept = filter_tables(&mut dump.as_bytes(), &mut out, &wanted).expect("filter");
            let text = String::from_utf8(out).expect("utf8");
            assert_eq!(text.contains("SETVAL"), has, "{wanted:?}");
            assert_eq!(kept.contains(&"sq".to_string()), has);
            assert!(text.contains("SET NAMES utf8mb4") && text.contains("INSERT INTO `t`"));
        }
    }
}
