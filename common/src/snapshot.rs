//! Taking a snapshot: engine → pipeline → destination, with sidecars.
//!
//! Shared by `dbsnap` and by every tool that takes a safety backup before it
//! changes a database.

use crate::artifact::{sha256_line, Sidecar};
use crate::engine::{Engine, SnapshotOptions};
use crate::error::{Error, Result};
use crate::keys::Encryption;
use crate::meta::{Metadata, ToolInfo};
use crate::name::{ArtifactName, Compression, Kind};
use crate::pipeline::{EncodeOptions, EncodeSummary, StreamEncoder};
use crate::progress::Progress;
use crate::store::{self, Store};
use chrono::Utc;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where a snapshot goes.
pub enum Destination<'a> {
    /// stdout, with metadata optionally written to a file.
    Stdout {
        /// `--meta FILE`.
        meta: Option<PathBuf>,
    },
    /// A file, with sidecars next to it.
    File(PathBuf),
    /// One or more stores: each gets the artifact under the same name, with
    /// its sidecars and `_latest` pointer, under its own series lock. The
    /// dump is read once and streamed to all of them; a store that fails is
    /// reported in [`SnapshotReport::failed`] while the others complete.
    Store {
        /// The stores.
        stores: Vec<&'a dyn Store>,
        /// Whether to point the series' `_latest` at it.
        update_latest: bool,
        /// Refuse to start with less free space than this.
        min_free: Option<u64>,
        /// How long to wait for the series lock.
        lock_timeout: Duration,
    },
}

/// How to take a snapshot.
pub struct SnapshotRequest {
    /// Environment name.
    pub env: String,
    /// Compression, level and threads.
    pub compression: Compression,
    /// Compression level.
    pub level: Option<i32>,
    /// zstd worker threads.
    pub threads: u32,
    /// Encryption.
    pub encryption: Encryption,
    /// Abort past this artifact size.
    pub max_size: Option<u64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Engine options.
    pub engine: SnapshotOptions,
    /// The tool taking it.
    pub tool: &'static str,
    /// Progress display.
    pub progress: Progress,
}

/// What a finished snapshot produced.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// The metadata written.
    pub meta: Metadata,
    /// Where it went (file path or store key), empty for stdout.
    pub location: String,
    /// Wall time.
    pub elapsed: Duration,
    /// The stores that have it (store destinations).
    pub stores: Vec<String>,
    /// The stores that do not, and why (when others have it).
    pub failed: Vec<(String, String)>,
}

impl SnapshotReport {
    /// The one-line summary for stderr.
    pub fn summary_line(&self) -> String {
        let m = &self.meta;
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let ratio = if m.size_bytes > 0 {
            m.raw_size_bytes as f64 / m.size_bytes as f64
        } else {
            0.0
        };
        format!(
            "{} {} (raw {}, ratio {:.2}x) in {}, {}/s",
            if self.location.is_empty() {
                &m.file
            } else {
                &self.location
            },
            crate::units::human_bytes(m.size_bytes),
            crate::units::human_bytes(m.raw_size_bytes),
            ratio,
            crate::units::human_duration(self.elapsed),
            crate::units::human_bytes((m.raw_size_bytes as f64 / secs) as u64),
        )
    }
}

/// Takes a snapshot of `engine` into `dest`.
pub fn take(
    engine: &dyn Engine,
    req: SnapshotRequest,
    dest: Destination<'_>,
) -> Result<SnapshotReport> {
    crate::name::validate_env(&req.env)?;
    crate::pipeline::check_level(req.compression, req.level)?;
    let mut started = Utc::now();
    let clock = Instant::now();
    let mut name = ArtifactName {
        env: req.env.clone(),
        database: engine.database(),
        kind: if req.engine.base {
            Kind::Base
        } else {
            Kind::Full
        },
        timestamp: started.with_nanosecond_zero(),
        payload: engine.payload(req.engine.base),
        compression: req.compression,
        encrypted: req.encryption.is_encrypted(),
    };
    // Writers of a series queue on its lock (in one order across stores, so
    // two runs never hold one each); one that finds its name taken (two
    // snapshots in one second) waits for the next second, never overwrites.
    let _locks = match &dest {
        Destination::Store {
            stores,
            lock_timeout,
            ..
        } => {
            let mut order = stores.clone();
            order.sort_by_key(|s| s.describe());
            let locks = order
                .iter()
                .map(|s| crate::lock::Lock::on_store(*s, &name.series(), *lock_timeout))
                .collect::<Result<Vec<_>>>()?;
            let taken = |n: &ArtifactName| -> Result<bool> {
                let key = store::key(store::BACKUPS, &n.to_string());
                for store in stores {
                    if store.exists(&key)? || store.exists(&Sidecar::Sha256.of(&key))? {
                        return Ok(true);
                    }
                }
                Ok(false)
            };
            while taken(&name)? {
                std::thread::sleep(Duration::from_millis(100));
                started = Utc::now();
                name.timestamp = started.with_nanosecond_zero();
            }
            locks
        }
        _ => Vec::new(),
    };
    let name = name;
    let recipients = req.encryption.public_keys();
    let opts = EncodeOptions {
        compression: req.compression,
        level: req.level,
        threads: req.threads,
        encryption: req.encryption,
        max_size: req.max_size,
    };

    let meta_for = |summary: &EncodeSummary, info: crate::engine::SnapshotInfo, file: String| {
        let finished = Utc::now();
        Metadata {
            format: crate::meta::FORMAT.into(),
            backup_name: name.backup_name(),
            file,
            backup_type: name.kind.as_str().into(),
            engine: engine.engine().into(),
            engine_version: info.engine_version,
            payload: name.payload.ext().into(),
            environment: name.env.clone(),
            database: name.database.clone(),
            host: engine.host(),
            source: engine.url(),
            timestamp: name.stamp(),
            started_at: started.to_rfc3339(),
            finished_at: finished.to_rfc3339(),
            duration_seconds: clock.elapsed().as_secs_f64(),
            size_bytes: summary.artifact_bytes,
            raw_size_bytes: summary.raw_bytes,
            checksum: summary.sha256.clone(),
            checksum_algorithm: "sha256".into(),
            compression: name.compression.as_str().into(),
            compression_level: match name.compression {
                Compression::None => None,
                Compression::Zstd => req.level.or_else(|| {
                    summary
                        .levels
                        .iter()
                        .max_by_key(|(_, bytes)| **bytes)
                        .map(|(level, _)| *level)
                }),
                Compression::Gzip => Some(opts_level(req.level, 6)),
            },
            compression_levels: summary
                .levels
                .iter()
                .map(|(level, bytes)| (level.to_string(), *bytes))
                .collect(),
            encryption: if name.encrypted { "age" } else { "none" }.into(),
            recipients: recipients.clone(),
            tables: info.tables,
            tool: ToolInfo::this(req.tool),
            labels: req.labels.clone(),
            wal: info.wal.clone(),
            extra: info.extra,
        }
    };

    match dest {
        Destination::Stdout { meta } => {
            crate::term::refuse_binary_to_terminal("a backup artifact")?;
            let out = std::io::BufWriter::with_capacity(1 << 20, crate::output::stdout());
            let (info, summary, _) = run(engine, &req.engine, out, opts, &req.progress)?;
            let m = meta_for(&summary, info, name.to_string());
            if let Some(path) = meta {
                crate::fsutil::write_private(&path, &to_json(&m))?;
            }
            Ok(SnapshotReport {
                meta: m,
                location: String::new(),
                elapsed: clock.elapsed(),
                stores: Vec::new(),
                failed: Vec::new(),
            })
        }
        Destination::File(path) => {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .ok_or_else(|| Error::usage(format!("-o {}: not a file name", path.display())))?;
            let writer = store::LocalStore::atomic_file(&path)?;
            let (info, summary, mut writer) =
                run(engine, &req.engine, writer, opts, &req.progress)?;
            let m = meta_for(&summary, info, file.clone());
            // The artifact is durable before its sidecars replace those of
            // an earlier artifact at the path: a crash while a large file
            // syncs leaves the earlier one with its own sidecars.
            writer.sync()?;
            // Sidecars first, the artifact last: running out of space or
            // inodes on the way leaves no artifact under its final name,
            // only sidecars that readers ignore and dbprune removes.
            let (sha, meta) = (Sidecar::Sha256.next_to(&path), Sidecar::Meta.next_to(&path));
            let committed = (|| {
                crate::fsutil::write_private(&sha, sha256_line(&m.checksum, &file).as_bytes())?;
                crate::fsutil::write_private(&meta, &to_json(&m))?;
                writer.commit()
            })();
            if let Err(e) = committed {
                // No artifact: its sidecars go too.
                let _ = std::fs::remove_file(&sha);
                let _ = std::fs::remove_file(&meta);
                return Err(e);
            }
            Ok(SnapshotReport {
                meta: m,
                location: path.display().to_string(),
                elapsed: clock.elapsed(),
                stores: Vec::new(),
                failed: Vec::new(),
            })
        }
        Destination::Store {
            stores,
            update_latest,
            min_free,
            lock_timeout: _,
        } => {
            let file = name.to_string();
            let key = store::key(store::BACKUPS, &file);
            let mut copies = Copies::new(&stores);
            for (i, store) in stores.iter().enumerate() {
                if let (Some(min), Some(free)) = (min_free, store.free_space()) {
                    if free < min {
                        copies.fail(
                            i,
                            Error::refused(format!(
                                "store {} has {} free, less than --min-free {}",
                                store.describe(),
                                crate::units::human_bytes(free),
                                crate::units::human_bytes(min)
                            ))
                            .hint("free space (dbprune) or lower --min-free"),
                        )?;
                        continue;
                    }
                }
                // New names only: another host writing the same name into a
                // shared store is refused, never overwritten (its locks are not ours).
                match store.create_new(&key) {
                    Ok(w) => copies.sink.sinks[i] = Some(w),
                    Err(e) => copies.fail(i, e)?,
                }
            }
            let sink = std::mem::take(&mut copies.sink);
            let (info, summary, mut sink) = run(engine, &req.engine, sink, opts, &req.progress)
                .map_err(|e| match stores.len() {
                    1 => e,
                    _ => e.context("no store has the backup"),
                })?;
            copies.absorb(&mut sink)?;
            let wal = info.wal.clone();
            let m = meta_for(&summary, info, file.clone());
            for (i, store) in stores.iter().enumerate() {
                let Some(writer) = sink.sinks[i].take() else {
                    continue;
                };
                let done =
                    commit_to_store(*store, &key, &file, &m, wal.as_ref(), writer).and_then(|()| {
                        match update_latest {
                            true => store.set_pointer(
                                &store::key(store::BACKUPS, &name.latest_name()),
                                &key,
                            ),
                            false => Ok(()),
                        }
                    });
                match done {
                    Ok(()) => copies.written.push(store.describe()),
                    Err(e) => copies.fail(i, e)?,
                }
            }
            Ok(SnapshotReport {
                meta: m,
                location: key,
                elapsed: clock.elapsed(),
                stores: copies.written,
                failed: copies.failed,
            })
        }
    }
}

/// Sidecars first, the artifact last: running out of space or inodes on
/// the way leaves no artifact under its final name, only sidecars that
/// readers ignore and dbprune removes. Each is a new object, so a writer
/// that lost the name changes nothing.
fn commit_to_store(
    store: &dyn Store,
    key: &str,
    file: &str,
    m: &Metadata,
    wal: Option<&crate::meta::WalInfo>,
    writer: Box<dyn store::ObjectWriter>,
) -> Result<()> {
    if let Some(w) = wal {
        // A base backup is only worth keeping with the WAL that makes it consistent.
        wait_for_wal(store, &w.stop_wal, Duration::from_secs(120))?;
    }
    let (sha, meta) = (Sidecar::Sha256.of(key), Sidecar::Meta.of(key));
    let mut written: Vec<&str> = Vec::new();
    let committed = (|| {
        store.write_new(&sha, sha256_line(&m.checksum, file).as_bytes())?;
        written.push(&sha);
        store.write_new(&meta, &to_json(m))?;
        written.push(&meta);
        writer.commit()
    })();
    if committed.is_err() {
        // No artifact: the sidecars this run wrote go too (never another's).
        for k in written {
            let _ = store.delete(k);
        }
    }
    committed
}

/// The stores of one snapshot: which have failed, which have it.
struct Copies {
    names: Vec<String>,
    sink: FanOut,
    failed: Vec<(String, String)>,
    written: Vec<String>,
}

impl Copies {
    fn new(stores: &[&dyn Store]) -> Copies {
        Copies {
            names: stores.iter().map(|s| s.describe()).collect(),
            sink: FanOut {
                sinks: stores.iter().map(|_| None).collect(),
                errors: stores.iter().map(|_| None).collect(),
            },
            failed: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Store `i` failed with `e`: noted while another store may still get
    /// the backup; the error itself when none can (with one store, exactly
    /// its error).
    fn fail(&mut self, i: usize, e: Error) -> Result<()> {
        if self.names.len() == 1 {
            return Err(e);
        }
        self.failed.push((self.names[i].clone(), e.to_string()));
        // Each store fails at most once: when all have, none has the backup.
        if self.failed.len() == self.names.len() {
            return Err(Error::failed(format!(
                "no store has the backup: {}",
                self.failed
                    .iter()
                    .map(|(n, e)| format!("{n}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(())
    }

    /// Takes in the write errors the stream met.
    fn absorb(&mut self, sink: &mut FanOut) -> Result<()> {
        for i in 0..self.names.len() {
            if let Some(e) = sink.errors[i].take() {
                self.fail(
                    i,
                    Error::from(e).context(format!("writing to {}", self.names[i])),
                )?;
            }
        }
        Ok(())
    }
}

/// The artifact's bytes, written to every store still taking them. A store
/// whose write fails is dropped and its error kept; the stream fails with
/// the last store's own error when none is left.
#[derive(Default)]
struct FanOut {
    sinks: Vec<Option<Box<dyn store::ObjectWriter>>>,
    errors: Vec<Option<std::io::Error>>,
}

impl FanOut {
    fn each(
        &mut self,
        f: &mut dyn FnMut(&mut dyn store::ObjectWriter) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut left = self.sinks.iter().flatten().count();
        for (sink, err) in self.sinks.iter_mut().zip(self.errors.iter_mut()) {
            let Some(w) = sink else { continue };
            if let Err(e) = f(w.as_mut()) {
                *sink = None;
                left -= 1;
                if left == 0 {
                    return Err(e);
                }
                *err = Some(e);
            }
        }
        Ok(())
    }
}

impl Write for FanOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.each(&mut |w| w.write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.each(&mut |w| w.flush())
    }
}

fn wait_for_wal(store: &dyn Store, segment: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if crate::walarchive::find(store, segment)?.is_some() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::failed(format!(
                "the base backup needs WAL segment {segment}, which did not reach store {} within {}s; the backup was discarded",
                store.describe(),
                timeout.as_secs()
            ))
            .hint("check that archive_command = 'walship push %p %f' archives into this store"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn opts_level(level: Option<i32>, default: i32) -> i32 {
    level.unwrap_or(default)
}

trait ZeroNanos {
    fn with_nanosecond_zero(self) -> Self;
}

impl ZeroNanos for chrono::DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("metadata serializes");
    s.push(b'\n');
    s
}

fn run<W: Write + Send + 'static>(
    engine: &dyn Engine,
    opts: &SnapshotOptions,
    sink: W,
    encode: EncodeOptions,
    progress: &Progress,
) -> Result<(crate::engine::SnapshotInfo, EncodeSummary, W)> {
    let mut enc = StreamEncoder::new(sink, encode)?.with_progress(progress.clone());
    let info = engine.snapshot(opts, &mut enc)?;
    let (sink, summary) = enc.finish()?;
    Ok((info, summary, sink))
}
