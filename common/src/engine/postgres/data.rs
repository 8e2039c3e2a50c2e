//! A PostgreSQL data directory restored from a base backup: unpacked,
//! configured for recovery from the WAL archive, and optionally started.
//!
//! Serves `dbrestore --pgdata` (point in time) and `dbverify --level
//! restore` of base backups (a throwaway server that recovers to the end of
//! the backup, is counted, stopped and removed). PostgreSQL refuses to run
//! as root: as root, the directory is handed to the `postgres` system user
//! and the server runs as that user.

use crate::engine::{
    Engine, Origin, PayloadCheck, RestoreOptions, SnapshotInfo, SnapshotOptions, WalSource,
};
use crate::error::{Error, Result};
use crate::meta::TableCount;
use crate::name::Payload;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    /// The end of the base backup (consistency), as verification wants.
    Immediate,
    /// A moment in time (UTC).
    Time(chrono::DateTime<chrono::Utc>),
    /// A WAL position (`0/3000158`).
    Lsn(crate::timeline::Lsn),
    /// A transaction id.
    Xid(u64),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
    /// Replay every archived WAL file.
    Latest,
}

/// What the server does once it reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TargetAction {
    /// End recovery and accept writes.
    #[default]
    Promote,
    /// Stay in recovery, read-only, for inspection: `SELECT
    /// pg_wal_replay_resume()` or `pg_ctl promote` moves on.
    Pause,
    /// Stop the server.
    Shutdown,
}

impl TargetAction {
    /// The `recovery_target_action` value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// The start and end of the block of settings dbsafe writes into
/// `postgresql.auto.conf`; the block is removed once recovery is over, so
/// no recovery setting outlives it (a base backup of the recovered server
/// would carry it to every restore of that backup).
const BLOCK_START: &str = "# dbsafe: recovery from a base backup";
const BLOCK_END: &str = "# dbsafe: end of recovery settings";

/// Settings that only mean something during recovery: a restored backup
/// may carry them from a server that was itself recovered.
const RECOVERY_SETTINGS: [&str; 11] = [
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target_action",
    "recovery_target_timeline",
    "recovery_end_command",
    "archive_cleanup_command",
];

/// `postgresql.auto.conf` without dbsafe's recovery block and without any
/// recovery setting a restored backup carried.
pub fn without_recovery_settings(conf: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in conf.lines() {
        let t = line.trim();
        if t == BLOCK_START {
            in_block = true;
            continue;
        }
        if in_block {
            if t == BLOCK_END {
                in_block = false;
            }
            continue;
        }
        let name = t.split(['=', ' ']).next().unwrap_or("");
        if RECOVERY_SETTINGS.contains(&name) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// How to bring a restored data directory up.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// Stop just before the target instead of just after it.
    pub exclusive: bool,
    /// What to do at the target.
    pub action: TargetAction,
    /// `recovery_target_timeline`: a number, `current` or `latest`; the
    /// caller works it out from the archive's history files.
    pub timeline: String,
    /// Start the server and wait for the promotion.
    pub start: bool,
    /// The server's port.
    pub port: u16,
    /// Where the server puts its socket (default: the data directory).
    pub socket_dir: Option<PathBuf>,
    /// Keep the backup's archive_command (a promoted copy archives its new timeline).
    pub archive: bool,
    /// How long to wait for recovery.
    pub timeout: Duration,
}

/// A data directory to restore a base backup into.
pub struct PgData {
    dir: PathBuf,
    recovery: Recovery,
    origin: Origin,
    /// A scratch directory is ours to remove; a user's is not.
    scratch: bool,
}

/// What a recovery reached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reached {
    /// The last transaction replayed, as the server logged it.
    pub last_transaction: Option<String>,
    /// The server log's recovery lines.
    pub log: Vec<String>,
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free port", e))
}

/// The directory of the server binaries (pg_ctl) for a major version.
fn server_bindir(version: Option<&str>) -> Result<PathBuf> {
    let major = version
        .and_then(|v| v.split(['.', ' ']).next())
        .unwrap_or("");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if !major.is_empty() {
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        dirs.sort();
        candidates.extend(dirs.into_iter().rev());
    }
    if let Some(p) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&p));
    }
    candidates
        .into_iter()
        .find(|d| d.join("pg_ctl").is_file())
        .ok_or_else(|| {
            Error::usage(format!(
                "pg_ctl is not installed: install the Debian package postgresql-{}",
                if major.is_empty() { "15" } else { major }
            ))
        })
}

impl PgData {
    /// A user's data directory (`dbrestore --pgdata`).
    pub fn new(dir: PathBuf, recovery: Recovery, origin: Origin) -> PgData {
        PgData {
            dir,
            recovery,
            origin,
            scratch: false,
        }
    }

    /// A throwaway server under `tmpdir` that recovers to the end of the backup.
    pub fn scratch(tmpdir: &Path, origin: Origin) -> Result<PgData> {
        Ok(PgData {
            dir: tmpdir.join("pgdata"),
            recovery: Recovery {
                target: RecoveryTarget::Immediate,
                exclusive: false,
                action: TargetAction::Promote,
                timeline: "current".into(),
                start: true,
                port: free_port()?,
                socket_dir: None,
                archive: false,
                timeout: Duration::from_secs(600),
            },
            origin,
            scratch: true,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn owner(&self) -> Option<&'static str> {
        crate::fsutil::running_as_root().then_some("postgres")
    }

    /// Refuses (exit 2), before anything is unpacked, a recovery whose
    /// server could not read what its `restore_command` names: the server
    /// runs as its own user (postgres, when this runs as root), and a key or
    /// store only root can read would stop recovery at its first WAL file.
    pub fn check_server_reads(&self, paths: &[&Path]) -> Result<()> {
        let Some(user) = self.owner() else {
            return Ok(());
        };
        for p in paths {
            let test = if p.is_dir() { "-x" } else { "-r" };
            let readable = self
                .as_owner(Path::new("test"))
                .arg(test)
                .arg(p)
                .status()
                .map_err(|e| Error::failed(format!("cannot run runuser: {e}")))?
                .success();
            if !readable {
                return Err(Error::usage(format!(
                    "the restored server runs as {user}, and its restore_command could not read {}",
                    p.display()
                ))
                .hint(format!(
                    "let {user} read it (a copy owned by {user}, mode 0600 for a key), or run dbrestore as {user}; nothing was changed"
                )));
            }
        }
        Ok(())
    }

    fn as_owner(&self, program: &Path) -> Command {
        match self.owner() {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn socket_dir(&self) -> PathBuf {
        self.recovery
            .socket_dir
            .clone()
            .unwrap_or_else(|| self.dir.clone())
    }

    fn pg_ctl(&self) -> Result<PathBuf> {
        Ok(server_bindir(self.origin.engine_version.as_deref())?.join("pg_ctl"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log").join("dbsafe-recovery.log")
    }

    /// Unpacks a base backup tar into the (empty or missing) directory.
    fn unpack(&self, input: &mut dyn Read) -> Result<()> {
        if self.dir.exists()
            && std::fs::read_dir(&self.dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(
                Error::refused(format!("{} is not empty", self.dir.display()))
                    .hint("restore into an empty or new directory"),
            );
        }
        crate::fsutil::create_private_dir(&self.dir)?;
        crate::engine::untar::unpack(input, &self.dir)
            .map_err(|e| e.context("unpacking the base backup"))?;
        if !self.dir.join("PG_VERSION").is_file() {
            return Err(Error::failed(
                "the tar is not a PostgreSQL base backup (no PG_VERSION)",
            ));
        }
        Ok(())
    }

    /// Copies the WAL a backup needs into pg_wal with the restore command,
    /// run here (not by the server), so the throwaway server recovers with
    /// no access to the archive and nothing it fetches outlives it.
    fn prefetch_wal(&self, wal: &WalSource) -> Result<()> {
        let info = self
            .origin
            .wal
            .as_ref()
            .ok_or_else(|| Error::failed("the base backup's metadata has no WAL range"))?;
        let start = crate::wal::WalName::parse(&info.start_wal)
            .ok_or_else(|| Error::failed("bad start_wal"))?;
        let stop = crate::wal::WalName::parse(&info.stop_wal)
            .ok_or_else(|| Error::failed("bad stop_wal"))?;
        let pg_wal = self.dir.join("pg_wal");
        crate::fsutil::create_private_dir(&pg_wal)?;
        for tli in 2..=info.timeline {
            let f = format!("{tli:08X}.history");
            match run_restore_command(&wal.restore_command, &f, &pg_wal.join(&f)) {
                // A timeline's history file need not be archived.
                Err(e) if e.code() == crate::ExitCode::NotFound => {}
                other => other?,
            }
        }
        for segno in info.seg_size().range(start.segno, stop.segno) {
            let f = crate::wal::WalName::segment_name(info.timeline, segno);
            run_restore_command(&wal.restore_command, &f, &pg_wal.join(&f)).map_err(|e| {
                e.context(format!(
                    "fetching WAL segment {f}, which the base backup needs"
                ))
            })?;
        }
        Ok(())
    }

    /// Writes the recovery settings and `recovery.signal`.
    fn configure(&self, wal: Option<&WalSource>) -> Result<()> {
        let mut conf = format!("{BLOCK_START}\n");
        let restore_command = match (self.scratch, wal) {
            // The scratch server recovers from WAL already copied into pg_wal.
            (true, _) => "false".to_string(),
            (false, Some(w)) => w.restore_command.clone(),
            (false, None) => {
                return Err(Error::usage(
                    "point-in-time recovery needs the store holding the WAL archive",
                ))
            }
        };
        let q = super::quote_literal;
        conf.push_str(&format!("restore_command = {}\n", q(&restore_command)));
        let inclusive = if self.recovery.exclusive { "off" } else { "on" };
        match &self.recovery.target {
            RecoveryTarget::Immediate => conf.push_str("recovery_target = 'immediate'\n"),
            RecoveryTarget::Time(t) => conf.push_str(&format!(
                "recovery_target_time = '{}'\n",
                t.format("%Y-%m-%d %H:%M:%S%.6f+00")
            )),
            RecoveryTarget::Lsn(l) => conf.push_str(&format!("recovery_target_lsn = '{l}'\n")),
            RecoveryTarget::Xid(x) => conf.push_str(&format!("recovery_target_xid = '{x}'\n")),
            RecoveryTarget::Name(n) => conf.push_str(&format!("recovery_target_name = {}\n", q(n))),
            RecoveryTarget::Latest => {}
        }
        if !matches!(
            self.recovery.target,
            RecoveryTarget::Immediate | RecoveryTarget::Latest
        ) {
            conf.push_str(&format!("recovery_target_inclusive = {inclusive}\n"));
        }
        conf.push_str(&format!(
            "recovery_target_action = '{}'\nrecovery_target_timeline = {}\n",
            self.recovery.action.as_str(),
            q(&self.recovery.timeline)
        ));
        if !self.scratch {
            // However the server is started (--start, or pg_ctl by hand),
            // the block goes from the file when recovery ends (promotion),
            // so no recovery setting outlives it into a later start or a
            // standby made from this one; a failure of it only warns.
            let strip =
                format!("sed -i -e '/^{BLOCK_START}$/,/^{BLOCK_END}$/d' postgresql.auto.conf");
            conf.push_str(&format!("recovery_end_command = {}\n", q(&strip)));
        }
        conf.push_str(&format!("{BLOCK_END}\n"));
        // Settings of the recovered server itself, which stay.
        conf.push_str(&format!("port = {}\n", self.recovery.port));
        conf.push_str(&format!(
            "unix_socket_directories = {}\n",
            q(&self.socket_dir().display().to_string())
        ));
        if self.scratch {
            conf.push_str("listen_addresses = ''\narchive_mode = off\n");
            // Private socket, private server: trust whoever can reach it.
            std::fs::write(self.dir.join("pg_hba.conf"), "local all all trust\n")
                .map_err(|e| Error::io("writing pg_hba.conf", e))?;
        } else if !self.recovery.archive {
            // A drill or an inspection copy: its new timeline stays out of
            // the store (--archive turns archiving on for a new primary).
            conf.push_str("archive_mode = off\n");
        }
        let auto = self.dir.join("postgresql.auto.conf");
        let carried = std::fs::read_to_string(&auto).unwrap_or_default();
        let text = format!("{}{conf}", without_recovery_settings(&carried));
        std::fs::write(&auto, text)
            .map_err(|e| Error::io(format!("cannot write {}", auto.display()), e))?;
        std::fs::write(self.dir.join("recovery.signal"), b"")
            .map_err(|e| Error::io("cannot write recovery.signal", e))?;
        std::fs::create_dir_all(self.dir.join("log"))
            .map_err(|e| Error::io("cannot create log dir", e))?;
        // A base backup of a recovered server carries that recovery's log:
        // this recovery's lines, read for where it stopped, start a new one.
        match std::fs::rename(
            self.log_path(),
            self.log_path().with_extension("log.from-backup"),
        ) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("cannot set the recovery log aside", e))
            }
            _ => {}
        }
        Ok(())
    }

    /// Removes the recovery block once recovery is over; the running
    /// server keeps what it loaded, a later start or base backup has none.
    fn forget_recovery_settings(&self) -> Result<()> {
        let auto = self.dir.join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&auto)
            .map_err(|e| Error::io(format!("cannot read {}", auto.display()), e))?;
        let tmp = self.dir.join("postgresql.auto.conf.dbsafe-tmp");
        std::fs::write(&tmp, without_recovery_settings(&text))
            .and_then(|_| {
                // The server owns its configuration file.
                let meta = std::fs::metadata(&auto)?;
                std::os::unix::fs::chown(
                    &tmp,
                    Some(std::os::unix::fs::MetadataExt::uid(&meta)),
                    Some(std::os::unix::fs::MetadataExt::gid(&meta)),
                )?;
                std::fs::set_permissions(&tmp, meta.permissions())?;
                std::fs::rename(&tmp, &auto)
            })
            .map_err(|e| Error::io(format!("cannot rewrite {}", auto.display()), e))
    }

    fn hand_over(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("chmod {}", self.dir.display()), e))?;
        if let Some(user) = self.owner() {
            if self.scratch {
                // A scratch server's directory is in the run's private
                // temporary directory: the server's user may pass through
                // it (0711), and reads nothing else there (0600 files).
                if let Some(parent) = self.dir.parent() {
                    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))
                        .map_err(|e| Error::io(format!("chmod {}", parent.display()), e))?;
                }
            }
            let st = Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(&self.dir)
                .status()
                .map_err(|e| Error::failed(format!("cannot run chown: {e}")))?;
            if !st.success() {
                return Err(Error::child(
                    st.code(),
                    format!("cannot hand {} to the {user} user", self.dir.display()),
                )
                .hint("PostgreSQL refuses to run as root; create the postgres system user"));
            }
        }
        Ok(())
    }

    /// Starts the server and waits until recovery has promoted it.
    pub fn start_and_wait(&self) -> Result<Reached> {
        let pg_ctl = self.pg_ctl()?;
        let out = self
            .as_owner(&pg_ctl)
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.log_path())
            // The log is read below for where recovery stopped: in English,
            // whatever language the cluster's own settings choose.
            .args(["-o", "-c lc_messages=C"])
            .args(["-w", "-t", "600", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::failed(format!("cannot run pg_ctl: {e}")))?;
        let log = || std::fs::read_to_string(self.log_path()).unwrap_or_default();
        // With shutdown as the action, a short recovery can reach its
        // target and stop before pg_ctl saw the server up: that is no failure.
        let stopped_at_target = || {
            !self.dir.join("postmaster.pid").exists()
                && log().contains("shutdown at recovery target")
        };
        let stopped_early = self.recovery.action == TargetAction::Shutdown && stopped_at_target();
        if !out.status.success() && !stopped_early {
            return Err(Error::child(
                out.status.code(),
                format!(
                    "the restored server did not start: {} {}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.log_tail()
                ),
            ));
        }
        let start = Instant::now();
        loop {
            let reached = match self.recovery.action {
                TargetAction::Promote => !self.dir.join("recovery.signal").exists(),
                // At the target: "pausing at the end of recovery" (PostgreSQL
                // 14 and later), "recovery has paused" (before).
                TargetAction::Pause => {
                    let log = log();
                    log.contains("pausing at the end of recovery")
                        || log.contains("recovery has paused")
                }
                TargetAction::Shutdown => stopped_at_target(),
            };
            if reached {
                break;
            }
            if !self.dir.join("postmaster.pid").exists() {
                return Err(Error::failed(format!(
                    "recovery failed and the server stopped: {}",
                    self.log_tail()
                )));
            }
            if start.elapsed() > self.recovery.timeout {
                return Err(Error::failed(format!(
                    "recovery did not finish within {}s: {}",
                    self.recovery.timeout.as_secs(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match self.recovery.action {
            // Promotion removes recovery.signal just before the server accepts writes.
            TargetAction::Promote => {
                self.wait_ready()?;
                self.forget_recovery_settings()?;
            }
            TargetAction::Pause => self.wait_ready()?,
            TargetAction::Shutdown => {}
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| {
                l.contains("recovery")
                    || l.contains("last completed transaction")
                    || l.contains("selected new timeline")
                    || l.contains("consistent")
            })
            .map(str::to_string)
            .collect();
        let last = log.lines().rev().find_map(|l| {
            l.split("last completed transaction was at log time ")
                .nth(1)
                .or_else(|| {
                    l.split(", time ")
                        .nth(1)
                        .filter(|_| l.contains("recovery stopping"))
                })
                .map(|s| s.trim().to_string())
        });
        Ok(Reached {
            last_transaction: last,
            log: lines,
        })
    }

    fn wait_ready(&self) -> Result<()> {
        let bindir = server_bindir(self.origin.engine_version.as_deref())?;
        let start = Instant::now();
        loop {
            let ok = Command::new(bindir.join("pg_isready"))
                .arg("-h")
                .arg(self.socket_dir())
                .arg("-p")
                .arg(self.recovery.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(Error::failed(format!(
                    "the recovered server does not accept connections: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Stops the server (fast), if it runs.
    pub fn stop(&self) -> Result<()> {
        if !self.dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let pg_ctl = self.pg_ctl()?;
        let _ = self
            .as_owner(&pg_ctl)
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "fast", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        Ok(())
    }

    fn client(&self) -> Result<super::Postgres> {
        let user = self
            .origin
            .source
            .as_deref()
            .and_then(|s| super::url::ConnUrl::parse(s).ok())
            .and_then(|c| c.login.user)
            .unwrap_or_else(|| "postgres".into());
        let db = self
            .origin
            .database
            .clone()
            .unwrap_or_else(|| "postgres".into());
        let encode = crate::engine::url::encode;
        super::Postgres::new(&format!(
            "postgres://{}@{}:{}/{}",
            encode(&user),
            encode(&self.socket_dir().display().to_string()),
            self.recovery.port,
            encode(&db)
        ))
    }
}

/// Runs a `restore_command` for WAL file `file` into `dest`, as the server
/// would (`%f`, `%p`, `%%`); exit 1 from it (walship fetch's "not
/// archived", as PostgreSQL reads it) is not found.
fn run_restore_command(command: &str, file: &str, dest: &Path) -> Result<()> {
    let line = command
        .replace("%%", "\0")
        .replace("%f", &crate::fsutil::shell_quote(file))
        .replace(
            "%p",
            &crate::fsutil::shell_quote(&dest.display().to_string()),
        )
        .replace("\0", "%");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::failed(format!("cannot run sh for the restore_command: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(match out.status.code() {
        Some(1) => Error::not_found(format!("{file} is not in the WAL archive {said}")),
        code => Error::child(code, format!("restore_command for {file}: {said}")),
    })
}

/// Restores a base backup: unpack, configure, and (when asked) start and wait.
pub fn restore_base(
    pg: &PgData,
    input: &mut dyn Read,
    wal: Option<&WalSource>,
) -> Result<Option<Reached>> {
    pg.unpack(input)?;
    if pg.scratch {
        pg.prefetch_wal(wal.ok_or_else(|| {
            Error::usage(
                "verifying a base backup by restoring it needs the store with its WAL archive",
            )
            .hint("verify it from its store: dbverify --store STORE ... --level restore")
        })?)?;
    }
    pg.configure(wal)?;
    pg.hand_over()?;
    if pg.recovery.start {
        return pg.start_and_wait().map(Some);
    }
    Ok(None)
}

impl Engine for PgData {
    fn engine(&self) -> &'static str {
        "postgres"
    }
    fn payload(&self, _base: bool) -> Payload {
        Payload::Tar
    }
    fn database(&self) -> String {
        self.origin
            .database
            .clone()
            .unwrap_or_else(|| "postgres".into())
    }
    fn url(&self) -> String {
        format!("pgdata:{}", self.dir.display())
    }
    fn host(&self) -> String {
        crate::fsutil::host_name()
    }
    fn snapshot(&self, _opts: &SnapshotOptions, _out: &mut dyn Write) -> Result<SnapshotInfo> {
        Err(Error::usage(
            "snapshots of a data directory are taken from its server: dbsnap --base postgres://...",
        ))
    }
    fn exists(&self) -> Result<bool> {
        Ok(self.dir.join("PG_VERSION").exists())
    }
    fn tables(&self) -> Result<Vec<TableCount>> {
        self.client()?.tables()
    }
    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()> {
        crate::engine::expect_payload(
            payload,
            Payload::Tar,
            format_args!("data directory {}", self.dir.display()),
            "a data directory restores base backups (tar)",
        )?;
        restore_base(self, input, opts.wal.as_ref()).map(drop)
    }
    fn drop_target(&self) -> Result<()> {
        self.stop()?;
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(())
    }
}

/// `dbverify --level full` of a base backup: unpacked and checked against its backup_manifest.
pub fn check(input: &mut dyn Read, origin: &Origin, tmpdir: &Path) -> Result<PayloadCheck> {
    let dir = tmpdir.join("base");
    let pg = PgData {
        dir: dir.clone(),
        recovery: Recovery {
            target: RecoveryTarget::Immediate,
            exclusive: false,
            action: TargetAction::Promote,
            timeline: "current".into(),
            start: false,
            port: 0,
            socket_dir: None,
            archive: false,
            timeout: Duration::ZERO,
        },
        origin: origin.clone(),
        scratch: true,
    };
    pg.unpack(input)?;
    let mut checks = vec!["tar unpacked; PG_VERSION present".to_string()];
    let mut problems = Vec::new();
    if !dir.join("backup_manifest").is_file() {
        problems.push("the base backup has no backup_manifest".into());
    } else {
        let bin = server_bindir(origin.engine_version.as_deref())?.join("pg_verifybackup");
        let out = Command::new(&bin)
            .args(["-n", "-q"])
            .arg(&dir)
            .output()
            .map_err(|e| Error::failed(format!("cannot run {}: {e}", bin.display())))?;
        if out.status.success() {
            checks.push("pg_verifybackup: every file matches backup_manifest".into());
        } else {
            problems.push(format!(
                "pg_verifybackup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PayloadCheck {
        checks,
        problems,
        tables: None,
    })
}

#[cfg(test)]
mod recovery_settings_tests {
    use super::*;

    #[test]
    fn inherited_and_own_recovery_settings_are_removed_and_nothing_else() {
        let carried = "# Do not edit this file manually!\nshared_buffers = '256MB'\n\
                       recovery_target_time = '2026-01-01 00:00:00+00'\nrestore_command = 'cp x %p'\n\
                       # dbsafe: recovery from a base backup\nrecovery_target_name = 'x'\n\
                       recovery_target_action = 'promote'\n# dbsafe: end of recovery settings\n\
                       port = 5433\narchive_mode = off\n";
        let kept = without_recovery_settings(carried);
        assert_eq!(
            kept,
            "# Do not edit this file manually!\nshared_buffers = '256MB'\nport = 5433\narchive_mode = off\n"
        );
    }
}
