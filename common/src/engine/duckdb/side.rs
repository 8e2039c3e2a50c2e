//! DuckDB side files: sides are files next to the target, swapped in by
//! rename under the target's write lock.
//!
//! DuckDB lets no other process open a database while one has it open for
//! writing, and takes its locks with `fcntl`: holding the target's write
//! lock proves nobody has it open, and keeps it so while the files move.
//! The old database keeps its WAL under its new name; the side is
//! checkpointed first, so it is one file.

use super::{cli, holder_text, wal_of, Duckdb, FileLock, Open};
use crate::engine::side::{FilePlace, FileSides, Session, Swap};
use crate::engine::Engine;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn in_use(path: &Path, pid: Option<i32>, waited: bool) -> Error {
    Error::refused(format!(
        "DuckDB database {} is held open by {}{}; it cannot be swapped while another process has it open, and nothing was changed",
        path.display(),
        holder_text(pid),
        if waited { " past the grace period" } else { "" }
    ))
    .hint("stop the application's use of it (or have it DETACH the database), or pass --grace D to wait for that")
}

impl FileSides for Duckdb {
    const SCHEME: &'static str = "duckdb";

    fn engine(path: PathBuf) -> Box<dyn Engine> {
        Box::new(Duckdb::new(path))
    }

    fn run_sql(path: &Path, sql: &str, file: &Path) -> Result<()> {
        // -bail stops at the first error, before COMMIT: the CLI's exit rolls it all back.
        cli(
            Open::ReadWrite(path),
            &format!("BEGIN TRANSACTION;\n{sql}\n;\nCOMMIT;\n"),
            &format!(
                "{} failed on {} (rolled back)",
                file.display(),
                path.display()
            ),
        )
        .map(drop)
    }

    fn sessions(place: &FilePlace, names: &[&str]) -> Result<Vec<Session>> {
        let mut out = Vec::new();
        for name in names {
            let path = place.path(name);
            if !path.is_file() {
                continue;
            }
            if let Err(pid) = FileLock::take(&path, true)? {
                out.push(Session {
                    pid: pid.map(i64::from).unwrap_or(0),
                    database: name.to_string(),
                    user: String::new(),
                    application: pid
                        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
                        .map(|c| c.trim().to_string())
                        .unwrap_or_default(),
                    client: String::new(),
                });
            }
        }
        Ok(out)
    }

    fn swap(place: &FilePlace, side: &str, keep_as: &str, grace: Option<Duration>) -> Result<Swap> {
        let (target, side_path, keep) = (
            place.path(&place.file),
            place.path(side),
            place.path(keep_as),
        );
        if wal_of(&side_path).exists() {
            cli(
                Open::ReadWrite(&side_path),
                "CHECKPOINT;",
                &format!("checkpointing {}", side_path.display()),
            )?;
        }
        let start = Instant::now();
        let lock = loop {
            match FileLock::take(&target, true)? {
                Ok(lock) => break lock,
                Err(pid) => match grace {
                    Some(g) if start.elapsed() < g => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    _ => return Err(in_use(&target, pid, grace.is_some())),
                },
            }
        };
        let waited = start.elapsed();
        let clock = Instant::now();
        place.link_target_as(&keep)?;
        // The old WAL belongs to the old database: it goes with it.
        let (wal, keep_wal) = (wal_of(&target), wal_of(&keep));
        let wal_moved = match std::fs::rename(&wal, &keep_wal) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                let _ = std::fs::remove_file(&keep);
                return Err(Error::failed(format!(
                    "moving {} aside: {e}; nothing was changed",
                    wal.display()
                )));
            }
        };
        place.rename_over_target(&side_path, &keep, || {
            if wal_moved {
                let _ = std::fs::rename(&keep_wal, &wal);
            }
        })?;
        drop(lock);
        Ok(Swap {
            waited,
            ended: Vec::new(),
            duration: clock.elapsed(),
            notes: Vec::new(),
        })
    }
}
