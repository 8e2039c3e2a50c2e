//! Durable, private file operations: temporary name, fsync, rename, fsync of the directory.

use crate::error::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates a directory and its parents with mode 0700.
pub fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create directory {}", path.display()))
}

/// Creates a temporary directory `PREFIX...` in `dir` with mode 0700
/// (tempfile's default follows the umask: 0755), removed when dropped: it
/// holds decoded, decrypted payloads.
pub fn private_tempdir(prefix: &str, dir: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .map_err(|e| {
            crate::Error::io(
                format!("cannot create a temporary directory in {}", dir.display()),
                e,
            )
        })
}

/// Creates a new file with mode 0600, failing if it exists.
pub fn create_private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// The directory a path's file lives in: `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses (exit 4) a directory of a store that is a link: whoever planted
/// it would have the store read, written or locked elsewhere.
pub fn refuse_link(dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(crate::Error::refused(format!(
            "{} is a link; nothing is read, written or locked through it",
            dir.display()
        ))
        .hint(PLANTED_HINT));
    }
    Ok(())
}

/// What to do about something planted in a store.
const PLANTED_HINT: &str = "remove it, and check who can write to the store";

/// Opens `path` with `options` without following a symbolic link at its
/// end, and only if it is a regular file: a link or a device planted where
/// a store keeps a lock or its audit log is refused (exit 4), never written
/// through.
pub fn open_regular(options: &mut OpenOptions, path: &Path, what: &str) -> Result<File> {
    let refused = || {
        crate::Error::refused(format!(
            "{what} {} is not a regular file (a link or something else is in its place); nothing was written",
            path.display()
        ))
        .hint(PLANTED_HINT)
    };
    use rustix::fs::OFlags;
    use rustix::io::Errno;
    // Without blocking: a FIFO planted there would hold the open until a
    // reader came (ENXIO when none, refused below when one is there).
    let f = options
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code)
                if code == Errno::LOOP.raw_os_error() || code == Errno::NXIO.raw_os_error() =>
            {
                refused()
            }
            _ => crate::Error::io(format!("cannot open {what} {}", path.display()), e),
        })?;
    if !f.metadata().context(path.display())?.is_file() {
        return Err(refused());
    }
    rustix::fs::fcntl_getfl(&f)
        .and_then(|flags| rustix::fs::fcntl_setfl(&f, flags - OFlags::NONBLOCK))
        .map_err(|e| {
            crate::Error::io(format!("cannot open {what} {}", path.display()), e.into())
        })?;
    Ok(f)
}

/// Refuses a store directory others can write to: anyone who can plant a
/// file or a link there can replace a backup (exit 4), unless the caller
/// allows it (`--allow-shared-store`).
pub fn check_private_dir(dir: &Path, allow_shared: bool) -> Result<()> {
    let meta = fs::metadata(dir).context(dir.display())?;
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !allow_shared {
        return Err(crate::Error::refused(format!(
            "store {} is writable by {} (mode {:o}){}: anyone who can write there can replace a backup",
            dir.display(),
            if mode & 0o002 != 0 { "everyone" } else { "its group" },
            mode & 0o7777,
            if sticky { ", sticky" } else { "" }
        ))
        .hint(format!(
            "chmod go-w {}, or pass --allow-shared-store if that is intended",
            dir.display()
        )));
    }
    Ok(())
}

/// fsyncs a directory so a rename or unlink in it survives a crash (the
/// empty path, the parent of a bare file name, is the current directory).
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))
}

/// A temporary name next to `path`, hidden (leading dot) and unique.
pub fn temp_name_for(path: &Path) -> PathBuf {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rnd: u32 = rand::random();
    path.with_file_name(format!(
        ".{file}.tmp.{}.{rnd:08x}",
        crate::cleanup::owner_tag()
    ))
}

/// Whether a file name is one of our temporaries.
pub fn is_temp_name(file: &str) -> bool {
    file.starts_with('.') && file.contains(".tmp.")
}

/// Writes a small file atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_private_from(path, &mut &bytes[..])
}

/// Streams `input` into `path` atomically with mode 0600: a temporary
/// beside it, fsynced, renamed over it, the directory fsynced.
pub fn write_private_from(path: &Path, input: &mut dyn std::io::Read) -> Result<()> {
    let tmp = temp_name_for(path);
    let result = (|| {
        let mut f = create_private_file(&tmp)?;
        std::io::copy(input, &mut f).context(tmp.display())?;
        f.sync_all().context(tmp.display())?;
        fs::rename(&tmp, path).with_context(|| format!("cannot rename into {}", path.display()))?;
        fsync_dir(parent_dir(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Free bytes on the filesystem holding `path` (for unprivileged users).
pub fn free_space(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Sets mode 0600 on an existing file.
pub fn make_private(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).context(path.display())
}

/// The user running the tool, for audit entries.
pub fn current_user() -> String {
    if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return u;
    }
    let uid = rustix::process::getuid().as_raw();
    uzers::get_user_by_uid(uid)
        .map(|u| u.name().to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("uid:{uid}"))
}

/// Whether the tool runs as root (PostgreSQL then runs as `postgres`,
/// and restored files keep their recorded owners).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `word` quoted for a POSIX shell (`''` for the empty string).
pub fn shell_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'{}'", s.replace('\'', "'\\''")))
}

/// This machine's host name.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod bare_name_tests {
    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(
            super::parent_dir(std::path::Path::new("x.zst")),
            std::path::Path::new(".")
        );
        assert_eq!(
            super::parent_dir(std::path::Path::new("d/x")),
            std::path::Path::new("d")
        );
        super::fsync_dir(std::path::Path::new("")).expect("fsync of the current directory");
    }
}

#[cfg(test)]
mod quote_tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_survives_a_shell() {
        for word in ["", "plain", "it's", "a b", "$HOME", "\"q\"", "x;rm -rf /"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "{word:?}");
        }
    }
}
