//! What the file-backed engines (SQLite, DuckDB, directory trees) share:
//! the path of a `scheme:PATH` URL, the directory a restore writes into,
//! spooling a payload next to its target, and a private working directory
//! for a snapshot.

use super::SnapshotOptions;
use crate::cleanup::TempGuard;
use crate::error::{Context, Error, Result};
use crate::name::Payload;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file path of a `scheme:` URL (`scheme:PATH`, `scheme://rel`, `scheme:///abs`).
pub fn path_of(url: &str) -> PathBuf {
    let rest = url.split_once(':').map_or(url, |(_, rest)| rest);
    PathBuf::from(rest.strip_prefix("//").unwrap_or(rest))
}

/// The directory `path` lives in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    crate::fsutil::parent_dir(path)
}

/// The directory a restore to `path` writes into; created (private) when
/// missing only with `create` (`--create`).
pub fn restore_dir(path: &Path, create: bool) -> Result<&Path> {
    let dir = parent(path);
    if !dir.is_dir() {
        if !create {
            return Err(
                Error::failed(format!("directory {} does not exist", dir.display()))
                    .hint("pass --create to create it"),
            );
        }
        crate::fsutil::create_private_dir(dir)?;
    }
    Ok(dir)
}

/// Writes a payload stream to a private hidden file next to `near`,
/// synced; the guard removes it unless kept.
pub fn spool(input: &mut dyn Read, near: &Path) -> Result<TempGuard> {
    crate::cleanup::sweep(parent(near));
    let path = crate::fsutil::temp_name_for(near);
    let guard = TempGuard::new(&path);
    let mut f = crate::fsutil::create_private_file(&path)?;
    crate::pipeline::copy(input, &mut f)?;
    f.sync_all()
        .with_context(|| format!("spooling the payload to {}", path.display()))?;
    Ok(guard)
}

/// The other processes of this host that hold `path` open (Linux's /proc):
/// a database file's users, which hold no lock while they are idle.
pub fn holders(path: &Path) -> Vec<u32> {
    let Ok(want) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<u32> = procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == want))
            })
        })
        .collect();
    found.sort_unstable();
    found
}

/// A process's name (`comm`), for messages.
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// Gives the restored copy at `spool` the owner and mode of the file at
/// `target` it is about to replace: the application that opens the
/// database keeps its access (a copy made by root is root's, 0600).
pub fn take_over_attributes(spool: &Path, target: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(was) = std::fs::metadata(target) else {
        return Ok(());
    };
    if crate::fsutil::running_as_root() {
        std::os::unix::fs::chown(spool, Some(was.uid()), Some(was.gid())).with_context(|| {
            format!(
                "cannot give {} the owner of {}",
                spool.display(),
                target.display()
            )
        })?;
    }
    std::fs::set_permissions(spool, std::fs::Permissions::from_mode(was.mode() & 0o7777))
        .with_context(|| {
            format!(
                "cannot give {} the mode of {}",
                spool.display(),
                target.display()
            )
        })
}

/// Refuses to restore a payload other than `want` into the `label` file at
/// `path` of a `scheme:` target (e.g. "SQLite database", `sqlite`): such a
/// target takes its own artifacts only.
pub fn expect_payload(
    payload: Payload,
    want: Payload,
    label: &str,
    scheme: &str,
    path: &Path,
) -> Result<()> {
    super::expect_payload(
        payload,
        want,
        format_args!("{label} {}", path.display()),
        &format!("a {scheme}: target takes {} artifacts", want.ext()),
    )
}

/// Refuses `--base` (PostgreSQL only) for engine `label`, and a snapshot
/// of a database file that is not there.
pub fn check_snapshot(opts: &SnapshotOptions, label: &str, path: &Path) -> Result<()> {
    if opts.base {
        return Err(Error::usage(format!(
            "--base is for PostgreSQL; {label} snapshots are always full"
        )));
    }
    if !path.is_file() {
        return Err(Error::failed(format!(
            "{label} database {} does not exist",
            path.display()
        )));
    }
    Ok(())
}

/// A private working directory for a snapshot under `--tmpdir`, removed
/// with its guard (the copy and whatever journal the engine makes beside it).
pub fn snapshot_dir(opts: &SnapshotOptions, engine: &str) -> Result<TempGuard> {
    // Copies left by a killed run hold plaintext data: the next run removes them.
    crate::cleanup::sweep(&opts.tmpdir);
    let dir = crate::fsutil::temp_name_for(&opts.tmpdir.join(format!("dbsnap-{engine}")));
    let guard = TempGuard::new(&dir);
    crate::fsutil::create_private_dir(&dir)?;
    Ok(guard)
}

/// The [`Engine`](super::Engine) methods a database file answers alike
/// (name, database name, URL, host, existence), for an engine
/// type with a `path` field, in its `impl Engine`.
macro_rules! file_engine {
    ($name:literal) => {
        fn engine(&self) -> &'static str {
            $name
        }

        fn database(&self) -> String {
            $crate::name::file_database(&self.path)
        }

        fn url(&self) -> String {
            format!("{}:{}", $name, self.path.display())
        }

        fn host(&self) -> String {
            $crate::fsutil::host_name()
        }

        fn exists(&self) -> $crate::error::Result<bool> {
            Ok(self.path.exists())
        }
    };
}
pub(crate) use file_engine;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_relative_and_absolute_paths() {
        assert_eq!(path_of("sqlite:app.db"), PathBuf::from("app.db"));
        assert_eq!(
            path_of("duckdb://rel/x.duckdb"),
            PathBuf::from("rel/x.duckdb")
        );
        assert_eq!(path_of("dir:///srv/data"), PathBuf::from("/srv/data"));
        assert_eq!(parent(Path::new("x.db")), Path::new("."));
        assert_eq!(parent(Path::new("/a/x.db")), Path::new("/a"));
    }
}
