//! Verifying an artifact at one of three levels (SPEC §5, dbverify).
//!
//! One pass over the artifact does all a level asks: the sha256 is computed
//! on the raw bytes while the same bytes are decrypted, decompressed and
//! handed to the payload check or the scratch restore ([`crate::restore`]).

use crate::artifact::Artifact;
use crate::engine::{self, RestoreOptions};
use crate::error::{Error, Result};
use crate::keys::Keyring;
use crate::meta::VerifyRecord;
use crate::pipeline;
use crate::progress::{Progress, ProgressReader};
use crate::restore::{Flow, Target};
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
    /// Restore without creating the roles the backup recorded (PostgreSQL):
    /// proves the target server already has them.
    pub no_roles: bool,
}

/// Verifies one artifact; problems are in the record, errors are for what stopped the check itself.
pub fn verify(
    artifact: &Artifact<'_>,
    s: &Settings<'_>,
    progress: Progress,
) -> Result<VerifyRecord> {
    let clock = Instant::now();
    let mut rec = VerifyRecord::start(artifact.file_name(), s.level.as_str(), s.tool);
    sidecars(artifact, &mut rec)?;
    if rec.problems.is_empty() {
        match s.level {
            Level::Quick => quick(artifact, progress, &mut rec)?,
            _ => deep(artifact, s, progress, &mut rec)?,
        }
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

/// What the sidecars say of the artifact. One that is not what it should be
/// (not a sha256sum line, not metadata) is a finding about the backup, as
/// is a store's entry with no recorded checksum left (its `.sha256` and
/// metadata both gone): nothing then proves it is the artifact written.
fn sidecars(artifact: &Artifact<'_>, rec: &mut VerifyRecord) -> Result<()> {
    let found = |r: Result<()>, rec: &mut VerifyRecord| match r {
        Err(e) if e.kind == crate::error::Kind::Failed => {
            rec.problems.push(e.to_string());
            Ok(())
        }
        other => other,
    };
    found(artifact.meta().map(drop), rec)?;
    match artifact.expected_sha256() {
        Ok(None) if artifact.is_stored() => rec.problems.push(
            "no recorded checksum (the .sha256 sidecar and the metadata are missing): nothing proves this is the artifact written".into(),
        ),
        other => found(other.map(drop), rec)?,
    }
    Ok(())
}

fn quick(artifact: &Artifact<'_>, progress: Progress, rec: &mut VerifyRecord) -> Result<()> {
    let input = artifact.open()?;
    let expected = artifact.expected_sha256()?.ok_or_else(|| {
        Error::usage(format!("{}: no checksum to compare against", rec.file))
            .hint("quick verification needs the .sha256 sidecar or --sha256 HEX")
    })?;
    let (mut tapped, tap) = pipeline::tap(ProgressReader::new(input, progress));
    match pipeline::copy(&mut tapped, &mut std::io::sink()) {
        Ok(_) => {
            let actual = tap.result().0;
            if expected.eq_ignore_ascii_case(&actual) {
                rec.checks.push("sha256 matches".into());
            } else {
                rec.problems.push(format!(
                    "sha256 mismatch: expected {expected}, got {actual}"
                ));
            }
        }
        Err(e) => {
            let e = Error::from(e);
            if e.code() == crate::ExitCode::Interrupted {
                return Err(e);
            }
            rec.problems.push(format!("reading {}: {e}", rec.file));
        }
    }
    Ok(())
}

/// Levels full and restore: the one restore flow, into a structural check
/// of the payload or a scratch target.
fn deep(
    artifact: &Artifact<'_>,
    s: &Settings<'_>,
    progress: Progress,
    rec: &mut VerifyRecord,
) -> Result<()> {
    let tmp = crate::fsutil::private_tempdir("dbsafe-verify-", &s.tmpdir)?;
    let _guard = crate::cleanup::TempGuard::new(tmp.path());
    let flow = Flow::new(s.keys);
    let report = if s.level == Level::Restore {
        let opts = RestoreOptions {
            create: true,
            tmpdir: tmp.path().to_path_buf(),
            wal: s.wal.clone(),
            no_roles: s.no_roles,
            ..Default::default()
        };
        let target = Target::Scratch {
            url: s.scratch.as_deref(),
            tmpdir: tmp.path(),
        };
        flow.restore(artifact, target, &opts, progress)?
    } else {
        flow.run(artifact, progress, &mut |payload, origin, input, report| {
            crate::restore::structural_check(payload, origin, input, tmp.path(), report)
        })?
    };
    rec.problems = report.all_problems();
    rec.checks = report.checks;
    if s.level == Level::Restore {
        rec.integrity_score = report.score;
    }
    rec.tables = report.tables.unwrap_or_default();
    Ok(())
}
