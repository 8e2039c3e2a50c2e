//! Row counts read off a pg_dump custom-format stream as it passes.
//!
//! Every table's data is a TABLE DATA entry whose blocks hold `COPY` text,
//! one row a line (newlines inside values are escaped), so counting line
//! ends counts exactly the rows that are in the dump, with no second scan
//! of the database. The header and table of contents are parsed to map each
//! data block to its table. Anything unexpected turns the counter off, and
//! the caller counts in the dump's snapshot instead.

use crate::meta::TableCount;
use std::collections::BTreeMap;
use std::io::{self, Write};

const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
/// A table of contents larger than this is not worth keeping in memory to parse.
const MAX_PREFIX: usize = 256 << 20;

enum State {
    /// Collecting the header and table of contents.
    Prefix(Vec<u8>),
    /// Between data blocks.
    BlockType,
    /// Reading an integer into `pending`; then `then`.
    Int(Then),
    /// Inside a chunk of `usize` more bytes, of table data (true) or blobs.
    Chunk(usize, bool),
    /// Something unexpected: count nothing more.
    Off,
}

#[derive(Clone, Copy)]
enum Then {
    DataDumpId,
    DataChunkLen,
    BlobsDumpId,
    BlobOid,
    BlobChunkLen,
}

/// Counts rows per table in a pg_dump custom-format stream written through it.
pub struct DumpCounter<'a> {
    out: &'a mut dyn Write,
    state: State,
    int_size: usize,
    pending: Vec<u8>,
    tables: BTreeMap<i64, String>,
    current: Option<i64>,
    rows: BTreeMap<i64, u64>,
    /// The last bytes of the current table's data, to tell its end marker from rows.
    tail: Vec<u8>,
}

impl<'a> DumpCounter<'a> {
    /// Passes everything on to `out`.
    pub fn new(out: &'a mut dyn Write) -> DumpCounter<'a> {
        DumpCounter {
            out,
            state: State::Prefix(Vec::new()),
            int_size: 4,
            pending: Vec::new(),
            tables: BTreeMap::new(),
            current: None,
            rows: BTreeMap::new(),
            tail: Vec::new(),
        }
    }

    /// The counts, when the whole stream was understood.
    pub fn counts(&self) -> Option<Vec<TableCount>> {
        if !matches!(self.state, State::BlockType) {
            return None;
        }
        let mut v: Vec<TableCount> = self
            .tables
            .iter()
            .map(|(id, name)| TableCount {
                name: name.clone(),
                rows: self.rows.get(id).copied().unwrap_or(0),
            })
            .collect();
        v.sort();
        Some(v)
    }

    fn int_value(&self) -> i64 {
        let (sign, digits) = self.pending.split_first().expect("an int has a sign byte");
        let mut v: i64 = 0;
        for (i, b) in digits.iter().enumerate() {
            v |= (*b as i64) << (8 * i);
        }
        if *sign != 0 {
            -v
        } else {
            v
        }
    }

    /// The COPY data ends with the `\.` end marker and blank lines, which are not rows.
    fn end_of_table(&mut self) {
        let at_line_start = |marker: &[u8]| {
            self.tail == marker
                || (self.tail.ends_with(marker)
                    && self.tail[self.tail.len() - marker.len() - 1] == b'\n')
        };
        let marker_lines = if at_line_start(b"\\.\n\n\n") {
            3
        } else if at_line_start(b"\\.\n") {
            1
        } else {
            0
        };
        if let Some(id) = self.current.take() {
            let r = self.rows.entry(id).or_default();
            *r = r.saturating_sub(marker_lines);
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Prefix(buf) => {
                    buf.extend_from_slice(data);
                    data = &[];
                    match parse_prefix(buf) {
                        Parse::Done {
                            used,
                            int_size,
                            tables,
                        } => {
                            let rest = buf.split_off(used);
                            self.int_size = int_size;
                            self.tables = tables;
                            self.state = State::BlockType;
                            self.feed(&rest);
                        }
                        Parse::More if buf.len() < MAX_PREFIX => {}
                        _ => self.state = State::Off,
                    }
                }
                State::BlockType => {
                    let t = data[0];
                    data = &data[1..];
                    self.pending.clear();
                    self.state = match t {
                        BLK_DATA => State::Int(Then::DataDumpId),
                        BLK_BLOBS => State::Int(Then::BlobsDumpId),
                        _ => State::Off,
                    };
                }
                State::Int(then) => {
                    let then = *then;
                    let need = 1 + self.int_size - self.pending.len();
                    let take = need.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() < 1 + self.int_size {
                        continue;
                    }
                    let v = self.int_value();
                    self.pending.clear();
                    self.state = match then {
                        Then::DataDumpId => {
                            self.current = Some(v);
                            self.tail.clear();
                            State::Int(Then::DataChunkLen)
                        }
                        Then::DataChunkLen if v == 0 => {
                            self.end_of_table();
                            State::BlockType
                        }
                        Then::DataChunkLen if v > 0 => State::Chunk(v as usize, true),
                        Then::BlobsDumpId => State::Int(Then::BlobOid),
                        Then::BlobOid if v == 0 => State::BlockType,
                        Then::BlobOid => State::Int(Then::BlobChunkLen),
                        Then::BlobChunkLen if v == 0 => State::Int(Then::BlobOid),
                        Then::BlobChunkLen if v > 0 => State::Chunk(v as usize, false),
                        _ => State::Off,
                    };
                }
                State::Chunk(left, is_data) => {
                    let take = (*left).min(data.len());
                    if *is_data {
                        // Rows are hundreds of bytes long: a vectorised search from one
                        // line end to the next beats looking at every byte.
                        let lines = memchr::memchr_iter(b'\n', &data[..take]).count() as u64;
                        if let Some(id) = self.current {
                            *self.rows.entry(id).or_default() += lines;
                        }
                        self.tail
                            .extend_from_slice(&data[take.saturating_sub(8)..take]);
                        let excess = self.tail.len().saturating_sub(8);
                        self.tail.drain(..excess);
                    }
                    *left -= take;
                    let (done, is_data) = (*left == 0, *is_data);
                    data = &data[take..];
                    if done {
                        self.state = State::Int(if is_data {
                            Then::DataChunkLen
                        } else {
                            Then::BlobChunkLen
                        });
                    }
                }
            }
        }
    }
}

impl Write for DumpCounter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        self.feed(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

enum Parse {
    Done {
        used: usize,
        int_size: usize,
        tables: BTreeMap<i64, String>,
    },
    More,
    Unknown,
}

/// A cursor over the prefix; `None` means "not enough bytes yet".
struct Cur<'b> {
    b: &'b [u8],
    pos: usize,
    int_size: usize,
    off_size: usize,
}

impl Cur<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn int(&mut self) -> Option<i64> {
        let sign = self.byte()?;
        let mut v: i64 = 0;
        for i in 0..self.int_size {
            v |= (self.byte()? as i64) << (8 * i);
        }
        Some(if sign != 0 { -v } else { v })
    }
    fn string(&mut self) -> Option<Option<String>> {
        let len = self.int()?;
        if len < 0 {
            return Some(None);
        }
        let end = self.pos.checked_add(len as usize)?;
        let s = String::from_utf8_lossy(self.b.get(self.pos..end)?).into_owned();
        self.pos = end;
        Some(Some(s))
    }
}

fn parse_prefix(b: &[u8]) -> Parse {
    if b.len() < 11 {
        return Parse::More;
    }
    if &b[..5] != b"PGDMP" {
        return Parse::Unknown;
    }
    let (major, minor) = (b[5], b[6]);
    // Formats 1.12 (PostgreSQL 11) to 1.16 (PostgreSQL 17) are understood.
    if major != 1 || !(12..=16).contains(&minor) || b[10] != 1 {
        return Parse::Unknown;
    }
    let mut c = Cur {
        b,
        pos: 11,
        int_size: b[8] as usize,
        off_size: b[9] as usize,
    };
    if c.int_size == 0 || c.int_size > 8 {
        return Parse::Unknown;
    }
    match parse_toc(&mut c, minor) {
        Some(Some(tables)) => Parse::Done {
            used: c.pos,
            int_size: c.int_size,
            tables,
        },
        Some(None) => Parse::Unknown,
        None => Parse::More,
    }
}

/// `None`: more bytes needed; `Some(None)`: not understood.
fn parse_toc(c: &mut Cur<'_>, minor: u8) -> Option<Option<BTreeMap<i64, String>>> {
    if minor >= 15 {
        c.byte()?; // compression algorithm
    } else {
        c.int()?; // compression level
    }
    for _ in 0..7 {
        c.int()?; // creation time
    }
    c.string()?; // database name
    c.string()?; // server version
    c.string()?; // pg_dump version
    let count = c.int()?;
    let mut tables = BTreeMap::new();
    for _ in 0..count {
        let dump_id = c.int()?;
        c.int()?; // had dumper
        c.string()?; // table oid
        c.string()?; // oid
        let tag = c.string()?.unwrap_or_default();
        let desc = c.string()?.unwrap_or_default();
        c.int()?; // section
        c.string()?; // definition
        c.string()?; // drop statement
        c.string()?; // copy statement
        let namespace = c.string()?.unwrap_or_default();
        c.string()?; // tablespace
        c.string()?; // table access method
        if minor >= 16 {
            c.int()?; // relkind
        }
        c.string()?; // owner
        c.string()?; // with oids
        while c.string()?.is_some() {} // dependencies
                                       // The custom format's extra TOC data: a data offset.
        c.byte()?;
        for _ in 0..c.off_size {
            c.byte()?;
        }
        if desc == "TABLE DATA" {
            tables.insert(dump_id, format!("{namespace}.{tag}"));
        }
    }
    Some(Some(tables))
}
