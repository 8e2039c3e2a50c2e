//! The WAL archive in a store: what `walship push` and `walship fetch` do.
//!
//! A WAL file `F` is stored as `wal/F[.zst|.gz][.age]`, with `F....sha256`
//! (the stored object's checksum, `sha256sum -c` format) and
//! `F....meta.json` (the checksum of the original bytes, so a repeated push
//! can be recognised as identical without a key to decrypt with). The
//! metadata is written first and the object second: an object under its
//! final name always has its metadata.

use crate::error::{Error, Result};
use crate::fsutil::shell_quote;
use crate::keys::Keyring;
use crate::pipeline::{self, EncodeOptions, StreamEncoder};
use crate::store::{self, Store};
use crate::wal::WalName;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// What is recorded next to each archived WAL file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalMeta {
    /// `dbsafe/1`.
    pub format: String,
    /// The PostgreSQL file name.
    pub wal_file: String,
    /// The stored object's file name.
    pub object: String,
    /// sha256 of the original bytes.
    pub raw_sha256: String,
    /// Size of the original bytes.
    pub raw_size_bytes: u64,
    /// `zstd`, `gzip` or `none`.
    pub compression: String,
    /// `age` or `none`.
    pub encryption: String,
    /// RFC 3339.
    pub archived_at: String,
    /// Which host pushed it.
    pub host: String,
    /// For a timeline history file: its ancestors, so the archive's
    /// timelines can be told apart without a key to decrypt the file with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::timeline::Switch>,
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Written now.
    Archived {
        /// The object key.
        key: String,
        /// Its size.
        size: u64,
    },
    /// Already there with identical bytes.
    AlreadyArchived,
}

/// The layer suffixes an archived file may carry, most likely first.
const SUFFIXES: [&str; 6] = [".zst.age", ".zst", ".gz.age", ".gz", ".age", ""];

/// Refuses a name that is not a WAL file name PostgreSQL archives.
pub fn validate(file: &str) -> Result<()> {
    if WalName::parse(file).is_none() {
        return Err(Error::usage(format!(
            "{file:?} is not a WAL file name (segment, .history, .backup or .partial)"
        )));
    }
    Ok(())
}

/// The `restore_command` (PostgreSQL's `%f`/`%p` placeholders) that fetches
/// WAL from `store` with `walship fetch`, for a restored base backup's
/// postgresql.conf. Keys go in its environment as absolute paths (the server
/// runs it from its data directory); no configuration file applies.
pub fn restore_command(
    store: &str,
    identity_files: &[PathBuf],
    passphrase_file: Option<&Path>,
) -> Result<String> {
    let absolute = |p: &Path| {
        std::path::absolute(p)
            .map_err(|e| Error::io(format!("resolving {}", p.display()), e))
            .map(|p| p.display().to_string())
    };
    let walship = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("walship")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("walship"));
    let mut env = String::from("DBSAFE_CONFIG=/dev/null ");
    if !identity_files.is_empty() {
        let ids = identity_files
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<Vec<_>>>()?;
        env.push_str(&format!(
            "DBSAFE_IDENTITY_FILE={} ",
            shell_quote(&ids.join(","))
        ));
    }
    if let Some(p) = passphrase_file {
        env.push_str(&format!(
            "DBSAFE_PASSPHRASE_FILE={} ",
            shell_quote(&absolute(p)?)
        ));
    }
    let from = if store.contains("://") {
        store.to_string()
    } else {
        absolute(Path::new(store))?
    };
    Ok(format!(
        "{env}{} fetch %f %p --from {}",
        shell_quote(&walship.display().to_string()),
        shell_quote(&from)
    ))
}

/// Finds the archived object of `file`, whatever layers it was stored with.
pub fn find(store: &dyn Store, file: &str) -> Result<Option<String>> {
    for s in SUFFIXES {
        let key = store::key(store::WAL, &format!("{file}{s}"));
        if store.exists(&key)? {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

fn read_meta(store: &dyn Store, key: &str) -> Result<Option<WalMeta>> {
    match store.read_small(&format!("{key}.meta.json"))? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::failed(format!("{key}.meta.json is not valid: {e}"))),
        None => Ok(None),
    }
}

fn sha256_of(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| Error::failed(format!("reading {}: {e}", path.display())))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Archives the WAL file at `path` under the name `file` (archive_command).
///
/// Returns only once the object and its sidecars are durable. A file of that
/// name already archived with the same bytes is success; with other bytes it
/// is an error and the archived copy is kept.
pub fn push(store: &dyn Store, path: &Path, file: &str, opts: EncodeOptions) -> Result<Pushed> {
    validate(file)?;
    // Pushes take turns (an archive_command retried while the first still
    // runs): two never interleave their object and its checksum. The
    // archiver runs as the server's user, who may not write in the store's
    // locks/: the turn is taken among that user's processes on this host.
    let _turn = match crate::lock::Lock::on_host(
        store,
        "walship-push",
        std::time::Duration::from_secs(300),
    ) {
        Ok(l) => Some(l),
        // A lock directory this user cannot use must not stop archiving:
        // the checksum check below still repairs an interleaved push.
        Err(e) if e.kind != crate::error::Kind::Busy => {
            crate::output::warn(format!("pushing without taking turns: {e}"));
            None
        }
        Err(e) => return Err(e),
    };
    let mut replaces = None;
    if let Some(existing) = find(store, file)? {
        // Only a name archived already needs the checksum before writing;
        // a new one is hashed as it is encoded, in one read of the file.
        let (raw_sha, _) = sha256_of(path)?;
        match read_meta(store, &existing)? {
            Some(m) if m.raw_sha256 == raw_sha => {
                if stored_object_verifies(store, &existing)? {
                    return Ok(Pushed::AlreadyArchived);
                }
                // Archived bytes that do not verify are never "already
                // archived": they are replaced from this identical source.
                crate::output::warn(format!(
                    "{existing} does not match its checksum; archiving {file} again from identical bytes"
                ));
                replaces = Some(existing);
            }
            Some(m) => return Err(Error::of(crate::error::Kind::Conflict, format!(
                "{file} is already archived as {existing} with different contents (sha256 {} there, {raw_sha} here); the archived copy is kept",
                m.raw_sha256
            ))
            .hint("two clusters may be archiving into one store: give each its own store or prefix")),
            None => return Err(Error::of(crate::error::Kind::Conflict, format!("{file} is already archived as {existing}, without metadata to compare with; the archived copy is kept"))),
        }
    }
    let compression = opts.compression;
    let encrypted = opts.encryption.is_encrypted();
    let object = format!(
        "{file}{}{}",
        match compression {
            crate::Compression::Zstd => ".zst",
            crate::Compression::Gzip => ".gz",
            crate::Compression::None => "",
        },
        if encrypted { ".age" } else { "" }
    );
    let key = store::key(store::WAL, &object);
    let history = match WalName::parse(file) {
        Some(n) if n.kind == crate::wal::WalKind::History => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            crate::timeline::parse_history(&text)
                .map_err(|e| Error::failed(format!("{file} is not a timeline history file: {e}")))?
        }
        _ => Vec::new(),
    };
    // A new name is created only if no other writer (another host) took it
    // meanwhile; repairing a damaged copy replaces it. Nothing is visible
    // until the commit below, which follows the metadata.
    let writer = if replaces.as_deref() == Some(key.as_str()) {
        store.create(&key)?
    } else {
        store.create_new(&key)?
    };
    let mut enc = StreamEncoder::new(writer, opts)?;
    let f = std::fs::File::open(path)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", path.display())))?;
    let (mut input, raw) = pipeline::tap(f);
    pipeline::copy(&mut input, &mut enc)
        .map_err(|e| Error::from(e).context(format!("archiving {file}")))?;
    let (writer, summary) = enc.finish()?;
    let (raw_sha, raw_size) = raw.result();
    let meta = WalMeta {
        format: crate::meta::FORMAT.into(),
        wal_file: file.into(),
        object: object.clone(),
        raw_sha256: raw_sha,
        raw_size_bytes: raw_size,
        compression: compression.as_str().into(),
        encryption: if encrypted { "age" } else { "none" }.into(),
        archived_at: chrono::Utc::now().to_rfc3339(),
        host: crate::fsutil::host_name(),
        history,
    };
    let mut json = serde_json::to_vec_pretty(&meta).expect("WAL metadata serializes");
    json.push(b'\n');
    // The metadata is created, never replaced: another push (another host)
    // that recorded this name first is followed only with the same bytes (a
    // retried or killed push, a repair); other bytes change nothing.
    match store.write_new(&format!("{key}.meta.json"), &json) {
        Ok(()) => {}
        Err(e) if e.kind == crate::error::Kind::Refused => match read_meta(store, &key)? {
            Some(m) if m.raw_sha256 == meta.raw_sha256 => {}
            _ => return Err(Error::of(
                crate::error::Kind::Conflict,
                format!(
                "another push recorded {file} with different contents first; nothing was replaced"
            ),
            )
            .hint(
                "two clusters may be archiving into one store: give each its own store or prefix",
            )),
        },
        Err(e) => return Err(e),
    }
    match writer.commit() {
        Ok(()) => {}
        // Another push of the same bytes (the metadata said so) created
        // the object first: the segment is archived.
        Err(e) if e.kind == crate::error::Kind::Refused => return Ok(Pushed::AlreadyArchived),
        Err(e) => return Err(e),
    }
    store.write_small(
        &format!("{key}.sha256"),
        format!("{}  {object}\n", summary.sha256).as_bytes(),
    )?;
    if let Some(old) = replaces.filter(|old| *old != key) {
        // The damaged copy was stored with other layers: it goes.
        delete(store, &old)?;
    }
    Ok(Pushed::Archived {
        key,
        size: summary.artifact_bytes,
    })
}

/// Whether the stored object of `key` has the bytes its `.sha256` records.
fn stored_object_verifies(store: &dyn Store, key: &str) -> Result<bool> {
    let Some(expected) = store
        .read_small(&format!("{key}.sha256"))?
        .and_then(|b| crate::artifact::parse_sha256_line(&String::from_utf8_lossy(&b)))
    else {
        return Ok(false);
    };
    let (mut input, tap) = pipeline::tap(store.open(key)?);
    pipeline::copy(&mut input, &mut std::io::sink())?;
    Ok(tap.result().0.eq_ignore_ascii_case(&expected))
}

/// How a fetch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Written to the destination.
    Restored,
    /// Not in the archive.
    Missing,
}

/// Restores the archived `file` to `dest` (restore_command): verified, decrypted,
/// decompressed, written atomically. Every error other than "not archived" is an Err.
pub fn fetch(store: &dyn Store, file: &str, dest: &Path, keys: &Keyring) -> Result<Fetched> {
    validate(file)?;
    let Some(key) = find(store, file)? else {
        return Ok(Fetched::Missing);
    };
    let expected = store
        .read_small(&format!("{key}.sha256"))?
        .and_then(|b| crate::catalog::parse_sha256_line(&String::from_utf8_lossy(&b)));
    let meta = read_meta(store, &key)?;
    let (input, tap) = pipeline::tap(store.open(&key)?);
    let mut decoded = pipeline::decode(input, keys)?;
    let tmp = crate::fsutil::temp_name_for(dest);
    let guard = crate::cleanup::TempGuard::new(&tmp);
    let mut out = crate::fsutil::create_private_file(&tmp)?;
    let mut raw = RawHash {
        inner: &mut out,
        hasher: Sha256::new(),
    };
    pipeline::copy(&mut decoded.reader, &mut raw)
        .map_err(|e| Error::from(e).context(format!("fetching {file}")))?;
    let raw_sha = hex::encode(raw.hasher.finalize());
    let (sha, _) = tap.result();
    if let Some(exp) = expected {
        if exp != sha {
            return Err(Error::failed(format!(
                "{key}: sha256 mismatch (expected {exp}, got {sha}): the archived copy is corrupt"
            )));
        }
    }
    if let Some(m) = meta {
        if m.raw_sha256 != raw_sha {
            return Err(Error::failed(format!(
                "{key}: restored bytes do not match the recorded sha256"
            )));
        }
    }
    out.sync_all()
        .map_err(|e| Error::failed(format!("cannot fsync {}: {e}", tmp.display())))?;
    drop(out);
    std::fs::rename(&tmp, dest)
        .map_err(|e| Error::failed(format!("cannot move {file} into {}: {e}", dest.display())))?;
    guard.keep();
    Ok(Fetched::Restored)
}

struct RawHash<'a> {
    inner: &'a mut std::fs::File,
    hasher: Sha256,
}

impl Write for RawHash<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An archived WAL file.
#[derive(Debug, Clone, Serialize)]
pub struct Archived {
    /// PostgreSQL name.
    pub wal_file: String,
    /// Object key.
    pub key: String,
    /// Stored size.
    pub size: u64,
    /// When it was stored.
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// Every archived WAL file (objects, not sidecars), in name order.
pub fn list(store: &dyn Store) -> Result<Vec<Archived>> {
    let mut out: Vec<Archived> = store
        .list(store::WAL)?
        .into_iter()
        .filter(|o| !o.key.ends_with(".sha256") && !o.key.ends_with(".meta.json"))
        .filter_map(|o| {
            let f = crate::wal::strip_layers(o.file_name()).to_string();
            WalName::parse(&f).map(|_| Archived {
                wal_file: f,
                key: o.key.clone(),
                size: o.size,
                modified: o.modified,
            })
        })
        .collect();
    out.sort_by(|a, b| a.wal_file.cmp(&b.wal_file));
    Ok(out)
}

/// The cluster's WAL segment size, as the archive records it: the original
/// size of the newest archived segment (16 MiB when nothing says otherwise).
pub fn segment_size(store: &dyn Store, archived: &[Archived]) -> Result<crate::wal::SegSize> {
    let newest = archived.iter().rev().find(|a| {
        WalName::parse(&a.wal_file).is_some_and(|n| n.kind == crate::wal::WalKind::Segment)
    });
    Ok(match newest {
        Some(a) => read_meta(store, &a.key)?
            .and_then(|m| crate::wal::SegSize::new(m.raw_size_bytes))
            .unwrap_or_default(),
        None => crate::wal::SegSize::default(),
    })
}

/// The archive's timelines: ancestry from the history files' metadata,
/// when each began (its history file was archived), its newest segment and
/// where its archived WAL ends.
pub fn timelines(
    store: &dyn Store,
    archived: &[Archived],
    size: crate::wal::SegSize,
) -> Result<crate::timeline::Timelines> {
    use crate::timeline::{Lsn, Timeline};
    let mut map: std::collections::BTreeMap<u32, Timeline> = std::collections::BTreeMap::new();
    let blank = |id| Timeline {
        id,
        ancestors: Vec::new(),
        created: None,
        newest: None,
        end: None,
    };
    for a in archived {
        let Some(n) = WalName::parse(&a.wal_file) else {
            continue;
        };
        let t = map.entry(n.timeline).or_insert_with(|| blank(n.timeline));
        match n.kind {
            crate::wal::WalKind::History => {
                t.created = Some(a.modified);
                if let Some(m) = read_meta(store, &a.key)? {
                    t.ancestors = m.history;
                }
            }
            crate::wal::WalKind::Segment => {
                let end = Lsn::of_segment(size.next(n.segno), size);
                if t.end.is_none_or(|e| end > e) {
                    t.end = Some(end);
                    t.newest = Some((a.wal_file.clone(), a.modified));
                }
            }
            _ => {}
        }
    }
    Ok(crate::timeline::Timelines(map))
}

/// The archive's timelines as [`timelines`] reads them, with the ancestry
/// of history files archived before their metadata recorded it read from
/// the files themselves (decrypted with `keys`).
pub fn timelines_with_keys(
    store: &dyn Store,
    keys: &Keyring,
) -> Result<crate::timeline::Timelines> {
    let archived = list(store)?;
    let size = segment_size(store, &archived)?;
    let mut t = timelines(store, &archived, size)?;
    for line in
        t.0.values_mut()
            .filter(|l| l.id > 1 && l.ancestors.is_empty())
    {
        let file = format!("{:08X}.history", line.id);
        let tmp = tempfile::NamedTempFile::new()
            .map_err(|e| Error::io("a temporary file for a history file", e))?;
        if fetch(store, &file, tmp.path(), keys)? == Fetched::Restored {
            let text = std::fs::read_to_string(tmp.path())
                .map_err(|e| Error::io(format!("reading {file}"), e))?;
            line.ancestors = crate::timeline::parse_history(&text)
                .map_err(|e| Error::failed(format!("{file}: {e}")))?;
        }
    }
    Ok(t)
}

/// A restore point recorded in the store by `walship restore-point`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePoint {
    /// Its name.
    pub name: String,
    /// Where it is in the WAL.
    pub lsn: crate::timeline::Lsn,
    /// The timeline it was made on.
    pub timeline: u32,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

fn restore_point_key(name: &str) -> String {
    store::key("restore-points", &format!("{name}.json"))
}

/// Records a restore point in the store.
pub fn record_restore_point(store: &dyn Store, rp: &RestorePoint) -> Result<()> {
    let json = serde_json::to_vec_pretty(rp).map_err(|e| Error::failed(e.to_string()))?;
    store.write_small(&restore_point_key(&rp.name), &json)
}

/// The restore point `name`, if the store recorded it.
pub fn restore_point(store: &dyn Store, name: &str) -> Result<Option<RestorePoint>> {
    match store.read_small(&restore_point_key(name))? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::failed(format!("restore point {name}: {e}"))),
        None => Ok(None),
    }
}

/// Deletes an archived WAL file and its sidecars (object first).
pub fn delete(store: &dyn Store, key: &str) -> Result<()> {
    store.delete(key)?;
    store.delete(&format!("{key}.sha256"))?;
    store.delete(&format!("{key}.meta.json"))
}

/// The oldest WAL segment position any base backup in the store needs,
/// but those of `leaving` (the ones a dry run of a prune would delete);
/// `None` without base backups. Every other base backup counts, whatever
/// series a run looks at.
pub fn oldest_needed(
    store: &dyn Store,
    leaving: &std::collections::BTreeSet<String>,
) -> Result<Option<u64>> {
    let mut oldest: Option<u64> = None;
    for e in crate::catalog::list(store)?
        .iter()
        .filter(|e| e.name.kind == crate::Kind::Base)
    {
        if leaving.contains(&e.file()) {
            continue;
        }
        let start = crate::catalog::read_meta(store, e)?
            .and_then(|m| m.wal)
            .and_then(|w| WalName::parse(&w.start_wal))
            .ok_or_else(|| {
                Error::failed(format!(
                    "{}: no WAL start in its metadata; refusing to prune WAL",
                    e.file()
                ))
            })?;
        oldest = Some(oldest.map_or(start.segno, |o| o.min(start.segno)));
    }
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_command_names_absolute_keys_and_store_and_survives_a_shell() {
        let cmd = restore_command(
            "rel store",
            &[PathBuf::from("k's.txt")],
            Some(Path::new("/p/pass")),
        )
        .expect("built");
        assert!(cmd.starts_with("DBSAFE_CONFIG=/dev/null "), "{cmd}");
        assert!(cmd.contains(" fetch %f %p --from "), "{cmd}");
        let cwd = std::env::current_dir().expect("cwd");
        // The shell sees each path as one word, absolute.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n' {}",
                cmd.split_once(" fetch ").expect("fetch").0
            ))
            .output()
            .expect("sh runs");
        let words = String::from_utf8_lossy(&out.stdout).into_owned();
        let want = format!(
            "DBSAFE_CONFIG=/dev/null\nDBSAFE_IDENTITY_FILE={}\nDBSAFE_PASSPHRASE_FILE=/p/pass\n",
            cwd.join("k's.txt").display()
        );
        assert!(words.starts_with(&want), "{words:?}");
        assert!(
            cmd.ends_with(&shell_quote(&cwd.join("rel store").display().to_string())),
            "{cmd}"
        );
        let s3 = restore_command("s3://b/p", &[], None).expect("built");
        assert!(s3.ends_with("--from s3://b/p"), "{s3}");
    }
}
