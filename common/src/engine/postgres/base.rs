//! PostgreSQL physical base backups: `pg_basebackup` as a tar stream.
//!
//! WAL is not included (`-X none`): it comes from the archive that
//! `walship push` fills, which is what makes point-in-time recovery work.
//! pg_basebackup returns only once the server has archived the WAL the
//! backup needs; the metadata records where that WAL starts and stops.

use super::{count_query, parse_counts, require_tools, Child, Postgres};
use crate::engine::{Engine, SnapshotInfo, SnapshotOptions};
use crate::error::{Error, Result};
use crate::meta::WalInfo;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Stdio;

/// Parses `X/Y` into a 64-bit LSN.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The WAL file holding `lsn` (or, with `prev`, the byte before it, as
/// PostgreSQL names the segment a backup stops in).
pub fn wal_file(timeline: u32, lsn: u64, segment_size: u64, prev: bool) -> String {
    let pos = if prev && lsn > 0 { lsn - 1 } else { lsn };
    let segno = pos / segment_size;
    let per_log = 0x1_0000_0000 / segment_size;
    format!(
        "{:08X}{:08X}{:08X}",
        timeline,
        segno / per_log,
        segno % per_log
    )
}

/// What a `backup_manifest` says of the WAL the backup needs.
#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<WalRange>,
}

#[derive(serde::Deserialize)]
struct WalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start_lsn: String,
    #[serde(rename = "End-LSN")]
    end_lsn: String,
}

/// Reads the timeline and start and end LSNs of the manifest's first WAL range.
fn parse_points(manifest: impl Read) -> Option<(String, u32, String)> {
    // The file list is read past, not kept: memory stays small whatever its length.
    let m: Manifest = serde_json::from_reader(std::io::BufReader::new(manifest)).ok()?;
    let r = m.wal_ranges.into_iter().next()?;
    Some((r.start_lsn, r.timeline, r.end_lsn))
}

/// Passes a tar stream through, copying `backup_manifest` into a temporary file.
struct ManifestTap<'a> {
    out: &'a mut dyn Write,
    header: Vec<u8>,
    /// Bytes of entry data (with padding) still to pass.
    left: u64,
    /// Bytes of that which are the entry's own.
    data_left: u64,
    capturing: bool,
    manifest: File,
}

impl ManifestTap<'_> {
    fn take_header(&mut self) -> std::io::Result<()> {
        let h = &self.header;
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&h[124..136])
            .trim_matches(|c: char| c == '\0' || c == ' ')
            .to_string();
        let size = u64::from_str_radix(&size_field, 8).unwrap_or(0);
        self.data_left = size;
        self.left = size.div_ceil(512) * 512;
        self.capturing = name == "backup_manifest" || name == "./backup_manifest";
        if self.capturing {
            self.manifest.set_len(0)?;
            self.manifest.seek(SeekFrom::Start(0))?;
        }
        self.header.clear();
        Ok(())
    }
}

impl Write for ManifestTap<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            if self.left == 0 {
                let take = (512 - self.header.len()).min(rest.len());
                self.header.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.header.len() == 512 {
                    self.take_header()?;
                }
                continue;
            }
            let take = (self.left as usize).min(rest.len());
            if self.capturing {
                let own = (self.data_left as usize).min(take);
                self.manifest.write_all(&rest[..own])?;
            }
            self.data_left = self.data_left.saturating_sub(take as u64);
            self.left -= take as u64;
            rest = &rest[take..];
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Postgres {
    /// Streams a base backup (tar, with its backup_manifest) into `out`.
    pub(super) fn base_backup(
        &self,
        opts: &SnapshotOptions,
        out: &mut dyn Write,
    ) -> Result<SnapshotInfo> {
        if !opts.tables.is_empty() || !opts.exclude_tables.is_empty() {
            return Err(Error::usage("--table and --exclude-table do not apply to --base: a base backup is the whole cluster"));
        }
        require_tools(&["psql", "pg_basebackup"])?;
        let db = self.db();
        let settings = self.run_sql(
            &db,
            "SELECT current_setting('server_version') || '|' || current_setting('wal_segment_size') || '|' || \
             current_setting('archive_mode') || '|' || current_setting('wal_level');",
        )?;
        let parts: Vec<&str> = settings
            .first()
            .map(|l| l.split('|').collect())
            .unwrap_or_default();
        let [version, segsize, archive_mode, wal_level] = parts[..] else {
            return Err(Error::failed(format!(
                "unexpected answer from psql: {settings:?}"
            )));
        };
        if archive_mode == "off" || wal_level == "minimal" {
            return Err(Error::usage(format!(
                "{} has archive_mode = {archive_mode} and wal_level = {wal_level}: a base backup without archived WAL cannot be restored",
                self.url()
            ))
            .hint("turn on WAL archiving with walship (scripts/postgres-wal-config.sh) and restart the server"));
        }
        let segment_size = crate::units::parse_size(segsize)?;
        // Recovery settings left in the server's configuration travel in
        // the backup to every restore of it (dbrestore strips them; other
        // tools may not).
        let leftover = self.run_sql(
            &db,
            "SELECT name FROM pg_catalog.pg_settings WHERE source NOT IN ('default', 'override')              AND (name LIKE 'recovery_target%' OR name = 'restore_command') ORDER BY name;",
        )?;
        let leftover: Vec<&str> = leftover
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        if !leftover.is_empty() {
            crate::output::warn(format!(
                "{} has recovery settings configured ({}); this base backup carries them: remove them with ALTER SYSTEM RESET",
                self.url(),
                leftover.join(", ")
            ));
        }
        let mut cmd = self.command("pg_basebackup");
        cmd.stdin(Stdio::null());
        cmd.args([
            "-D",
            "-",
            "-F",
            "t",
            "-X",
            "none",
            "--checkpoint=fast",
            "-v",
            "-d",
        ])
        .arg(self.conn.uri(&db));
        let mut child = Child::spawn("pg_basebackup", super::CLIENT_PACKAGE_HINT, cmd)?;
        let mut stdout = child.child.stdout.take().expect("piped stdout");
        let manifest = tempfile::tempfile_in(&opts.tmpdir)
            .map_err(|e| Error::io(format!("creating a file in {}", opts.tmpdir.display()), e))?;
        let mut tap = ManifestTap {
            out,
            header: Vec::new(),
            left: 0,
            data_left: 0,
            capturing: false,
            manifest,
        };
        if let Err(e) = crate::pipeline::copy(&mut stdout, &mut tap) {
            child.kill();
            return Err(Error::from(e).context("streaming pg_basebackup's output"));
        }
        child.finish(&format!("pg_basebackup of {} failed", self.url()))?;
        let mut manifest = tap.manifest;
        manifest
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("reading the backup_manifest", e))?;
        let (start, timeline, stop) = parse_points(manifest).ok_or_else(|| {
            Error::failed("the base backup's backup_manifest has no WAL-Ranges; is this pg_basebackup 13 or newer?")
        })?;
        let (start_lsn, stop_lsn) = (
            parse_lsn(&start).ok_or_else(|| Error::failed(format!("bad LSN {start}")))?,
            parse_lsn(&stop).ok_or_else(|| Error::failed(format!("bad LSN {stop}")))?,
        );
        let wal = WalInfo {
            timeline,
            start_wal: wal_file(timeline, start_lsn, segment_size, false),
            stop_wal: wal_file(timeline, stop_lsn, segment_size, true),
            start_lsn: start,
            stop_lsn: stop,
            segment_size: Some(segment_size),
        };
        // Counted on the live server just after the backup ended: exact when
        // nothing wrote meanwhile, which the metadata says it assumes.
        let tables = parse_counts(&self.run_sql(&db, &count_query(&[], &[]))?)?;
        let counted = "counted on the live server when the backup ended";
        Ok(SnapshotInfo {
            wal: Some(wal),
            ..SnapshotInfo::new(
                tables,
                version,
                [
                    ("row_counts", counted.into()),
                    ("wal_segment_size", segment_size.into()),
                ],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_name_their_segments() {
        let seg = 16 << 20;
        assert_eq!(parse_lsn("0/2000028"), Some(0x2000028));
        assert_eq!(
            wal_file(1, 0x2000028, seg, false),
            "000000010000000000000002"
        );
        // A backup ending exactly on a boundary ends in the previous segment.
        assert_eq!(
            wal_file(1, 0x3000000, seg, true),
            "000000010000000000000002"
        );
        assert_eq!(
            wal_file(2, 0x1_0000_0000, seg, false),
            "000000020000000100000000"
        );
    }

    #[test]
    fn reads_the_wal_range_of_a_manifest() {
        let m = br#"{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
],
"Manifest-Checksum": "abc"}"#;
        assert_eq!(
            parse_points(&m[..]),
            Some(("0/2000028".into(), 1, "0/2000100".into()))
        );
    }
}
