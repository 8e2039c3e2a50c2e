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
    /// A store: named, sidecars, `_latest` pointer.
    Store {
        /// The store.
        store: &'a dyn Store,
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
    // Writers of a series queue on its lock; one that finds its name taken
    // (two snapshots in one second) waits for the next second, never overwrites.
    let _lock = match &dest {
        Destination::Store {
            store,
            lock_timeout,
            ..
        } => {
            let lock = crate::lock::Lock::on_store(*store, &name.series(), *lock_timeout)?;
            let taken = |n: &ArtifactName| -> Result<bool> {
                let key = store::key(store::BACKUPS, &n.to_string());
                Ok(store.exists(&key)? || store.exists(&Sidecar::Sha256.of(&key))?)
            };
            while taken(&name)? {
                std::thread::sleep(Duration::from_millis(100));
                started = Utc::now();
                name.timestamp = started.with_nanosecond_zero();
            }
            Some(lock)
        }
        _ => None,
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
                Compression::Zstd => Some(opts_level(req.level, 3)),
                Compression::Gzip => Some(opts_level(req.level, 6)),
            },
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
            })
        }
        Destination::File(path) => {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .ok_or_else(|| Error::usage(format!("-o {}: not a file name", path.display())))?;
            let writer = store::LocalStore::atomic_file(&path)?;
            let (info, summary, writer) = run(engine, &req.engine, writer, opts, &req.progress)?;
            let m = meta_for(&summary, info, file.clone());
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
            })
        }
        Destination::Store {
            store,
            update_latest,
            min_free,
            lock_timeout: _,
        } => {
            if let (Some(min), Some(free)) = (min_free, store.free_space()) {
                if free < min {
                    return Err(Error::refused(format!(
                        "store {} has {} free, less than --min-free {}",
                        store.describe(),
                        crate::units::human_bytes(free),
                        crate::units::human_bytes(min)
                    ))
                    .hint("free space (dbprune) or lower --min-free"));
                }
            }
            let file = name.to_string();
            let key = store::key(store::BACKUPS, &file);
            // New names only: another host writing the same name into a
            // shared store is refused, never overwritten (its locks are not ours).
            let writer = store.create_new(&key)?;
            let (info, summary, writer) = run(engine, &req.engine, writer, opts, &req.progress)?;
            if let Some(w) = &info.wal {
                // A base backup is only worth keeping with the WAL that makes it consistent.
                wait_for_wal(store, &w.stop_wal, Duration::from_secs(120))?;
            }
            let m = meta_for(&summary, info, file.clone());
            // Sidecars first, the artifact last (see above); each a new
            // object, so a writer that lost the name changes nothing.
            let (sha, meta) = (Sidecar::Sha256.of(&key), Sidecar::Meta.of(&key));
            let mut written: Vec<&str> = Vec::new();
            let committed = (|| {
                store.write_new(&sha, sha256_line(&m.checksum, &file).as_bytes())?;
                written.push(&sha);
                store.write_new(&meta, &to_json(&m))?;
                written.push(&meta);
                writer.commit()
            })();
            if let Err(e) = committed {
                // No artifact: the sidecars this run wrote go too (never another's).
                for k in written {
                    let _ = store.delete(k);
                }
                return Err(e);
            }
            if update_latest {
                store.set_pointer(&store::key(store::BACKUPS, &name.latest_name()), &key)?;
            }
            Ok(SnapshotReport {
                meta: m,
                location: key,
                elapsed: clock.elapsed(),
            })
        }
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
