//! Restoring an artifact and proving it: the one path every tool takes.
//!
//! `dbrestore`, `dbverify --level restore` and `--level full`, dbpromote's
//! rehearsals in side databases and point-in-time restores all read an
//! artifact the same way: its raw bytes pass a running sha256, the layers
//! are sniffed and peeled (the metadata's payload when sniffing cannot
//! tell), the payload goes to one step (a restore into an [`Engine`], a
//! structural check), the rest is drained so every layer's trailer is
//! checked, the checksum is compared with the expected one, and the tables
//! found are compared with the metadata's. What is wrong with the artifact
//! is a finding in the [`Report`]; only what stops the proof itself (a
//! missing key, an interruption, an artifact that cannot be opened) is an
//! error.

use crate::artifact::Artifact;
use crate::cleanup::TempGuard;
use crate::engine::{self, Engine, Origin, RestoreOptions};
use crate::error::{Error, Result};
use crate::keys::Keyring;
use crate::meta::{compare_tables, Metadata, TableCount};
use crate::name::Payload;
use crate::pipeline::{self, Layers};
use crate::progress::{Progress, ProgressReader};
use crate::ExitCode;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What reading, restoring and comparing an artifact found.
#[derive(Debug, Default)]
pub struct Report {
    /// The layers found, once the artifact could be decoded.
    pub layers: Option<Layers>,
    /// The checks that ran, in order.
    pub checks: Vec<String>,
    /// What is wrong with the artifact or the restored copy.
    pub problems: Vec<String>,
    /// Tables and row counts found after the restore (or by the check).
    pub tables: Option<Vec<TableCount>>,
    /// How many of the metadata's tables were compared, when there was metadata to compare with.
    pub compared: Option<usize>,
    /// Matching tables over compared tables (1.0 when none were compared).
    pub score: f64,
    /// The sha256 of the artifact's bytes, when they were read to the end.
    pub sha256: Option<String>,
    /// What stopped the restore or check before it was done (a corrupt
    /// layer, a failed restore); the checksum was still computed.
    pub stopped: Option<Error>,
    /// The artifact's bytes are not the ones recorded (checksum mismatch).
    pub damaged: bool,
}

impl Report {
    /// Whether nothing was found wrong and nothing stopped the work.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.stopped.is_none()
    }

    /// The error that stopped the work, if any, as the caller's error.
    pub fn finished(mut self) -> Result<Report> {
        match self.stopped.take() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// Every problem, the one that stopped the work first.
    pub fn all_problems(&self) -> Vec<String> {
        self.stopped
            .iter()
            .map(|e| e.to_string())
            .chain(self.problems.iter().cloned())
            .collect()
    }
}

/// Where a restore goes.
#[derive(Clone, Copy)]
pub enum Target<'t> {
    /// A database the caller opened.
    Engine(&'t dyn Engine),
    /// A throwaway target that fits the payload, removed once counted
    /// (`url` names a server for server engines).
    Scratch {
        /// The server to create the scratch database on.
        url: Option<&'t str>,
        /// Where file-backed scratch targets go.
        tmpdir: &'t std::path::Path,
    },
}

/// What one step does with the payload stream: restore it somewhere or
/// check it; returns the tables it found, to compare with the metadata.
pub type Step<'s> =
    dyn FnMut(Payload, &Origin, &mut dyn Read, &mut Report) -> Result<Option<Vec<TableCount>>> + 's;

/// How one run reads artifacts.
pub struct Flow<'a> {
    /// Keys to decrypt with.
    pub keys: &'a Keyring,
    /// Compare only the tables these names select (empty: all).
    pub tables: Vec<String>,
}

impl<'a> Flow<'a> {
    /// A flow that compares every table.
    pub fn new(keys: &'a Keyring) -> Flow<'a> {
        Flow {
            keys,
            tables: Vec::new(),
        }
    }

    /// Restores `artifact` into `target` and proves it: checksum, trailers,
    /// tables and row counts.
    pub fn restore(
        &self,
        artifact: &Artifact<'_>,
        target: Target<'_>,
        opts: &RestoreOptions,
        progress: Progress,
    ) -> Result<Report> {
        let opts = &with_recorded(artifact, opts)?;
        self.run(
            artifact,
            progress,
            &mut |payload, origin, input, report| match target {
                Target::Engine(engine) => {
                    engine.restore(payload, input, opts)?;
                    engine.tables().map(Some)
                }
                Target::Scratch { url, tmpdir } => {
                    let engine = engine::scratch(payload, origin, url, tmpdir)
                        .map_err(scratch_unavailable)?;
                    let found = engine
                        .restore(payload, input, opts)
                        .and_then(|()| engine.tables());
                    let _ = engine.drop_target();
                    let found = found?;
                    report
                        .checks
                        .push(format!("restored into a scratch {}", engine.engine()));
                    Ok(Some(found))
                }
            },
        )
    }

    /// Reads `artifact` to the end like `dbverify --level full` (checksum,
    /// every layer's trailer, the payload's structural check) and keeps a
    /// decoded copy of its payload in a [`Spool`] under `tmpdir`, so an
    /// engine that restores in parallel can seek in it. The artifact is
    /// decoded once: the restore reads the spool. The spool is missing (with
    /// the reason) when `tmpdir` lacks the space the metadata says the
    /// payload needs, or fills up on the way.
    pub fn spool(
        &self,
        artifact: &Artifact<'_>,
        tmpdir: &Path,
        progress: Progress,
    ) -> Result<(Report, std::result::Result<Spool, String>)> {
        let dir = crate::fsutil::private_tempdir("dbsafe-spool-", tmpdir)?;
        let guard = TempGuard::new(dir.path());
        let path = dir.path().join("payload");
        let needed = artifact.meta()?.map(|m| m.raw_size_bytes).unwrap_or(0);
        let mut writer = match crate::fsutil::free_space(tmpdir) {
            Some(free) if free < needed.saturating_add(needed >> SPOOL_MARGIN_SHIFT) => {
                SpoolWriter::Failed(format!(
                    "{} has {} free, the payload needs {}",
                    tmpdir.display(),
                    crate::units::human_bytes(free),
                    crate::units::human_bytes(needed)
                ))
            }
            _ => SpoolWriter::open(&path),
        };
        let mut kind = None;
        let report = self.run(artifact, progress, &mut |payload, origin, input, report| {
            kind = Some(payload);
            let mut tee = Tee {
                input,
                copy: &mut writer,
            };
            let found = structural_check(payload, origin, &mut tee, dir.path(), report)?;
            pipeline::copy(&mut tee, &mut std::io::sink())?;
            Ok(found)
        })?;
        let spool = match (writer.finish(), kind) {
            (Ok(()), Some(payload)) if report.stopped.is_none() => Ok(Spool {
                path,
                payload,
                _guard: guard,
                _dir: dir,
            }),
            (Ok(()), _) => Err("the payload could not be read whole".to_string()),
            (Err(why), _) => Err(why),
        };
        Ok((report, spool))
    }

    /// Restores a [`Spool`] into `target` with `opts.jobs` workers where the
    /// engine can, then compares the tables with the artifact's metadata.
    pub fn restore_spooled(
        &self,
        artifact: &Artifact<'_>,
        spool: &Spool,
        target: &dyn Engine,
        opts: &RestoreOptions,
    ) -> Result<Report> {
        let opts = with_recorded(artifact, opts)?;
        target.restore_file(spool.payload, &spool.path, &opts)?;
        let found = target.tables()?;
        let mut report = Report {
            score: 1.0,
            checks: vec![format!(
                "restored from the verified, decoded payload with {} worker(s)",
                opts.jobs.max(1)
            )],
            ..Default::default()
        };
        self.compare(artifact.meta()?.as_ref(), &found, &mut report);
        report.tables = Some(found);
        Ok(report)
    }

    /// Reads `artifact` through its layers into `step`, then drains it,
    /// checks its checksum and compares the tables the step found.
    pub fn run(
        &self,
        artifact: &Artifact<'_>,
        progress: Progress,
        step: &mut Step<'_>,
    ) -> Result<Report> {
        let input = artifact.open()?;
        let meta = artifact.meta()?;
        let expected = artifact.expected_sha256()?;
        let mut report = Report {
            score: 1.0,
            ..Default::default()
        };
        let (tapped, tap) = pipeline::tap(ProgressReader::new(input, progress));
        let shared = Shared(Arc::new(Mutex::new(Box::new(tapped))));
        let found = self.through_layers(Box::new(shared.clone()), meta.as_ref(), &mut report, step);
        let found = match found {
            Ok(found) => found,
            Err(e) if e.kind == crate::error::Kind::Unavailable => {
                // A key that does not open the artifact, or a damaged
                // artifact whose header no key opens: the checksum tells.
                let drained = pipeline::copy(&mut shared.clone(), &mut std::io::sink());
                let sha = tap.result().0;
                match expected.as_deref() {
                    Some(x) if drained.is_ok() && !x.eq_ignore_ascii_case(&sha) => {
                        check_sum(Some(x), &sha, &mut report);
                        report.sha256 = Some(sha);
                        report.stopped = Some(Error::failed(e.message.clone()));
                        return Ok(report);
                    }
                    _ => return Err(e),
                }
            }
            Err(e) if is_not_a_finding(&e) => return Err(e),
            Err(e) => {
                report.stopped = Some(e);
                None
            }
        };
        // Whatever the layers said, the checksum of the whole artifact is worth knowing.
        match pipeline::copy(&mut shared.clone(), &mut std::io::sink()) {
            Ok(_) => {
                let sha = tap.result().0;
                check_sum(expected.as_deref(), &sha, &mut report);
                report.sha256 = Some(sha);
            }
            Err(e) => {
                let e = Error::from(e);
                if is_not_a_finding(&e) {
                    return Err(e);
                }
                report
                    .stopped
                    .get_or_insert(e.context(format!("reading {}", artifact.describe())));
            }
        }
        if let Some(found) = found {
            self.compare(meta.as_ref(), &found, &mut report);
            report.tables = Some(found);
        }
        Ok(report)
    }

    fn through_layers(
        &self,
        input: Box<dyn Read + Send>,
        meta: Option<&Metadata>,
        report: &mut Report,
        step: &mut Step<'_>,
    ) -> Result<Option<Vec<TableCount>>> {
        let mut decoded = pipeline::decode(input, self.keys)?;
        let layers = decoded.layers;
        report.layers = Some(layers);
        report.checks.push(format!(
            "layers: {}{}",
            if layers.encrypted { "age, " } else { "" },
            layers.compression.as_str()
        ));
        let payload = layers
            .payload
            .or_else(|| meta.and_then(|m| Payload::from_ext(&m.payload)))
            .ok_or_else(|| {
                Error::failed("unrecognised payload: not a dump, database file or tar")
            })?;
        let found = step(payload, &Origin::of(meta), &mut decoded.reader, report)?;
        // Read what the step left, so every layer's trailer is checked too.
        pipeline::copy(&mut decoded.reader, &mut std::io::sink())?;
        report
            .checks
            .push("decrypted and decompressed to the end".into());
        Ok(found)
    }

    fn compare(&self, meta: Option<&Metadata>, found: &[TableCount], report: &mut Report) {
        let Some(m) = meta else {
            report
                .checks
                .push("no metadata: row counts not compared".into());
            return;
        };
        let expected: Vec<TableCount> = m
            .tables
            .iter()
            .filter(|t| engine::table_selected(&t.name, &self.tables, &[]))
            .cloned()
            .collect();
        let (problems, score) = compare_tables(&expected, found);
        report.checks.push(format!(
            "{} of {} tables match the metadata's row counts",
            expected.len() - problems.len(),
            expected.len()
        ));
        report.problems.extend(problems);
        report.compared = Some(expected.len());
        report.score = score;
    }
}

/// The share of a payload's size a spool leaves free on its file system
/// beyond the payload itself (1/8).
const SPOOL_MARGIN_SHIFT: u32 = 3;

/// `opts` with what the engine recorded at snapshot time (roles, database
/// properties, file settings), taken from the artifact's metadata unless
/// the caller gave it.
fn with_recorded(artifact: &Artifact<'_>, opts: &RestoreOptions) -> Result<RestoreOptions> {
    let mut opts = opts.clone();
    if opts.recorded.is_empty() {
        opts.recorded = artifact.meta()?.map(|m| m.extra).unwrap_or_default();
    }
    Ok(opts)
}

/// The structural check of a payload (`dbverify --level full`): its
/// findings go into `report`, the tables it counted are returned.
pub(crate) fn structural_check(
    payload: Payload,
    origin: &Origin,
    input: &mut dyn Read,
    tmpdir: &Path,
    report: &mut Report,
) -> Result<Option<Vec<TableCount>>> {
    let check = engine::check_payload(payload, origin, input, tmpdir)?;
    report.checks.extend(check.checks);
    report.problems.extend(check.problems);
    Ok(check.tables)
}

/// A decoded payload on local disk, for a restore that seeks. It is
/// plaintext, so it lives in a private (0700) temporary directory and is
/// removed when dropped and when the process is interrupted.
pub struct Spool {
    path: PathBuf,
    payload: Payload,
    _guard: TempGuard,
    _dir: tempfile::TempDir,
}

impl Spool {
    /// The payload's kind.
    pub fn payload(&self) -> Payload {
        self.payload
    }
}

/// Where the spool's bytes go; a write that fails (a full disk) ends the
/// spool but not the verification reading through it.
enum SpoolWriter {
    Open(std::io::BufWriter<std::fs::File>),
    Failed(String),
}

impl SpoolWriter {
    fn open(path: &Path) -> SpoolWriter {
        match crate::fsutil::create_private_file(path) {
            Ok(f) => SpoolWriter::Open(std::io::BufWriter::with_capacity(1 << 20, f)),
            Err(e) => SpoolWriter::Failed(e.to_string()),
        }
    }

    fn write(&mut self, buf: &[u8]) {
        if let SpoolWriter::Open(w) = self {
            if let Err(e) = w.write_all(buf) {
                *self = SpoolWriter::Failed(format!("writing the decoded payload: {e}"));
            }
        }
    }

    fn finish(self) -> std::result::Result<(), String> {
        match self {
            SpoolWriter::Open(mut w) => w
                .flush()
                .map_err(|e| format!("writing the decoded payload: {e}")),
            SpoolWriter::Failed(why) => Err(why),
        }
    }
}

/// A reader that copies what passes through it into the spool.
struct Tee<'t> {
    input: &'t mut dyn Read,
    copy: &'t mut SpoolWriter,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copy.write(&buf[..n]);
        Ok(n)
    }
}

/// A missing key or an interruption says nothing about the artifact.
fn is_not_a_finding(e: &Error) -> bool {
    matches!(e.code(), ExitCode::Usage | ExitCode::Interrupted)
}

/// A scratch target that cannot be had (the server does not answer) says
/// nothing about the artifact.
fn scratch_unavailable(e: Error) -> Error {
    if is_not_a_finding(&e) {
        return e;
    }
    Error::unavailable(format!("no scratch target to restore into: {}", e.message)).with_source(e)
}

fn check_sum(expected: Option<&str>, actual: &str, report: &mut Report) {
    match expected {
        Some(e) if e.eq_ignore_ascii_case(actual) => report.checks.push("sha256 matches".into()),
        Some(e) => {
            report.damaged = true;
            report
                .problems
                .push(format!("sha256 mismatch: expected {e}, got {actual}"))
        }
        None => report
            .checks
            .push(format!("sha256 {actual} (no recorded checksum to compare)")),
    }
}

/// A reader two owners take turns on: the decoder, then (after the decoder
/// stopped, for whatever reason) the flow, which reads the rest to finish
/// the checksum.
#[derive(Clone)]
struct Shared(Arc<Mutex<Box<dyn Read + Send>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().expect("reader lock").read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SnapshotOptions;
    use crate::keys::Encryption;
    use crate::snapshot::{self, Destination, SnapshotRequest};
    use std::path::Path;

    /// A SQLite database with two tables, snapshotted into `dir` with sidecars.
    fn artifact(dir: &Path) -> std::path::PathBuf {
        let db = dir.join("app.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE a(x); INSERT INTO a VALUES (1),(2),(3);
             CREATE TABLE b(y); INSERT INTO b VALUES (1);",
        )
        .unwrap();
        drop(c);
        let engine = engine::open(&format!("sqlite:{}", db.display())).unwrap();
        let out = dir.join("app.sqlite.zst");
        snapshot::take(
            engine.as_ref(),
            SnapshotRequest {
                env: "test".into(),
                compression: crate::Compression::Zstd,
                level: None,
                threads: 0,
                encryption: Encryption::None,
                max_size: None,
                labels: Default::default(),
                engine: SnapshotOptions {
                    tmpdir: dir.to_path_buf(),
                    ..Default::default()
                },
                tool: "test",
                progress: Progress::hidden(),
            },
            Destination::File(out.clone()),
        )
        .unwrap();
        out
    }

    fn restore_into(dir: &Path, a: &Artifact<'_>, tables: &[&str]) -> Result<Report> {
        let keys = Keyring::default();
        let target = engine::open(&format!("sqlite:{}", dir.join("restored.sqlite").display()))?;
        let _ = target.drop_target();
        let flow = Flow {
            keys: &keys,
            tables: tables.iter().map(|t| t.to_string()).collect(),
        };
        let opts = RestoreOptions {
            create: true,
            tmpdir: dir.to_path_buf(),
            ..Default::default()
        };
        flow.restore(
            a,
            Target::Engine(target.as_ref()),
            &opts,
            Progress::hidden(),
        )
    }

    #[test]
    fn a_good_artifact_restores_with_matching_checksum_and_tables() {
        let dir = tempfile::tempdir().unwrap();
        let art = artifact(dir.path());
        let r = restore_into(dir.path(), &Artifact::file(&art), &[]).unwrap();
        assert!(r.passed(), "{:?}", r.all_problems());
        assert!(
            r.checks.contains(&"sha256 matches".to_string()),
            "{:?}",
            r.checks
        );
        assert_eq!(r.compared, Some(2));
        assert_eq!(r.score, 1.0);
        assert_eq!(r.tables.unwrap().len(), 2);
    }

    #[test]
    fn a_checksum_mismatch_is_reported_after_a_complete_restore() {
        let dir = tempfile::tempdir().unwrap();
        let art = artifact(dir.path());
        let a = Artifact::file(&art).with_sha256(&"0".repeat(64));
        let r = restore_into(dir.path(), &a, &[]).unwrap();
        assert!(r.stopped.is_none());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].starts_with("sha256 mismatch"),
            "{:?}",
            r.problems
        );
        assert_eq!(r.score, 1.0, "the tables still match");
    }

    #[test]
    fn row_counts_are_compared_with_the_metadata_through_the_table_filter() {
        let dir = tempfile::tempdir().unwrap();
        let art = artifact(dir.path());
        let mut meta = Artifact::file(&art).meta().unwrap().unwrap();
        for t in &mut meta.tables {
            t.rows += 10;
        }
        let r = restore_into(
            dir.path(),
            &Artifact::file(&art).with_meta(meta.clone()),
            &[],
        )
        .unwrap();
        assert_eq!(r.compared, Some(2));
        assert_eq!(r.score, 0.0);
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("table a: 3 rows, expected 13")),
            "{:?}",
            r.problems
        );
        let r = restore_into(dir.path(), &Artifact::file(&art).with_meta(meta), &["b"]).unwrap();
        assert_eq!(r.compared, Some(1), "only the selected table is compared");
        assert_eq!(r.problems, vec!["table b: 1 rows, expected 11"]);
    }

    #[test]
    fn a_truncated_artifact_stops_the_restore_and_still_reports_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let art = artifact(dir.path());
        let bytes = std::fs::read(&art).unwrap();
        std::fs::write(&art, &bytes[..bytes.len() - 8]).unwrap();
        let r = restore_into(dir.path(), &Artifact::file(&art), &[]).unwrap();
        assert!(r.stopped.is_some());
        assert!(
            r.problems.iter().any(|p| p.starts_with("sha256 mismatch")),
            "{:?}",
            r.problems
        );
        assert!(r.tables.is_none());
        assert!(r.finished().is_err());
    }

    #[test]
    fn a_missing_key_is_an_error_not_a_finding() {
        let (dir, art) = crate::testing::temp_path("x.age");
        let mut enc = pipeline::StreamEncoder::new(
            std::fs::File::create(&art).unwrap(),
            pipeline::EncodeOptions {
                compression: crate::Compression::None,
                level: None,
                threads: 0,
                encryption: Encryption::Passphrase("secret".to_string().into()),
                max_size: None,
            },
        )
        .unwrap();
        std::io::Write::write_all(&mut enc, b"SQLite format 3\0").unwrap();
        enc.finish().unwrap();
        let e = restore_into(dir.path(), &Artifact::file(&art), &[]).unwrap_err();
        assert_eq!(e.code(), ExitCode::Usage, "{e}");
    }
}
