//! Verifying an artifact at one of three levels (SPEC §5, dbverify).
//!
//! One pass over the artifact does all a level asks: the sha256 is computed
//! on the raw bytes while the same bytes are decrypted, decompressed and
//! handed to the payload check or the scratch restore.

use crate::engine::{self, RestoreOptions};
use crate::error::{Error, Result};
use crate::keys::Keyring;
use crate::meta::{compare_tables, Metadata, ToolInfo, VerifyRecord};
use crate::pipeline;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

/// How deep to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// sha256 against the sidecar or --sha256.
    Quick,
    /// quick, plus decrypt and decompress to the end, plus a structural check of the payload.
    Full,
    /// full, plus a restore into a scratch target and a comparison of row counts.
    Restore,
}

impl Level {
    /// `quick`, `full` or `restore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Quick => "quick",
            Level::Full => "full",
            Level::Restore => "restore",
        }
    }
}

/// An artifact to verify and what is known about it.
pub struct Subject {
    /// The artifact bytes.
    pub reader: Box<dyn Read + Send>,
    /// Its file name, for the record.
    pub file: String,
    /// The checksum it must have, if known.
    pub expected_sha256: Option<String>,
    /// Its metadata, if known.
    pub meta: Option<Metadata>,
}

/// Settings shared by every verification of one run.
pub struct Settings<'a> {
    /// Level.
    pub level: Level,
    /// Keys to decrypt with.
    pub keys: &'a Keyring,
    /// Server URL for scratch databases.
    pub scratch: Option<String>,
    /// Where temporary files go.
    pub tmpdir: PathBuf,
    /// The tool verifying.
    pub tool: &'static str,
    /// The WAL archive, for restoring base backups.
    pub wal: Option<engine::WalSource>,
}

/// Verifies one artifact; problems are in the record, errors are for what stopped the check itself.
pub fn verify(subject: Subject, s: &Settings<'_>) -> Result<VerifyRecord> {
    let clock = Instant::now();
    let mut rec = VerifyRecord {
        file: subject.file.clone(),
        verified_at: chrono::Utc::now().to_rfc3339(),
        level: s.level.as_str().into(),
        result: "pass".into(),
        integrity_score: 1.0,
        problems: vec![],
        checks: vec![],
        tables: vec![],
        duration_seconds: 0.0,
        tool: ToolInfo::this(s.tool),
    };
    let outcome = match s.level {
        Level::Quick => quick(subject, &mut rec),
        _ => deep(subject, s, &mut rec),
    };
    if let Err(e) = outcome {
        // Usage errors (a missing key) are not findings about the artifact.
        if matches!(
            e.code(),
            crate::ExitCode::Usage | crate::ExitCode::Interrupted
        ) {
            return Err(e);
        }
        rec.problems.push(e.to_string());
    }
    if !rec.problems.is_empty() {
        rec.result = "fail".into();
        if s.level != Level::Restore || rec.tables.is_empty() {
            rec.integrity_score = 0.0;
        }
    }
    rec.duration_seconds = clock.elapsed().as_secs_f64();
    Ok(rec)
}

fn check_sum(expected: &Option<String>, actual: &str, rec: &mut VerifyRecord) {
    match expected {
        Some(e) if e.eq_ignore_ascii_case(actual) => rec.checks.push("sha256 matches".into()),
        Some(e) => rec
            .problems
            .push(format!("sha256 mismatch: expected {e}, got {actual}")),
        None => rec
            .checks
            .push(format!("sha256 {actual} (no recorded checksum to compare)")),
    }
}

fn quick(subject: Subject, rec: &mut VerifyRecord) -> Result<()> {
    let expected = subject.expected_sha256.clone().ok_or_else(|| {
        Error::usage(format!("{}: no checksum to compare against", subject.file))
            .hint("quick verification needs the .sha256 sidecar or --sha256 HEX")
    })?;
    let (mut tapped, tap) = pipeline::tap(subject.reader);
    pipeline::copy(&mut tapped, &mut std::io::sink())
        .map_err(|e| Error::failed(format!("reading {}: {e}", subject.file)))?;
    check_sum(&Some(expected), &tap.result().0, rec);
    Ok(())
}

/// A reader two owners can take turns on: the decoder, then (after a
/// decoding error) the verifier, which reads the rest to finish the checksum.
#[derive(Clone)]
struct Shared(std::sync::Arc<std::sync::Mutex<Box<dyn Read + Send>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().expect("reader lock").read(buf)
    }
}

fn deep(subject: Subject, s: &Settings<'_>, rec: &mut VerifyRecord) -> Result<()> {
    let (tapped, tap) = pipeline::tap(subject.reader);
    let shared = Shared(std::sync::Arc::new(std::sync::Mutex::new(Box::new(tapped))));
    let expected = subject.expected_sha256.clone();
    let result = deep_layers(
        Subject {
            reader: Box::new(shared.clone()),
            ..subject
        },
        s,
        rec,
    );
    // Whatever the layers said, the checksum of the whole artifact is worth knowing.
    let drained = pipeline::copy(&mut shared.clone(), &mut std::io::sink());
    if drained.is_ok() {
        check_sum(&expected, &tap.result().0, rec);
    }
    result
}

fn deep_layers(subject: Subject, s: &Settings<'_>, rec: &mut VerifyRecord) -> Result<()> {
    let origin = engine::Origin::of(subject.meta.as_ref());
    let mut decoded = pipeline::decode(subject.reader, s.keys)?;
    let layers = decoded.layers;
    rec.checks.push(format!(
        "layers: {}{}",
        if layers.encrypted { "age, " } else { "" },
        layers.compression.as_str()
    ));
    let payload = layers
        .payload
        .or_else(|| {
            subject
                .meta
                .as_ref()
                .and_then(|m| crate::Payload::from_ext(&m.payload))
        })
        .ok_or_else(|| Error::failed("unrecognised payload: not a dump, database file or tar"))?;
    let tmp = tempfile::Builder::new()
        .prefix("dbsafe-verify-")
        .tempdir_in(&s.tmpdir)
        .map_err(|e| {
            Error::failed(format!(
                "cannot create a temporary directory in {}: {e}",
                s.tmpdir.display()
            ))
        })?;
    let guard = crate::cleanup::TempGuard::new(tmp.path());
    let found_tables = if s.level == Level::Restore {
        let target = engine::scratch(payload, &origin, s.scratch.as_deref(), tmp.path())?;
        let result = target
            .restore(
                payload,
                &mut decoded.reader,
                &RestoreOptions {
                    create: true,
                    tmpdir: tmp.path().to_path_buf(),
                    wal: s.wal.clone(),
                    recorded: subject
                        .meta
                        .as_ref()
                        .map(|m| m.extra.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                },
            )
            .and_then(|_| target.tables());
        let _ = target.drop_target();
        let tables = result?;
        rec.checks
            .push(format!("restored into a scratch {}", target.engine()));
        Some(tables)
    } else {
        let check = engine::check_payload(payload, &origin, &mut decoded.reader, tmp.path())?;
        rec.checks.extend(check.checks);
        rec.problems.extend(check.problems);
        check.tables
    };
    // Read what the check left, so every layer's trailer is checked too.
    pipeline::copy(&mut decoded.reader, &mut std::io::sink())?;
    drop(guard);
    rec.checks
        .push("decrypted and decompressed to the end".into());
    if let Some(tables) = found_tables {
        match &subject.meta {
            Some(m) => {
                let (problems, score) = compare_tables(&m.tables, &tables);
                rec.checks.push(format!(
                    "{} of {} tables match the metadata's row counts",
                    (score * m.tables.len() as f64).round() as usize,
                    m.tables.len()
                ));
                rec.problems.extend(problems);
                if s.level == Level::Restore {
                    rec.integrity_score = score;
                }
            }
            None => rec
                .checks
                .push("no metadata: row counts not compared".into()),
        }
        rec.tables = tables;
    }
    Ok(())
}
