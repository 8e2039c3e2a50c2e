//! The stream pipeline: payload → compression → encryption → sha256 → sink, and back.
//!
//! Layers are writers wrapped around writers (and readers around readers).
//! Every layer with a trailer (zstd's last block and checksum, gzip's CRC,
//! age's final chunk) is finished explicitly by [`StreamEncoder::finish`];
//! dropping an encoder instead abandons the artifact, which is what an error
//! path wants.
//!
//! Encoding runs on two threads of its own: the producer (a dump tool's
//! pipe, the SQLite backup file) hands 1 MiB buffers through a bounded
//! channel to the compressor, which hands its output through another to the
//! thread that encrypts, hashes and writes. Reading the source, compressing
//! and encrypting overlap, as the stages of a shell pipeline do, and memory
//! stays at a few buffers per stage whatever the database size.

use crate::error::{Error, Result};
use crate::idle::{Idle, IdleGauge, ProcStat};
use crate::keys::{Encryption, Keyring};
use crate::name::{Compression, Payload};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// How to encode a stream.
#[derive(Clone)]
pub struct EncodeOptions {
    /// The compression layer.
    pub compression: Compression,
    /// Compression level (zstd 1..=19, gzip 1..=9); `None` for the default.
    pub level: Option<i32>,
    /// zstd worker threads (0: single-threaded in the pipeline thread).
    pub threads: u32,
    /// The encryption layer.
    pub encryption: Encryption,
    /// Abort once the artifact grows past this many bytes.
    pub max_size: Option<u64>,
}

/// What came out of an encoded stream.
#[derive(Debug, Clone)]
pub struct EncodeSummary {
    /// Bytes of payload that went in.
    pub raw_bytes: u64,
    /// Bytes of artifact that came out.
    pub artifact_bytes: u64,
    /// sha256 of the artifact, hex.
    pub sha256: String,
    /// zstd: payload bytes compressed at each level (one entry unless adaptive).
    pub levels: std::collections::BTreeMap<i32, u64>,
}

/// A writer that encodes everything written to it into `W` on two threads:
/// one compresses, the other encrypts, hashes and writes. The caller's own
/// thread only reads the source, so the three overlap.
pub struct StreamEncoder<W: Write + Send + 'static> {
    tx: Option<SyncSender<Vec<u8>>>,
    /// Buffers sent and not yet taken by the compressor.
    queued: Arc<AtomicUsize>,
    buf: Vec<u8>,
    /// Buffers the compressor has emptied, for the next ones.
    spares: Spares,
    raw: u64,
    compressor: Option<JoinHandle<io::Result<Levels>>>,
    writer: Option<JoinHandle<io::Result<(W, EncodeSummary)>>>,
    progress: Option<crate::progress::Progress>,
}

impl<W: Write + Send + 'static> StreamEncoder<W> {
    /// Starts the encoding threads writing into `sink`.
    pub fn new(sink: W, opts: EncodeOptions) -> Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (ctx, crx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let back = back_layers(sink, &opts)?;
        let (spares, compressed_spares) = (Spares::default(), Spares::default());
        let front = front_layer(ChannelWriter::new(ctx, compressed_spares.clone()), &opts)?;
        let spawn_err =
            |e: io::Error| Error::failed(format!("cannot start an encoding thread: {e}"));
        let writer = std::thread::Builder::new()
            .name("encrypt-write".into())
            .spawn(move || write_stage(back, crx, compressed_spares))
            .map_err(spawn_err)?;
        let queued = Arc::new(AtomicUsize::new(0));
        let backlog = queued.clone();
        let emptied = spares.clone();
        let compressor = std::thread::Builder::new()
            .name("compress".into())
            .spawn(move || compress_stage(front, rx, &backlog, &emptied))
            .map_err(spawn_err)?;
        Ok(StreamEncoder {
            tx: Some(tx),
            queued,
            buf: spares.take(),
            spares,
            raw: 0,
            compressor: Some(compressor),
            writer: Some(writer),
            progress: None,
        })
    }

    /// Reports raw bytes to a progress display.
    pub fn with_progress(mut self, p: crate::progress::Progress) -> Self {
        self.progress = Some(p);
        self
    }

    /// Joins both stages; the writer's error comes first, since a failed
    /// write (a full disk, --max-size) is why the compressor stopped.
    fn join(&mut self) -> io::Result<(W, EncodeSummary)> {
        self.tx = None;
        let compressed = match self.compressor.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the compression thread panicked")),
            None => Ok(Levels::new()),
        };
        let written = match self.writer.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the encryption thread panicked")),
            None => Err(io::Error::other("the encoding threads stopped")),
        };
        match (compressed, written) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok(levels), Ok((sink, summary))) => Ok((sink, EncodeSummary { levels, ..summary })),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, self.spares.take());
        let tx = self.tx.as_ref().expect("sender lives until finish");
        self.queued.fetch_add(1, Ordering::Relaxed);
        if tx.send(full).is_err() {
            // A stage stopped early: its error is the one to report.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the encoding threads stopped")));
        }
        Ok(())
    }

    /// Flushes the last buffer, finishes every layer in order and returns the sink.
    pub fn finish(mut self) -> Result<(W, EncodeSummary)> {
        self.send()?;
        let (sink, mut summary) = self.join()?;
        summary.raw_bytes = self.raw;
        if let Some(p) = &self.progress {
            p.finish();
        }
        Ok((sink, summary))
    }
}

impl<W: Write + Send + 'static> Drop for StreamEncoder<W> {
    /// An encoder dropped without `finish` abandons the artifact: the stages
    /// are joined so the sink (and the temporary behind it) is gone before
    /// the caller goes on.
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Buffers of [`CHUNK`] bytes that a stage has emptied, handed back to the
/// stage that fills them: a stream reuses a few buffers instead of
/// allocating, and faulting in, a new one for every MiB.
#[derive(Clone, Default)]
struct Spares(Arc<Mutex<Vec<Vec<u8>>>>);

impl Spares {
    /// An empty buffer: a spare one if there is one.
    fn take(&self) -> Vec<u8> {
        let spare = self.0.lock().expect("spares lock").pop();
        spare.unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    /// Keeps an emptied buffer, as many as can be in flight at once.
    fn give(&self, mut buf: Vec<u8>) {
        let mut spares = self.0.lock().expect("spares lock");
        if spares.len() <= IN_FLIGHT {
            buf.clear();
            spares.push(buf);
        }
    }
}

/// Hands compressed bytes to the next stage in 1 MiB buffers.
struct ChannelWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
    spares: Spares,
}

impl ChannelWriter {
    fn new(tx: SyncSender<Vec<u8>>, spares: Spares) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: spares.take(),
            spares,
        }
    }
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, self.spares.take());
        self.tx
            .send(full)
            .map_err(|_| io::Error::other("the encryption thread stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    /// Sends what is buffered: called once, after the compressor's trailer.
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn compress_stage(
    mut front: Compress<ChannelWriter>,
    rx: Receiver<Vec<u8>>,
    queued: &AtomicUsize,
    emptied: &Spares,
) -> io::Result<Levels> {
    for buf in rx {
        let backlog = queued.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        front.write_chunk(&buf, backlog)?;
        emptied.give(buf);
    }
    let (mut channel, levels) = front.finish()?;
    channel.flush()?;
    Ok(levels)
}

fn write_stage<W: Write>(
    mut back: Encrypt<Hashing<W>>,
    rx: Receiver<Vec<u8>>,
    emptied: Spares,
) -> io::Result<(W, EncodeSummary)> {
    for buf in rx {
        back.write_all(&buf)?;
        emptied.give(buf);
    }
    let hashing = back.finish()?;
    let mut sink = hashing.inner;
    sink.flush()?;
    Ok((
        sink,
        EncodeSummary {
            raw_bytes: 0,
            artifact_bytes: hashing.bytes,
            sha256: hex::encode(hashing.hasher.finalize()),
            levels: Levels::new(),
        },
    ))
}

impl<W: Write + Send + 'static> Write for StreamEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.raw += n as u64;
        if let Some(p) = &self.progress {
            p.add(n as u64);
        }
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts and hashes the artifact bytes on their way to the sink.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    max: Option<u64>,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        if let Some(max) = self.max {
            if self.bytes > max {
                return Err(Error::failed(format!(
                    "the artifact grew past --max-size ({}); aborted and cleaned up",
                    crate::units::human_bytes(max)
                ))
                .into());
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encrypt<W: Write> {
    Age(age::stream::StreamWriter<W>),
    Plain(W),
}

impl<W: Write> Write for Encrypt<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Encrypt::Age(w) => w.write(data),
            Encrypt::Plain(w) => w.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encrypt::Age(w) => w.flush(),
            Encrypt::Plain(w) => w.flush(),
        }
    }
}

impl<W: Write> Encrypt<W> {
    /// Writes age's final chunk; without it the artifact does not decrypt.
    fn finish(self) -> io::Result<W> {
        match self {
            Encrypt::Age(w) => w.finish(),
            Encrypt::Plain(w) => Ok(w),
        }
    }
}

/// Payload bytes compressed at each zstd level.
pub type Levels = std::collections::BTreeMap<i32, u64>;

enum Compress<W: Write> {
    /// A fixed level, and the bytes compressed.
    Zstd(zstd::stream::write::Encoder<'static, W>, i32, u64),
    Adaptive(Adaptive<W>),
    Gzip(flate2::write::GzEncoder<W>),
    Plain(W),
}

impl<W: Write> Compress<W> {
    /// Compresses one buffer of the source; `backlog` is how many more
    /// wait behind it (what the adaptive level watches).
    fn write_chunk(&mut self, data: &[u8], backlog: usize) -> io::Result<()> {
        match self {
            Compress::Zstd(w, _, raw) => {
                *raw += data.len() as u64;
                w.write_all(data)
            }
            Compress::Adaptive(a) => a.write_chunk(data, backlog),
            Compress::Gzip(w) => w.write_all(data),
            Compress::Plain(w) => w.write_all(data),
        }
    }

    /// Ends the zstd frame (with its checksum) or writes gzip's CRC
    /// trailer; returns the bytes compressed at each zstd level.
    fn finish(self) -> io::Result<(W, Levels)> {
        match self {
            Compress::Zstd(w, level, raw) => Ok((w.finish()?, Levels::from([(level, raw)]))),
            Compress::Adaptive(a) => a.finish(),
            Compress::Gzip(w) => Ok((w.finish()?, Levels::new())),
            Compress::Plain(w) => Ok((w, Levels::new())),
        }
    }
}

/// zstd whose level follows the source, as `zstd --adapt` does: a source
/// that keeps the queue in front of the compressor full (compression is the
/// bottleneck) lowers the level, a compressor that keeps finding the queue
/// empty (it waits on the source) raises it. The queue alone cannot see a
/// machine whose cores are all busy: there a compressor that keeps up does
/// so by taking CPU from the database and its dump tool, which slows the
/// source it then waits on. So the level also goes down while the machine
/// has no idle core to speak of, and rises only while a whole core is idle
/// ([`IdleGauge`]). Single-threaded, a new level starts a new zstd frame:
/// the artifact is concatenated frames, which every zstd decoder (the
/// `zstd` CLI included) reads as one stream; with workers, the level
/// changes inside the one frame.
struct Adaptive<W: Write> {
    encoder: Option<zstd::stream::write::Encoder<'static, W>>,
    level: i32,
    threads: u32,
    levels: Levels,
    chunks: usize,
    backlog: usize,
    idle: Box<dyn IdleGauge>,
}

/// The adaptive range, where it starts and how many buffers (of
/// [`CHUNK`]) each decision watches at the least.
const AUTO_LEVELS: std::ops::RangeInclusive<i32> = 1..=6;
const AUTO_START: i32 = 3;
const AUTO_WINDOW: usize = 8;
/// Idle cores below which the machine counts as saturated (the level goes
/// down), and at or above which a higher level has a core of its own.
const SATURATED: f64 = 0.25;
const SPARE_CORE: f64 = 1.0;

/// The highest adaptive level where the machine's idle CPU is unknown: a
/// compressor waiting on its source has a core to spare for a better ratio
/// only when the source does not need it, which on 2 cores or fewer it
/// does, so there the level only goes down from its start.
fn blind_ceiling() -> i32 {
    match std::thread::available_parallelism().map(|n| n.get()) {
        Ok(n) if n > 2 => *AUTO_LEVELS.end(),
        _ => AUTO_START,
    }
}

/// An average queue, in quarters of a buffer, at which compression is the
/// bottleneck.
const BEHIND: usize = (IN_FLIGHT - 1) * 4;

/// The next level, for a compressor that keeps up with its source, from
/// the current one, whether it found its queue empty over the window, and
/// the machine's idle CPU.
fn next_level(level: i32, queue_empty: bool, idle: Idle) -> i32 {
    let (saturated, spare, ceiling) = match idle {
        Idle::Cores(c) => (c < SATURATED, c >= SPARE_CORE, *AUTO_LEVELS.end()),
        Idle::Unknown | Idle::TooSoon => (false, true, blind_ceiling()),
    };
    let next = if saturated {
        level - 1
    } else if queue_empty && spare {
        level + 1
    } else {
        level
    };
    next.clamp(*AUTO_LEVELS.start(), ceiling.max(level))
}

impl<W: Write> Adaptive<W> {
    fn new(next: W, threads: u32) -> io::Result<Adaptive<W>> {
        Adaptive::with_gauge(next, threads, Box::new(ProcStat::new()))
    }

    fn with_gauge(next: W, threads: u32, idle: Box<dyn IdleGauge>) -> io::Result<Adaptive<W>> {
        Ok(Adaptive {
            encoder: Some(zstd_encoder(next, AUTO_START, threads)?),
            level: AUTO_START,
            threads,
            levels: Levels::new(),
            chunks: 0,
            backlog: 0,
            idle,
        })
    }

    fn write_chunk(&mut self, data: &[u8], backlog: usize) -> io::Result<()> {
        let encoder = self.encoder.as_mut().expect("an encoder until finish");
        encoder.write_all(data)?;
        *self.levels.entry(self.level).or_default() += data.len() as u64;
        self.chunks += 1;
        self.backlog += backlog;
        if self.chunks < AUTO_WINDOW {
            return Ok(());
        }
        // Average queue length over the window, in quarters of a buffer.
        let backlog = self.backlog * 4 / self.chunks;
        let next = if backlog >= BEHIND {
            // Falling behind: down at once, whatever the CPU says.
            (self.level - 1).max(*AUTO_LEVELS.start())
        } else {
            match self.idle.read() {
                Idle::TooSoon => return Ok(()),
                idle => next_level(self.level, backlog == 0, idle),
            }
        };
        (self.chunks, self.backlog) = (0, 0);
        if next != self.level {
            self.change_level(next)?;
        }
        Ok(())
    }

    /// zstd's workers take a new level at their next job, inside the
    /// frame; a single-threaded compressor only at a frame's start, so
    /// there the level change ends the frame and starts another.
    fn change_level(&mut self, level: i32) -> io::Result<()> {
        if self.threads > 0 {
            let encoder = self.encoder.as_mut().expect("an encoder until finish");
            encoder.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level))?;
        } else {
            let sink = self.encoder.take().expect("an encoder").finish()?;
            self.encoder = Some(zstd_encoder(sink, level, self.threads)?);
        }
        self.level = level;
        Ok(())
    }

    fn finish(mut self) -> io::Result<(W, Levels)> {
        let sink = self.encoder.take().expect("an encoder").finish()?;
        Ok((sink, self.levels))
    }
}

fn zstd_encoder<W: Write>(
    next: W,
    level: i32,
    threads: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut z = zstd::stream::write::Encoder::new(next, level)?;
    z.include_checksum(true)?;
    if threads > 0 {
        z.multithread(threads)?;
    }
    Ok(z)
}

fn back_layers<W: Write>(sink: W, opts: &EncodeOptions) -> Result<Encrypt<Hashing<W>>> {
    let hashing = Hashing {
        inner: sink,
        hasher: Sha256::new(),
        bytes: 0,
        max: opts.max_size,
    };
    Ok(match &opts.encryption {
        Encryption::None => Encrypt::Plain(hashing),
        Encryption::Recipients(keys) => {
            let enc =
                age::Encryptor::with_recipients(keys.iter().map(|k| k as &dyn age::Recipient))
                    .map_err(|e| {
                        Error::usage(format!("cannot encrypt to these recipients: {e}"))
                    })?;
            Encrypt::Age(enc.wrap_output(hashing)?)
        }
        Encryption::Passphrase(p) => {
            Encrypt::Age(age::Encryptor::with_user_passphrase(p.clone()).wrap_output(hashing)?)
        }
    })
}

/// The levels each codec accepts (SPEC §1: zstd 1-19, gzip 1-9).
pub fn check_level(compression: Compression, level: Option<i32>) -> Result<()> {
    let range = match compression {
        Compression::Zstd => 1..=19,
        Compression::Gzip => 1..=9,
        Compression::None => return Ok(()),
    };
    match level {
        Some(l) if !range.contains(&l) => Err(Error::usage(format!(
            "--level {l} is out of range for {}: use {} to {}",
            compression.as_str(),
            range.start(),
            range.end()
        ))),
        _ => Ok(()),
    }
}

fn front_layer<W: Write>(next: W, opts: &EncodeOptions) -> Result<Compress<W>> {
    check_level(opts.compression, opts.level)?;
    Ok(match (opts.compression, opts.level) {
        (Compression::Zstd, Some(level)) => {
            Compress::Zstd(zstd_encoder(next, level, opts.threads)?, level, 0)
        }
        (Compression::Zstd, None) => Compress::Adaptive(Adaptive::new(next, opts.threads)?),
        (Compression::Gzip, level) => Compress::Gzip(flate2::write::GzEncoder::new(
            next,
            flate2::Compression::new(level.unwrap_or(6).unsigned_abs()),
        )),
        (Compression::None, _) => Compress::Plain(next),
    })
}

/// The layers found in an artifact by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// Whether there is an age layer.
    pub encrypted: bool,
    /// The compression layer.
    pub compression: Compression,
    /// The payload, sniffed after decompression.
    pub payload: Option<Payload>,
}

/// A running sha256 and byte count of what a reader has read, shared with the caller.
#[derive(Clone, Default)]
pub struct HashTap(Arc<Mutex<(Sha256, u64)>>);

impl HashTap {
    /// Adds bytes read.
    pub fn update(&self, data: &[u8]) {
        let mut g = self.0.lock().expect("hash lock");
        g.0.update(data);
        g.1 += data.len() as u64;
    }

    /// The sha256 hex and byte count so far.
    pub fn result(&self) -> (String, u64) {
        let g = self.0.lock().expect("hash lock");
        (hex::encode(g.0.clone().finalize()), g.1)
    }
}

/// A reader that feeds everything it reads into a [`HashTap`].
pub struct Tapped<R> {
    inner: R,
    tap: HashTap,
}

/// Wraps a reader so the sha256 and size of what passes through can be read off the tap.
pub fn tap<R: Read>(inner: R) -> (Tapped<R>, HashTap) {
    let tap = HashTap::default();
    (
        Tapped {
            inner,
            tap: tap.clone(),
        },
        tap,
    )
}

impl<R: Read> Read for Tapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tap.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads up to `n` bytes ahead without losing them.
fn peek<R: Read + Send + 'static>(
    mut r: R,
    n: usize,
) -> io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = Vec::with_capacity(n);
    (&mut r).take(n as u64).read_to_end(&mut head)?;
    let again = io::Cursor::new(head.clone()).chain(r);
    Ok((head, Box::new(again)))
}

/// The first bytes of an age file.
pub(crate) const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

/// Whether `head` opens an age file.
pub(crate) fn is_age(head: &[u8]) -> bool {
    head.starts_with(AGE_MAGIC)
}
const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
const GZIP_MAGIC: &[u8] = &[0x1F, 0x8B];

/// Sniffs the payload from its first bytes.
pub fn sniff_payload(head: &[u8]) -> Option<Payload> {
    if head.starts_with(b"PGDMP") {
        Some(Payload::Pgdump)
    } else if head.starts_with(b"SQLite format 3\0") {
        Some(Payload::Sqlite)
    } else if head.len() >= 12 && &head[8..12] == b"DUCK" {
        Some(Payload::Duckdb)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Payload::Tar)
    } else if head.starts_with(b"--") || head.starts_with(b"/*") {
        // SQL dumps (pg_dump plain, mariadb-dump) open with a comment.
        Some(Payload::Sql)
    } else {
        None
    }
}

/// A decoded artifact: the payload stream and the layers it came through.
pub struct Decoded {
    /// The payload bytes.
    pub reader: Box<dyn Read + Send>,
    /// The layers found.
    pub layers: Layers,
}

/// Opens an artifact stream: sniffs and peels the age and compression layers.
///
/// To know the artifact's checksum, [`tap`] the input first.
pub fn decode<R: Read + Send + 'static>(input: R, keys: &Keyring) -> Result<Decoded> {
    let (head, mut reader) = peek(input, AGE_MAGIC.len())?;
    if head.is_empty() {
        return Err(Error::failed("the artifact is empty"));
    }
    let encrypted = is_age(&head);
    if encrypted {
        reader = Box::new(keys.decrypt(reader)?);
    }
    let (head, reader) =
        peek(reader, 4).map_err(|e| layer_error(e, Compression::None, encrypted))?;
    let (compression, reader): (Compression, Box<dyn Read + Send>) = if head.starts_with(ZSTD_MAGIC)
    {
        (
            Compression::Zstd,
            Box::new(zstd::stream::read::Decoder::new(reader)?),
        )
    } else if head.starts_with(GZIP_MAGIC) {
        (
            Compression::Gzip,
            Box::new(flate2::read::MultiGzDecoder::new(reader)),
        )
    } else {
        (Compression::None, reader)
    };
    let (head, reader) = peek(reader, 512).map_err(|e| layer_error(e, compression, encrypted))?;
    Ok(Decoded {
        reader: Box::new(Labelled {
            inner: reader,
            compression,
            encrypted,
        }),
        layers: Layers {
            encrypted,
            compression,
            payload: sniff_payload(&head),
        },
    })
}

fn layer_error(e: io::Error, compression: Compression, encrypted: bool) -> Error {
    let layer = match (compression, encrypted) {
        (Compression::None, true) => "age decryption".to_string(),
        (Compression::None, false) => "reading".to_string(),
        (c, true) => format!("age decryption or {} decompression", c.as_str()),
        (c, false) => format!("{} decompression", c.as_str()),
    };
    let e = Error::from(e);
    if e.code() == crate::ExitCode::Interrupted {
        return e;
    }
    Error::failed(format!("{layer} failed: {}", e.message))
        .hint("the artifact is corrupt or truncated")
}

/// Names the layer in read errors, so a corrupt artifact says where it broke.
struct Labelled {
    inner: Box<dyn Read + Send>,
    compression: Compression,
    encrypted: bool,
}

impl Read for Labelled {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| layer_error(e, self.compression, self.encrypted).into())
    }
}

/// Copies a reader into a writer with a large buffer; returns the bytes copied.
pub fn copy(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::SecretString;

    fn roundtrip(
        compression: Compression,
        encryption: Encryption,
        keys: &Keyring,
    ) -> (Layers, Vec<u8>) {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut enc = StreamEncoder::new(
            Vec::new(),
            EncodeOptions {
                compression,
                level: None,
                threads: 0,
                encryption,
                max_size: None,
            },
        )
        .unwrap();
        enc.write_all(&data).unwrap();
        let (artifact, summary) = enc.finish().unwrap();
        assert_eq!(summary.raw_bytes, data.len() as u64);
        assert_eq!(summary.artifact_bytes, artifact.len() as u64);
        assert_eq!(summary.sha256, hex::encode(Sha256::digest(&artifact)));
        let (input, tap) = tap(io::Cursor::new(artifact.clone()));
        let mut d = decode(input, keys).unwrap();
        let mut out = Vec::new();
        d.reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(tap.result().0, summary.sha256);
        (d.layers, artifact)
    }

    /// A gauge that reads what the test says, in turn.
    struct Readings(std::collections::VecDeque<Idle>);

    impl IdleGauge for Readings {
        fn read(&mut self) -> Idle {
            self.0.pop_front().expect("a reading for each window")
        }
    }

    fn adaptive(readings: impl IntoIterator<Item = Idle>) -> Adaptive<Vec<u8>> {
        Adaptive::with_gauge(
            Vec::new(),
            0,
            Box::new(Readings(readings.into_iter().collect())),
        )
        .unwrap()
    }

    #[test]
    fn the_adaptive_level_follows_the_backlog_and_its_frames_decode_as_one_stream() {
        let mut a = adaptive([Idle::Cores(1.5); 5]);
        let chunk =
            |i: usize| -> Vec<u8> { (0..CHUNK).map(|j| ((i * 31 + j / 7) % 251) as u8).collect() };
        let mut plain = Vec::new();
        // A full queue lowers the level window by window, down to 1.
        for i in 0..AUTO_WINDOW * 3 {
            a.write_chunk(&chunk(i), IN_FLIGHT).unwrap();
            plain.extend(chunk(i));
        }
        assert_eq!(a.level, 1);
        // An empty queue with a core to spare raises it again.
        for i in 0..AUTO_WINDOW * 2 {
            a.write_chunk(&chunk(i), 0).unwrap();
            plain.extend(chunk(i));
        }
        assert_eq!(a.level, 3);
        let (out, levels) = a.finish().unwrap();
        assert_eq!(
            levels,
            Levels::from([
                (1, (AUTO_WINDOW * 2 * CHUNK) as u64),
                (2, (AUTO_WINDOW * 2 * CHUNK) as u64),
                (3, (AUTO_WINDOW * CHUNK) as u64),
            ])
        );
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&out[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == plain, "the concatenated frames decode to the input");
    }

    #[test]
    fn with_workers_the_level_changes_inside_one_frame() {
        let mut a = Adaptive::with_gauge(
            Vec::new(),
            2,
            Box::new(Readings([Idle::Cores(0.0), Idle::Cores(0.0)].into())),
        )
        .unwrap();
        let chunk =
            |i: usize| -> Vec<u8> { (0..CHUNK).map(|j| ((i * 17 + j / 5) % 241) as u8).collect() };
        let mut plain = Vec::new();
        for i in 0..AUTO_WINDOW * 2 {
            a.write_chunk(&chunk(i), 0).unwrap();
            plain.extend(chunk(i));
        }
        assert_eq!(a.level, AUTO_START - 2);
        let (out, levels) = a.finish().unwrap();
        assert_eq!(levels.len(), 2, "{levels:?}");
        let first = zstd::zstd_safe::find_frame_compressed_size(&out).unwrap();
        assert_eq!(first, out.len(), "one frame");
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&out[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == plain);
    }

    #[test]
    fn a_saturated_machine_lowers_the_level_though_the_compressor_keeps_up() {
        // The queue stays empty throughout: only the idle CPU differs.
        let mut a = adaptive([
            Idle::Cores(0.1),
            Idle::Cores(0.0),
            Idle::Cores(0.1),
            Idle::Cores(0.5),
            Idle::Cores(0.5),
            Idle::Cores(2.0),
            Idle::Cores(2.0),
        ]);
        let mut levels = Vec::new();
        for _ in 0..7 {
            for _ in 0..AUTO_WINDOW {
                a.write_chunk(&[7u8; 4096], 0).unwrap();
            }
            levels.push(a.level);
        }
        assert_eq!(
            levels,
            [2, 1, 1, 1, 1, 2, 3],
            "down while saturated, held with half a core idle, up with a core to spare"
        );
    }

    #[test]
    fn a_compressor_falling_behind_goes_down_without_waiting_for_a_cpu_reading() {
        // No readings at all: the gauge panics if it is asked.
        let mut a = adaptive([]);
        for _ in 0..AUTO_WINDOW * 2 {
            a.write_chunk(&[7u8; 4096], IN_FLIGHT).unwrap();
        }
        assert_eq!(a.level, AUTO_START - 2);
    }

    #[test]
    fn a_window_too_short_to_read_the_cpu_waits_for_the_next_reading() {
        let mut a = adaptive([Idle::TooSoon, Idle::TooSoon, Idle::Cores(0.0)]);
        for _ in 0..AUTO_WINDOW + 1 {
            a.write_chunk(&[7u8; 4096], 0).unwrap();
        }
        assert_eq!(a.level, AUTO_START, "no decision without a reading");
        a.write_chunk(&[7u8; 4096], 0).unwrap();
        assert_eq!(a.level, AUTO_START - 1);
        assert_eq!(a.chunks, 0, "the next window starts after the decision");
    }

    #[test]
    fn without_a_cpu_reading_a_small_machine_never_rises_above_the_start() {
        let small = std::thread::available_parallelism().map_or(1, |n| n.get()) <= 2;
        let mut a = adaptive([Idle::Unknown; 3]);
        for _ in 0..AUTO_WINDOW * 3 {
            a.write_chunk(&[7u8; 4096], 0).unwrap();
        }
        let expected = if small { AUTO_START } else { AUTO_START + 3 };
        assert_eq!(a.level, expected);
    }

    #[test]
    fn every_compression_round_trips_and_is_sniffed() {
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let (layers, _) = roundtrip(c, Encryption::None, &Keyring::default());
            assert_eq!(layers.compression, c);
            assert!(!layers.encrypted);
        }
    }

    #[test]
    fn passphrase_encryption_round_trips() {
        let (_dir, p) = crate::testing::temp_file("pass", "correct horse\n");
        let keys = Keyring::load(&[], Some(&p)).unwrap();
        let (layers, _) = roundtrip(
            Compression::Zstd,
            Encryption::Passphrase(SecretString::from("correct horse".to_string())),
            &keys,
        );
        assert!(layers.encrypted);
    }

    #[test]
    fn a_flipped_byte_in_a_zstd_stream_is_an_error() {
        let (_, mut artifact) = roundtrip(Compression::Zstd, Encryption::None, &Keyring::default());
        let mid = artifact.len() / 2;
        artifact[mid] ^= 0x01;
        // The damage shows while sniffing or while reading on; either way it is an error.
        let result = decode(io::Cursor::new(artifact), &Keyring::default()).and_then(|mut d| {
            let mut out = Vec::new();
            d.reader.read_to_end(&mut out).map_err(Error::from)
        });
        assert!(result.is_err());
    }

    #[test]
    fn sniffs_payloads_by_magic() {
        assert_eq!(sniff_payload(b"PGDMP\x01\x0e"), Some(Payload::Pgdump));
        assert_eq!(
            sniff_payload(b"SQLite format 3\0rest"),
            Some(Payload::Sqlite)
        );
        let mut duck = vec![0u8; 64];
        duck[8..12].copy_from_slice(b"DUCK");
        assert_eq!(sniff_payload(&duck), Some(Payload::Duckdb));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff_payload(&tar), Some(Payload::Tar));
        assert_eq!(sniff_payload(b"-- MariaDB dump 10.19"), Some(Payload::Sql));
        assert_eq!(sniff_payload(b"age-encryption.org/v2"), None);
        assert_eq!(sniff_payload(&[0xff, 0xfe, 0x00]), None);
    }
}
