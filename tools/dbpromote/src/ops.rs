//! The pieces a promotion is made of: backups taken and verified in a
//! store, restores into side databases, and the operator's shell commands.

use crate::cli::Commands;
use crate::{Ctx, EnvSpec, Plan};
use dbsafe::artifact::Artifact;
use dbsafe::catalog::{self, Selector};
use dbsafe::cleanup::ActionGuard;
use dbsafe::engine::side::Home;
use dbsafe::engine::{Engine, RestoreOptions, SnapshotOptions};
use dbsafe::lock::Lock;
use dbsafe::meta::Metadata;
use dbsafe::progress::Progress;
use dbsafe::release::{BackupRef, Kind, Manifest};
use dbsafe::restore::{Flow, Target};
use dbsafe::snapshot::{self, Destination, SnapshotRequest};
use dbsafe::verify::{self, Level, Settings};
use dbsafe::{store, Error, Result, Store};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// What a promotion works on, once checked and opened: the two
/// environments, the target's engine and its side-database home.
pub(crate) struct Parts<'a> {
    pub version: &'a str,
    pub source: &'a EnvSpec,
    pub target: &'a EnvSpec,
    pub engine: &'a dyn Engine,
    pub home: &'a dyn Home,
}

impl Parts<'_> {
    /// A dry run's first step for the target: its promotion lock.
    pub fn lock_step(&self) -> String {
        format!(
            "take a lock on promotions of {} in store {}",
            self.target.name, self.target.store
        )
    }

    /// A dry run's step that records the promotion: the manifest in the
    /// target's store (and in `also`, a second store), the audit log and
    /// the metrics.
    pub fn record_step(&self, also: Option<&str>) -> String {
        let also = also.map(|s| format!(" (and {s})")).unwrap_or_default();
        format!(
            "write {} in store {}{also}, the audit log and the metrics",
            dbsafe::release::manifest_key(&self.target.name, self.version),
            self.target.store
        )
    }

    /// The manifest of a promotion of `kind` from the source to the target,
    /// with the target's commands it runs.
    pub fn manifest(&self, kind: Kind) -> Manifest {
        let mut m = Manifest::new(
            kind,
            self.version,
            &self.source.name,
            &self.target.name,
            &self.engine.database(),
            &self.engine.url(),
        );
        let runs = match kind {
            Kind::Release => self.target.commands.clone(),
            // A refresh is undone by swapping the previous database back.
            Kind::Refresh => Commands {
                downgrade: None,
                ..self.target.commands.clone()
            },
        };
        m.commands = runs
            .named()
            .map(|(name, cmd)| (name.to_string(), cmd.to_string()))
            .collect();
        m
    }

    /// The dry run's plan of a promotion of `kind` from the source to the target.
    pub fn plan(&self, kind: &str, steps: Vec<String>) -> Plan {
        Plan {
            dry_run: true,
            kind: kind.into(),
            version: self.version.into(),
            from: Some(self.source.name.clone()),
            to: self.target.name.clone(),
            target: self.engine.url(),
            store: self.target.store.clone(),
            steps,
        }
    }
}

/// A backup in a store that a promotion uses.
pub(crate) struct Backup {
    pub r: BackupRef,
    pub key: String,
    pub meta: Option<Metadata>,
}

impl Backup {
    /// The artifact in `store`, with the checksum and metadata already known.
    fn artifact<'a>(&self, store: &'a dyn Store) -> Artifact<'a> {
        let a = Artifact::stored(store, &self.key).with_sha256(&self.r.checksum);
        match &self.meta {
            Some(m) => a.with_meta(m.clone()),
            None => a,
        }
    }
}

/// Takes a snapshot of `engine` into `store` as environment `env`.
pub(crate) fn take_backup(
    ctx: &Ctx,
    engine: &dyn Engine,
    store: &dyn Store,
    env: &str,
    labels: BTreeMap<String, String>,
) -> Result<Backup> {
    let req = SnapshotRequest {
        env: env.into(),
        compression: ctx.compression(env)?,
        level: ctx.cfg.defaults.level,
        threads: 0,
        encryption: ctx.encryption(env, &store.describe())?,
        max_size: None,
        labels,
        engine: SnapshotOptions {
            tmpdir: ctx.tmpdir.clone(),
            ..Default::default()
        },
        tool: "dbpromote",
        progress: dbsafe::progress::Progress::new("dbpromote", None, ctx.args.common.quiet),
    };
    let report = snapshot::take(
        engine,
        req,
        Destination::Store {
            stores: vec![store],
            update_latest: true,
            min_free: None,
            lock_timeout: ctx.lock_timeout,
        },
    )?;
    ctx.log.debug(report.summary_line());
    Ok(Backup {
        r: BackupRef {
            name: report.meta.file.clone(),
            store: store.describe(),
            environment: env.into(),
            checksum: report.meta.checksum.clone(),
            taken_at: report.meta.started_at.clone(),
            verified: false,
        },
        key: report.location,
        meta: Some(report.meta),
    })
}

/// A backup already in `store`: by name, or the newest verified one of `env`'s `database`.
pub(crate) fn existing_backup(
    store: &dyn Store,
    env: &str,
    database: &str,
    name: Option<&str>,
) -> Result<Backup> {
    let entries = catalog::list(store)?;
    let entry = match name {
        Some(n) => catalog::select_one(
            &entries,
            &Selector {
                name: Some(n.into()),
                ..Default::default()
            },
        )
        .map_err(|e| e.context(format!("store {}", store.describe())))
        .and_then(|e| {
            // Another environment's backup would bring its data without its
            // rules (a sensitive one's masking): never in its place.
            if e.name.env == env && e.name.database == database {
                return Ok(e);
            }
            Err(Error::refused(format!(
                "{} is a backup of {}'s database {}, not of {env}'s database {database}; nothing was changed",
                e.file(),
                e.name.env,
                e.name.database
            ))
            .hint(format!("name a backup of {env}, or promote from {}", e.name.env)))
        })?,
        None => {
            let mut found = None;
            for e in entries.iter().rev().filter(|e| {
                e.name.env == env
                    && e.name.database == database
                    && e.name.kind == dbsafe::Kind::Full
            }) {
                if Artifact::entry(store, e)
                    .verify_record()?
                    .is_some_and(|v| v.passed())
                {
                    found = Some(e.clone());
                    break;
                }
            }
            found.ok_or_else(|| {
                Error::not_found(format!(
                    "store {} has no verified backup of {env}'s database {database}",
                    store.describe()
                ))
                .hint(format!("verify one (dbverify --store {} --latest), or leave out --latest-verified to take a new snapshot", store.describe()))
            })?
        }
    };
    let artifact = Artifact::entry(store, &entry);
    let meta = artifact.meta()?;
    let checksum = match artifact.expected_sha256()? {
        Some(c) => c,
        None => meta.as_ref().map(|m| m.checksum.clone()).ok_or_else(|| {
            Error::failed(format!(
                "{} has neither a .sha256 nor a .meta.json sidecar",
                entry.file()
            ))
        })?,
    };
    Ok(Backup {
        r: BackupRef {
            name: entry.file(),
            store: store.describe(),
            environment: entry.name.env.clone(),
            checksum,
            taken_at: entry.name.timestamp.to_rfc3339(),
            verified: false,
        },
        key: entry.key().to_string(),
        meta,
    })
}

/// The labels of a backup a promotion takes: why, and which promotion
/// (`kind` = `release` or `refresh`, valued with its version).
pub(crate) fn labels(purpose: String, kind: &str, version: &str) -> BTreeMap<String, String> {
    [
        ("purpose".to_string(), purpose),
        (kind.to_string(), version.to_string()),
    ]
    .into()
}

/// Verifies a backup in its store at level full and records `.verify.json`;
/// a failed verification is an error.
pub(crate) fn verify_backup(ctx: &Ctx, store: &dyn Store, b: &Backup) -> Result<String> {
    let artifact = b.artifact(store);
    let rec = verify::verify(
        &artifact,
        &Settings {
            level: Level::Full,
            keys: &ctx.keys,
            scratch: None,
            tmpdir: ctx.tmpdir.clone(),
            tool: "dbpromote",
            wal: None,
            no_roles: false,
        },
        Progress::hidden(),
    )?;
    artifact.write_verify_record(&rec)?;
    if !rec.passed() {
        return Err(Error::failed(format!(
            "{} failed verification: {}",
            b.r.name,
            rec.problems.join("; ")
        )));
    }
    Ok(format!("{}: level full, pass", b.r.name))
}

/// Restores a backup into `side` (created), checks the artifact's checksum
/// and the row counts against the metadata.
pub(crate) fn restore_into(
    ctx: &Ctx,
    store: &dyn Store,
    b: &Backup,
    side: &dyn Engine,
) -> Result<String> {
    let opts = RestoreOptions {
        create: true,
        tmpdir: ctx.tmpdir.clone(),
        ..Default::default()
    };
    let report = Flow::new(&ctx.keys)
        .restore(
            &b.artifact(store),
            Target::Engine(side),
            &opts,
            Progress::hidden(),
        )?
        .finished()?;
    if !report.problems.is_empty() {
        return Err(Error::failed(format!(
            "the restored copy does not match {}: {}",
            b.r.name,
            report.problems.join("; ")
        )));
    }
    Ok(format!(
        "{} restored into {}: {} tables{}",
        b.r.name,
        side.url(),
        report.tables.map_or(0, |t| t.len()),
        if report.compared.is_some() {
            ", row counts match"
        } else {
            ""
        }
    ))
}

/// A side database this run made; removed on drop (and on interruption)
/// unless it was swapped in.
pub(crate) struct SideDb<'a> {
    home: &'a dyn Home,
    pub name: String,
    engine: Box<dyn Engine>,
    _on_interrupt: ActionGuard,
    done: bool,
}

impl<'a> SideDb<'a> {
    /// A side `name` of `home` (not created yet: a restore creates it).
    pub fn new(home: &'a dyn Home, name: String) -> Result<SideDb<'a>> {
        let engine = home.engine_of(&name)?;
        let doomed = home.engine_of(&name)?;
        Ok(SideDb {
            home,
            name,
            engine,
            _on_interrupt: ActionGuard::new(move || {
                let _ = doomed.drop_target();
            }),
            done: false,
        })
    }

    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// Removes it now.
    pub fn remove(mut self) -> Result<String> {
        self.done = true;
        self.home.remove(&self.name)?;
        Ok(format!("dropped {}", self.name))
    }

    /// It is no longer a side (it was swapped in).
    pub fn keep(mut self) {
        self.done = true;
    }
}

impl Drop for SideDb<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.home.remove(&self.name);
        }
    }
}

/// What a promotion holds on its target while it runs: the environment's
/// promotion lock, and the audit log opened for its entry.
pub(crate) struct Hold {
    _lock: Lock,
    /// The target store's audit log.
    pub audit: dbsafe::audit::Log,
}

/// Takes the promotion lock of environment `env` on its store, opens its
/// audit log (a promotion the log cannot record is refused before it
/// starts), then drops the sides killed runs left next to its database. A
/// dry run, or one without a store yet, takes no lock and drops nothing
/// (`None`).
pub(crate) fn lock_target(
    ctx: &Ctx,
    store: Option<&dyn Store>,
    home: &dyn Home,
    env: &str,
) -> Result<Option<Hold>> {
    let Some(store) = store.filter(|_| !ctx.args.change.dry_run) else {
        return Ok(None);
    };
    let lock = Lock::on_store(store, &format!("promote-{env}"), ctx.lock_timeout)?;
    let audit = dbsafe::audit::Log::of(store)?;
    sweep_sides(home)?;
    Ok(Some(Hold { _lock: lock, audit }))
}

/// Drops the working sides (refresh, rehearsal, restore) that killed runs
/// left next to the target. Called with the target's promotion lock held,
/// so no live promotion of it is using one.
fn sweep_sides(home: &dyn Home) -> Result<()> {
    for kind in ["refresh", "rehearsal", "restore"] {
        for name in dbsafe::engine::side::stale_sides(home, kind)? {
            home.remove(&name)?;
            dbsafe::output::warn(format!("dropped {name}, left by a run that was killed"));
        }
    }
    Ok(())
}

/// The environment of a command run against database `name` of `home`.
pub(crate) fn command_env(
    home: &dyn Home,
    name: &str,
    env: &str,
    version: &str,
    phase: &str,
) -> Vec<(String, String)> {
    let mut v = home.child_env(name);
    v.push(("DBPROMOTE_ENV".into(), env.into()));
    v.push(("DBPROMOTE_VERSION".into(), version.into()));
    v.push(("DBPROMOTE_PHASE".into(), phase.into()));
    v
}

/// How many lines of a failed command's output the error keeps.
const TAIL: usize = 8;

/// Runs `cmd` with `sh -c`; its output goes to stderr, prefixed with `label`.
pub(crate) fn shell(ctx: &Ctx, label: &str, cmd: &str, env: &[(String, String)]) -> Result<String> {
    let clock = std::time::Instant::now();
    // A group of its own: an interrupt ends what the command started too,
    // whose output would otherwise keep the readers below waiting.
    let (mut child, _guard) = dbsafe::cleanup::spawn_in_group(
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::Interrupted => {
            Error::interrupted().context(format!("{label} `{cmd}` was not run"))
        }
        _ => Error::failed(format!("cannot run sh for {label}: {e}")),
    })?;
    ctx.log.info(format!("{label}: running `{cmd}`"));
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let quiet = ctx.args.common.quiet;
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let tail = Arc::clone(&tail);
        let label = label.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(|l| l.ok()) {
                if !quiet {
                    dbsafe::errln!("dbpromote: [{label}] {line}");
                }
                let mut t = tail.lock().expect("tail lock");
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
    })
    .collect();
    let status = child
        .wait()
        .map_err(|e| Error::failed(format!("waiting for {label}: {e}")))?;
    for r in readers {
        let _ = r.join();
    }
    let took = dbsafe::units::human_duration(clock.elapsed());
    if status.success() {
        return Ok(format!("`{cmd}` succeeded in {took}"));
    }
    let lines: Vec<String> = tail.lock().expect("tail lock").iter().cloned().collect();
    let mut msg = format!("{label} `{cmd}` failed ({status}) after {took}");
    if !lines.is_empty() {
        msg.push_str(&format!("; last output: {}", lines.join(" | ")));
    }
    Err(Error::failed(msg))
}

/// Opens a store, creating a missing one; in a dry run it creates nothing,
/// and a missing local store is no error (`None`).
pub(crate) fn open_store(location: &str, dry_run: bool) -> Result<Option<Box<dyn Store>>> {
    match store::open(location, !dry_run) {
        Ok(s) => Ok(Some(s)),
        Err(_) if dry_run && !location.contains("://") => Ok(None),
        Err(e) => Err(e),
    }
}

/// sha256 of a file, hex, for the manifest's record of a script.
pub(crate) fn file_sha256(path: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}
