//! An artifact as a tool meets it: on stdin, in a file (with or without
//! sidecars next to it), or in a store; and the sidecars that describe it.
//!
//! Every tool that reads an artifact goes through [`Artifact`], so the
//! rules live here once: a fresh reader per [`Artifact::open`] (stdin can
//! be read once), and one way of reading a sidecar — missing is `None`,
//! unreadable or invalid is an error that names it.

use crate::catalog::Entry;
use crate::error::{Error, Result};
use crate::meta::{Metadata, VerifyRecord};
use crate::store::Store;
use std::cell::{Cell, OnceCell, RefCell};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file written next to an artifact, named by a suffix of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sidecar {
    /// `NAME.sha256`: the artifact's checksum as a `sha256sum` line.
    Sha256,
    /// `NAME.meta.json`: its [`Metadata`].
    Meta,
    /// `NAME.verify.json`: its last [`VerifyRecord`].
    Verify,
}

impl Sidecar {
    /// Every sidecar an artifact may have.
    pub const ALL: [Sidecar; 3] = [Sidecar::Sha256, Sidecar::Meta, Sidecar::Verify];

    /// The suffix after the artifact's name and a dot.
    pub fn suffix(self) -> &'static str {
        match self {
            Sidecar::Sha256 => "sha256",
            Sidecar::Meta => "meta.json",
            Sidecar::Verify => "verify.json",
        }
    }

    /// The sidecar's key (or file name) for an artifact's key (or file name).
    pub fn of(self, artifact: &str) -> String {
        format!("{artifact}.{}", self.suffix())
    }

    /// The sidecar's path next to an artifact file.
    pub fn next_to(self, artifact: &Path) -> PathBuf {
        let mut p = artifact.as_os_str().to_owned();
        p.push(".");
        p.push(self.suffix());
        PathBuf::from(p)
    }

    /// The artifact a sidecar key belongs to, when `key` is one.
    pub fn artifact_of(key: &str) -> Option<&str> {
        Sidecar::ALL
            .iter()
            .find_map(|s| key.strip_suffix(s.suffix())?.strip_suffix('.'))
    }
}

/// The `.sha256` line for an artifact file name.
pub fn sha256_line(hex: &str, file: &str) -> String {
    format!("{hex}  {file}\n")
}

/// The hex digest of a `sha256sum` line.
pub fn parse_sha256_line(line: &str) -> Option<String> {
    let hex = line.split_whitespace().next()?;
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Parses a JSON sidecar's bytes; `what` names the file in the error.
fn parse<T: serde::de::DeserializeOwned>(what: &str, noun: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::failed(format!("{what}: invalid {noun}: {e}"))
            .hint("fix or remove the file")
            .with_source(e)
    })
}

fn parse_checksum(what: &str, bytes: &[u8]) -> Result<String> {
    parse_sha256_line(&String::from_utf8_lossy(bytes)).ok_or_else(|| {
        Error::failed(format!("{what}: not a sha256sum line")).hint("fix or remove the file")
    })
}

/// Reads a small file: missing is `None`, anything else that stops the read an error.
pub fn read_small_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Reads a metadata file given on its own (`dbverify --meta FILE`).
/// A file that is not there is a usage error (exit 2): the comparison it
/// was given for would silently not happen.
pub fn read_meta_file(path: &Path) -> Result<Metadata> {
    let bytes = read_small_file(path)?
        .ok_or_else(|| Error::usage(format!("{}: no such metadata file", path.display())))?;
    parse(&path.display().to_string(), "metadata", &bytes)
}

enum Place<'a> {
    Stdin {
        read: Cell<bool>,
        /// Its first bytes, when read before it was opened.
        head: RefCell<Option<Vec<u8>>>,
    },
    File(PathBuf),
    Stored {
        store: &'a dyn Store,
        key: String,
        size: Option<u64>,
    },
}

/// An artifact to read, with what is known about it.
///
/// The checksum and metadata are read from the sidecars once, when first
/// asked for, or given up front ([`Artifact::with_sha256`], [`Artifact::with_meta`]).
pub struct Artifact<'a> {
    place: Place<'a>,
    sha256: OnceCell<Option<String>>,
    meta: OnceCell<Option<Metadata>>,
}

impl<'a> Artifact<'a> {
    fn at(place: Place<'a>) -> Artifact<'a> {
        Artifact {
            place,
            sha256: OnceCell::new(),
            meta: OnceCell::new(),
        }
    }

    /// The artifact on standard input (read once; no sidecars).
    pub fn stdin() -> Artifact<'static> {
        Artifact::at(Place::Stdin {
            read: Cell::new(false),
            head: RefCell::new(None),
        })
    }

    /// An artifact file, with whatever sidecars are next to it.
    pub fn file(path: impl Into<PathBuf>) -> Artifact<'static> {
        Artifact::at(Place::File(path.into()))
    }

    /// `-` for stdin, else a file.
    pub fn from_arg(arg: &str) -> Artifact<'static> {
        if arg == "-" {
            Artifact::stdin()
        } else {
            Artifact::file(arg)
        }
    }

    /// An artifact in a store, as listed by the catalog.
    pub fn entry(store: &'a dyn Store, e: &Entry) -> Artifact<'a> {
        Artifact::at(Place::Stored {
            store,
            key: e.key().to_string(),
            size: Some(e.object.size),
        })
    }

    /// An artifact in a store by its key.
    pub fn stored(store: &'a dyn Store, key: &str) -> Artifact<'a> {
        Artifact::at(Place::Stored {
            store,
            key: key.to_string(),
            size: None,
        })
    }

    /// Uses this checksum instead of the `.sha256` sidecar.
    pub fn with_sha256(self, hex: &str) -> Self {
        let _ = self.sha256.set(Some(hex.to_ascii_lowercase()));
        self
    }

    /// Uses this metadata instead of the `.meta.json` sidecar.
    pub fn with_meta(self, meta: Metadata) -> Self {
        let _ = self.meta.set(Some(meta));
        self
    }

    /// Whether this is standard input.
    pub fn is_stdin(&self) -> bool {
        matches!(self.place, Place::Stdin { .. })
    }

    /// Whether this is a store's entry, which its writer gave sidecars.
    pub fn is_stored(&self) -> bool {
        matches!(self.place, Place::Stored { .. })
    }

    /// The path, file name or `stdin`, for messages.
    pub fn describe(&self) -> String {
        match &self.place {
            Place::Stdin { .. } => "stdin".into(),
            Place::File(p) => p.display().to_string(),
            Place::Stored { .. } => self.file_name(),
        }
    }

    /// The file name (`-` for stdin), for records.
    pub fn file_name(&self) -> String {
        match &self.place {
            Place::Stdin { .. } => "-".into(),
            Place::File(p) => p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Place::Stored { key, .. } => key.rsplit('/').next().unwrap_or(key).to_string(),
        }
    }

    /// A fresh reader from the first byte; stdin can be opened once.
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        match &self.place {
            Place::Stdin { read, .. } => {
                if read.get() {
                    return Err(Error::usage("stdin can be read only once"));
                }
                let head = self.head()?;
                read.set(true);
                Ok(Box::new(std::io::Cursor::new(head).chain(std::io::stdin())))
            }
            Place::File(p) => match std::fs::File::open(p) {
                Ok(f) => Ok(Box::new(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::not_found(format!("{}: no such file", p.display())))
                }
                Err(e) => Err(Error::io(format!("cannot open {}", p.display()), e)),
            },
            Place::Stored { store, key, .. } => store.open(key),
        }
    }

    /// Whether it is age-encrypted. A store's entry was named by its writer
    /// (`.age`), and opening it to look would start its download; a file or
    /// stdin is told by its first bytes (from stdin, kept for
    /// [`Artifact::open`]), whatever its name or metadata say.
    pub fn encrypted(&self) -> Result<bool> {
        if let Place::Stored { key, .. } = &self.place {
            return Ok(
                crate::ArtifactName::parse(key.rsplit('/').next().unwrap_or(key))
                    .is_ok_and(|n| n.encrypted),
            );
        }
        Ok(crate::pipeline::is_age(&self.head()?))
    }

    /// Its first bytes: read once from stdin (and kept for the reading to
    /// come), or from the start of the file or object.
    fn head(&self) -> Result<Vec<u8>> {
        let first = |r: &mut dyn Read| {
            let mut head = Vec::new();
            r.take(crate::pipeline::AGE_MAGIC.len() as u64)
                .read_to_end(&mut head)
                .map_err(|e| Error::io(format!("reading {}", self.describe()), e))?;
            Ok(head)
        };
        match &self.place {
            Place::Stdin { head, .. } => {
                if head.borrow().is_none() {
                    *head.borrow_mut() = Some(first(&mut std::io::stdin())?);
                }
                Ok(head.borrow().clone().unwrap_or_default())
            }
            _ => first(&mut self.open()?),
        }
    }

    /// Its size in bytes, when known before reading.
    pub fn size(&self) -> Option<u64> {
        match &self.place {
            Place::Stdin { .. } => None,
            Place::File(p) => std::fs::metadata(p).map(|m| m.len()).ok(),
            Place::Stored { size, .. } => *size,
        }
    }

    /// Where a sidecar of it is (`None` for stdin).
    fn sidecar_name(&self, s: Sidecar) -> Option<String> {
        match &self.place {
            Place::Stdin { .. } => None,
            Place::File(p) => Some(s.next_to(p).display().to_string()),
            Place::Stored { key, .. } => Some(s.of(key)),
        }
    }

    /// A sidecar's bytes and name: `None` when it is missing.
    fn read_sidecar(&self, s: Sidecar) -> Result<Option<(String, Vec<u8>)>> {
        let bytes = match &self.place {
            Place::Stdin { .. } => return Ok(None),
            Place::File(p) => read_small_file(&s.next_to(p))?,
            Place::Stored { store, key, .. } => store.read_small(&s.of(key))?,
        };
        Ok(bytes.map(|b| (self.sidecar_name(s).unwrap_or_default(), b)))
    }

    /// The checksum it must have: given, else its `.sha256` sidecar.
    pub fn expected_sha256(&self) -> Result<Option<String>> {
        if let Some(h) = self.sha256.get() {
            return Ok(h.clone());
        }
        let h = match self
            .read_sidecar(Sidecar::Sha256)?
            .map(|(what, b)| parse_checksum(&what, &b))
            .transpose()?
        {
            Some(h) => Some(h),
            // Without the .sha256 sidecar, the checksum the metadata recorded.
            None => self.meta()?.map(|m| m.checksum).filter(|c| !c.is_empty()),
        };
        Ok(self.sha256.get_or_init(|| h).clone())
    }

    /// Its metadata: given, else its `.meta.json` sidecar.
    pub fn meta(&self) -> Result<Option<Metadata>> {
        if let Some(m) = self.meta.get() {
            return Ok(m.clone());
        }
        let m = self
            .read_sidecar(Sidecar::Meta)?
            .map(|(what, b)| parse(&what, "metadata", &b))
            .transpose()?;
        Ok(self.meta.get_or_init(|| m).clone())
    }

    /// Its last verification record (`.verify.json`).
    pub fn verify_record(&self) -> Result<Option<VerifyRecord>> {
        self.read_sidecar(Sidecar::Verify)?
            .map(|(what, b)| parse(&what, "verification record", &b))
            .transpose()
    }

    /// Whether a verification record can be kept for it: store entries,
    /// and files that have a `.sha256` or `.meta.json` next to them.
    pub fn keeps_records(&self) -> bool {
        match &self.place {
            Place::Stdin { .. } => false,
            Place::File(p) => [Sidecar::Sha256, Sidecar::Meta]
                .iter()
                .any(|s| s.next_to(p).exists()),
            Place::Stored { .. } => true,
        }
    }

    /// Writes its verification record; `false` when it has nowhere to keep one
    /// (stdin, a file without sidecars).
    pub fn write_verify_record(&self, rec: &VerifyRecord) -> Result<bool> {
        if !self.keeps_records() {
            return Ok(false);
        }
        let mut json = serde_json::to_vec_pretty(rec).expect("a record serializes");
        json.push(b'\n');
        match &self.place {
            Place::File(p) => crate::fsutil::write_private(&Sidecar::Verify.next_to(p), &json)?,
            Place::Stored { store, key, .. } => {
                store.write_small(&Sidecar::Verify.of(key), &json)?
            }
            Place::Stdin { .. } => unreachable!("stdin keeps no records"),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(file: &str) -> VerifyRecord {
        VerifyRecord::start(file.into(), "full", "test")
    }

    #[test]
    fn sidecar_names_and_their_artifact() {
        assert_eq!(
            Sidecar::Meta.of("backups/a.sqlite"),
            "backups/a.sqlite.meta.json"
        );
        assert_eq!(
            Sidecar::Sha256.next_to(Path::new("/x/a.sqlite.zst")),
            PathBuf::from("/x/a.sqlite.zst.sha256")
        );
        for s in Sidecar::ALL {
            assert_eq!(Sidecar::artifact_of(&s.of("b/a.zst")), Some("b/a.zst"));
        }
        assert_eq!(Sidecar::artifact_of("b/a.zst"), None);
        assert_eq!(Sidecar::artifact_of("b/a.zstsha256"), None);
    }

    #[test]
    fn a_file_without_sidecars_has_no_checksum_metadata_or_record() {
        let (_dir, path) = crate::testing::temp_file("a.sqlite", b"x");
        let a = Artifact::file(&path);
        assert_eq!(a.expected_sha256().unwrap(), None);
        assert!(a.meta().unwrap().is_none());
        assert!(a.verify_record().unwrap().is_none());
        assert!(!a.keeps_records());
        assert!(!a.write_verify_record(&record("a.sqlite")).unwrap());
        assert!(!Sidecar::Verify.next_to(&path).exists());
        assert_eq!(a.size(), Some(1));
        assert_eq!(a.file_name(), "a.sqlite");
    }

    #[test]
    fn present_sidecars_are_read_and_a_record_is_written_next_to_them() {
        let (_dir, path) = crate::testing::temp_file("a.sqlite", b"x");
        let hex = "AB".repeat(32);
        std::fs::write(
            Sidecar::Sha256.next_to(&path),
            sha256_line(&hex, "a.sqlite"),
        )
        .unwrap();
        let a = Artifact::file(&path);
        assert_eq!(a.expected_sha256().unwrap(), Some("ab".repeat(32)));
        assert!(a.write_verify_record(&record("a.sqlite")).unwrap());
        assert_eq!(a.verify_record().unwrap().unwrap().file, "a.sqlite");
        // Given values win over the sidecars.
        let given = Artifact::file(&path).with_sha256(&"CD".repeat(32));
        assert_eq!(given.expected_sha256().unwrap(), Some("cd".repeat(32)));
    }

    #[test]
    fn invalid_sidecars_are_errors_that_name_them() {
        let (_dir, path) = crate::testing::temp_file("a.sqlite", b"x");
        std::fs::write(Sidecar::Sha256.next_to(&path), "00  a.sqlite\n").unwrap();
        std::fs::write(Sidecar::Meta.next_to(&path), "{").unwrap();
        std::fs::write(Sidecar::Verify.next_to(&path), "[]").unwrap();
        let a = Artifact::file(&path);
        for e in [
            a.expected_sha256().unwrap_err(),
            a.meta().map(drop).unwrap_err(),
            a.verify_record().map(drop).unwrap_err(),
        ] {
            assert_eq!(e.code(), crate::ExitCode::Failure, "{e}");
            assert!(e.to_string().contains("a.sqlite."), "{e}");
        }
    }

    #[test]
    fn store_entries_read_and_write_their_sidecars_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&dir.path().display().to_string(), true).unwrap();
        let key = crate::store::key(crate::store::BACKUPS, "a.sqlite");
        store.write_small(&key, b"abc").unwrap();
        let a = Artifact::stored(store.as_ref(), &key);
        assert!(a.verify_record().unwrap().is_none());
        assert!(a.write_verify_record(&record("a.sqlite")).unwrap());
        assert!(a.verify_record().unwrap().unwrap().passed());
        let mut bytes = Vec::new();
        a.open().unwrap().read_to_end(&mut bytes).unwrap();
        a.open().unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"abcabc", "every open reads from the start");
    }

    #[test]
    fn stdin_opens_once() {
        let a = Artifact::stdin();
        assert!(a.open().is_ok());
        assert_eq!(
            a.open().map(drop).unwrap_err().code(),
            crate::ExitCode::Usage
        );
        assert_eq!(a.expected_sha256().unwrap(), None);
    }
}
