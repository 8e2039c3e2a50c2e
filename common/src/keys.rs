//! age keys: recipients to encrypt to, identities and passphrases to decrypt with.
//!
//! Secrets only ever come from files or the environment's file paths, never
//! from flag values, so they stay out of argv and shell history.

use crate::error::{Context, Error, Result};
use age::secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// How an artifact is encrypted, or not.
#[derive(Clone)]
pub enum Encryption {
    /// No encryption layer.
    None,
    /// age to X25519 recipients; the public keys are kept for the metadata.
    Recipients(Vec<age::x25519::Recipient>),
    /// age with a passphrase (scrypt).
    Passphrase(SecretString),
}

impl Encryption {
    /// Builds the encryption from recipients given inline or in files, or a passphrase file.
    pub fn from_sources(
        recipients: &[String],
        recipients_files: &[PathBuf],
        passphrase_file: Option<&Path>,
    ) -> Result<Encryption> {
        let mut keys = Vec::new();
        for r in recipients.iter().flat_map(|r| r.split(',')) {
            let r = r.trim();
            if !r.is_empty() {
                keys.push(parse_recipient(r, "the recipient list")?);
            }
        }
        for f in recipients_files {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::usage(format!("cannot read recipients file {}: {e}", f.display()))
            })?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(parse_recipient(
                    line,
                    &format!("{}:{}", f.display(), i + 1),
                )?);
            }
        }
        // Recipients were asked for but none came: never silently plaintext.
        if keys.is_empty() && (!recipients.is_empty() || !recipients_files.is_empty()) {
            let whence = recipients_files
                .iter()
                .map(|f| f.display().to_string())
                .chain((!recipients.is_empty()).then(|| "the recipient list".to_string()))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::usage(format!(
                "no age recipient in {whence}: encryption was asked for and would be silently dropped"
            ))
            .hint("give at least one age1... public key"));
        }
        match (keys.is_empty(), passphrase_file) {
            (false, Some(_)) => Err(Error::usage(
                "both recipients and a passphrase file were given; choose one",
            )),
            (false, None) => Ok(Encryption::Recipients(keys)),
            (true, Some(p)) => Ok(Encryption::Passphrase(read_passphrase(p)?)),
            (true, None) => Ok(Encryption::None),
        }
    }

    /// The public keys, for the metadata (empty for passphrases and none).
    pub fn public_keys(&self) -> Vec<String> {
        match self {
            Encryption::Recipients(r) => r.iter().map(|k| k.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether an age layer is written.
    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Encryption::None)
    }
}

fn parse_recipient(s: &str, whence: &str) -> Result<age::x25519::Recipient> {
    age::x25519::Recipient::from_str(s).map_err(|e| {
        Error::usage(format!("invalid age recipient in {whence}: {e}"))
            .hint("recipients are X25519 public keys starting with age1 (age-keygen -y KEYFILE prints one)")
    })
}

/// Reads a passphrase from the first line of a file.
pub fn read_passphrase(path: &Path) -> Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::usage(format!(
            "cannot read passphrase file {}: {e}",
            path.display()
        ))
    })?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(Error::usage(format!(
            "passphrase file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(line))
}

/// What decrypts artifacts: identity files and an optional passphrase.
///
/// Loaded once per run ([`Keyring::for_run`]) and handed down: the same
/// keyring decrypts base backups and builds the restore command that
/// fetches their WAL, so both see the same keys.
#[derive(Default)]
pub struct Keyring {
    identities: Vec<Box<dyn age::Identity>>,
    passphrase: Option<SecretString>,
    identity_files: Vec<PathBuf>,
    passphrase_file: Option<PathBuf>,
}

impl Keyring {
    /// The keys of a run, by the one rule every tool follows: the flags
    /// (whose values clap already took from the environment when absent),
    /// else the config file's `identity_file` and `passphrase_file`.
    pub fn for_run(
        identity_files: &[PathBuf],
        passphrase_file: Option<&Path>,
        cfg: &crate::config::Config,
    ) -> Result<Keyring> {
        let ids = if identity_files.is_empty() {
            cfg.defaults.identity_file.iter().cloned().collect()
        } else {
            identity_files.to_vec()
        };
        let pass = passphrase_file
            .map(Path::to_path_buf)
            .or_else(|| cfg.defaults.passphrase_file.clone());
        Keyring::load(&ids, pass.as_deref())
    }

    /// Where the WAL of a base backup restored with these keys comes from:
    /// the archive in `store`, fetched by `walship fetch` with the same
    /// identity and passphrase files.
    pub fn wal_source(&self, store: &str) -> Result<crate::engine::WalSource> {
        Ok(crate::engine::WalSource {
            restore_command: crate::walarchive::restore_command(
                store,
                &self.identity_files,
                self.passphrase_file.as_deref(),
            )?,
        })
    }

    /// Loads identity files and a passphrase file.
    pub fn load(identity_files: &[PathBuf], passphrase_file: Option<&Path>) -> Result<Keyring> {
        let mut identities = Vec::new();
        for f in identity_files {
            let file =
                age::IdentityFile::from_file(f.to_string_lossy().into_owned()).map_err(|e| {
                    Error::usage(format!("cannot read identity file {}: {e}", f.display()))
                })?;
            let ids = file
                .into_identities()
                .map_err(|e| Error::usage(format!("invalid identity file {}: {e}", f.display())))?;
            if ids.is_empty() {
                return Err(Error::usage(format!(
                    "identity file {} holds no identity",
                    f.display()
                )));
            }
            identities.extend(ids);
        }
        let passphrase = passphrase_file.map(read_passphrase).transpose()?;
        Ok(Keyring {
            identities,
            passphrase,
            identity_files: identity_files.to_vec(),
            passphrase_file: passphrase_file.map(Path::to_path_buf),
        })
    }

    /// The encryption of a new artifact protected exactly as one these keys
    /// read: to `recipients` when it names them, else (a passphrase
    /// artifact) with the same passphrase, else to the public keys of the
    /// identities that decrypt it; `None` only for an unencrypted one.
    pub fn encryption_like(&self, encrypted: bool, recipients: &[String]) -> Result<Encryption> {
        if !encrypted {
            return Ok(Encryption::None);
        }
        if !recipients.is_empty() {
            return Encryption::from_sources(recipients, &[], None);
        }
        if let Some(p) = &self.passphrase {
            return Ok(Encryption::Passphrase(p.clone()));
        }
        let mut publics = Vec::new();
        for f in &self.identity_files {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::usage(format!("cannot read identity file {}: {e}", f.display()))
            })?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
            {
                if let Ok(id) = age::x25519::Identity::from_str(line) {
                    publics.push(id.to_public().to_string());
                }
            }
        }
        if publics.is_empty() {
            return Err(Error::usage(
                "cannot tell whom to encrypt the safety backup to: the artifact is encrypted but names no recipients",
            )
            .hint("pass -r/--recipients-file for the safety backup, or --passphrase-file"));
        }
        Encryption::from_sources(&publics, &[], None)
    }

    /// The files the keys came from (identities, passphrase), which a
    /// `restore_command` names for the server to read.
    pub fn files(&self) -> Vec<&Path> {
        self.identity_files
            .iter()
            .map(PathBuf::as_path)
            .chain(self.passphrase_file.as_deref())
            .collect()
    }

    /// Whether nothing to decrypt with was given.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.passphrase.is_none()
    }

    /// Opens an age stream with these keys.
    pub fn decrypt<R: std::io::Read>(&self, input: R) -> Result<age::stream::StreamReader<R>> {
        let dec = age::Decryptor::new(input)
            .map_err(|e| Error::failed(format!("not a valid age file: {e}")))?;
        if dec.is_scrypt() {
            let pass = self.passphrase.clone().ok_or_else(|| {
                Error::unavailable("the artifact is encrypted with a passphrase")
                    .hint("pass --passphrase-file FILE or set DBSAFE_PASSPHRASE_FILE")
            })?;
            let id = age::scrypt::Identity::new(pass);
            return dec
                .decrypt(std::iter::once(&id as &dyn age::Identity))
                .map_err(|e| {
                    Error::unavailable(format!("cannot decrypt with the passphrase: {e}"))
                        .hint("check the passphrase file")
                });
        }
        if self.identities.is_empty() {
            return Err(Error::unavailable(
                "the artifact is encrypted to age recipients and no identity was given",
            )
            .hint("pass -i/--identity KEYFILE or set DBSAFE_IDENTITY_FILE"));
        }
        dec.decrypt(self.identities.iter().map(|i| i.as_ref()))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => Error::unavailable(
                    "cannot decrypt: none of the given identities matches the artifact's recipients",
                )
                .hint("check -i/--identity: the artifact was encrypted to other keys"),
                e => Error::failed(format!("cannot decrypt: {e}")),
            })
    }
}

/// Reads a key file's path list from the environment's comma-separated form.
pub fn split_paths(v: &str) -> Vec<PathBuf> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Generates an X25519 identity file (for tests and the demo): returns the public key.
pub fn generate_identity(path: &Path) -> Result<String> {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let text = format!(
        "# public key: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    crate::fsutil::write_private(path, text.as_bytes()).context(path.display())?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_files_keys_decrypt_base_backups_and_reach_their_wal() {
        let (dir, id) = crate::testing::temp_path("id.txt");
        generate_identity(&id).unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "secret\n").unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.defaults.identity_file = Some(id.clone());
        cfg.defaults.passphrase_file = Some(pass.clone());
        let keys = Keyring::for_run(&[], None, &cfg).unwrap();
        assert!(!keys.is_empty());
        let wal = keys.wal_source("/store").unwrap().restore_command;
        assert!(
            wal.contains(&format!("DBSAFE_IDENTITY_FILE={}", id.display())),
            "{wal}"
        );
        assert!(
            wal.contains(&format!("DBSAFE_PASSPHRASE_FILE={}", pass.display())),
            "{wal}"
        );
        assert!(wal.ends_with("fetch %f %p --from /store"), "{wal}");
    }

    #[test]
    fn an_empty_recipient_list_from_any_source_is_a_usage_error() {
        let (_dir, empty) = crate::testing::temp_file("empty.txt", "# nobody yet\n\n");
        for (inline, files) in [
            (vec![String::new()], vec![]),
            (vec![" , ".to_string()], vec![]),
            (vec![], vec![empty.clone()]),
        ] {
            let e = Encryption::from_sources(&inline, &files, None)
                .err()
                .expect("refused");
            assert_eq!(
                e.code(),
                crate::ExitCode::Usage,
                "{inline:?} {files:?}: {e}"
            );
        }
        assert!(!Encryption::from_sources(&[], &[], None)
            .unwrap()
            .is_encrypted());
    }

    #[test]
    fn new_artifacts_are_encrypted_like_the_one_read() {
        let (dir, id) = crate::testing::temp_path("id.txt");
        let public = generate_identity(&id).unwrap();
        let keys = Keyring::load(std::slice::from_ref(&id), None).unwrap();
        assert!(!keys.encryption_like(false, &[]).unwrap().is_encrypted());
        assert_eq!(
            keys.encryption_like(true, &[]).unwrap().public_keys(),
            vec![public.clone()]
        );
        let other = generate_identity(&dir.path().join("other.txt")).unwrap();
        assert_eq!(
            keys.encryption_like(true, std::slice::from_ref(&other))
                .unwrap()
                .public_keys(),
            vec![other]
        );
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "secret\n").unwrap();
        let by_pass = Keyring::load(&[], Some(&pass)).unwrap();
        assert!(matches!(
            by_pass.encryption_like(true, &[]).unwrap(),
            Encryption::Passphrase(_)
        ));
        assert!(
            Keyring::default().encryption_like(true, &[]).is_err(),
            "never silently plain"
        );
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let (flag_id, cfg_id) = (dir.path().join("flag.txt"), dir.path().join("cfg.txt"));
        generate_identity(&flag_id).unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.defaults.identity_file = Some(cfg_id);
        let keys = Keyring::for_run(std::slice::from_ref(&flag_id), None, &cfg).unwrap();
        let wal = keys.wal_source("/s").unwrap().restore_command;
        assert!(
            wal.contains(&format!("DBSAFE_IDENTITY_FILE={}", flag_id.display())),
            "{wal}"
        );
        assert!(
            !wal.contains("cfg.txt") && !wal.contains("DBSAFE_PASSPHRASE_FILE"),
            "{wal}"
        );
    }
}
