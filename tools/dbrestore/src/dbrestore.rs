//! dbrestore: restore a backup.
#![forbid(unsafe_code)]

pub mod cli;
mod pitr;

use dbsafe::artifact::{Artifact, Sidecar};
use dbsafe::audit::AuditEntry;
use dbsafe::catalog::{self, Selector};
use dbsafe::cli::Log;
use dbsafe::config::Config;
use dbsafe::engine::{Engine, RestoreOptions, SnapshotOptions};
use dbsafe::meta::Metadata;
use dbsafe::progress::Progress;
use dbsafe::restore::{Flow, Target};
use dbsafe::snapshot::{self, Destination, SnapshotRequest};
use dbsafe::verify::{self, Level, Settings};
use dbsafe::{ArtifactName, Encryption, Error, ExitCode, Keyring, Result, Store};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the artifact comes from: an argument (a file or `-`), or a store selection.
enum Source {
    Arg(String),
    Store {
        store: Box<dyn Store>,
        entry: catalog::Entry,
    },
}

impl Source {
    fn artifact(&self) -> Artifact<'_> {
        match self {
            Source::Arg(a) => Artifact::from_arg(a),
            Source::Store { store, entry } => Artifact::entry(store.as_ref(), entry),
        }
    }
    fn store(&self) -> Option<&dyn Store> {
        match self {
            Source::Store { store, .. } => Some(store.as_ref()),
            Source::Arg(_) => None,
        }
    }
}

/// The plan `--dry-run` prints and `--json` reports.
#[derive(Debug, Serialize)]
struct Plan {
    artifact: String,
    target: String,
    target_exists: bool,
    target_tables: usize,
    verify_first: bool,
    safety_backup: Option<String>,
    confirmation: bool,
    tables: Vec<String>,
    steps: Vec<String>,
}

/// What a restore that ran produced.
struct Restored {
    /// What was found wrong afterwards.
    problems: Vec<String>,
    /// Tables whose row counts were compared with the metadata's.
    checked: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    plan: Plan,
    result: String,
    safety_backup: Option<String>,
    problems: Vec<String>,
    duration_seconds: f64,
}

/// Runs dbrestore with parsed arguments.
pub fn run(args: cli::Cli) -> Result<ExitCode> {
    let log = args.common.log("dbrestore");
    let cfg = Config::load(args.common.config.as_deref())?;
    let keys = args.keys.keyring(&cfg)?;
    let tmpdir = args.tmpdir.dir();
    if args.pgdata.is_some() {
        return pitr::run(&args, &log, &cfg, &keys);
    }
    let source = resolve_source(&args, &cfg)?;
    // While its backup is read, dbprune deletes nothing of its series.
    let _reading = match &source {
        Source::Store { store, entry } => {
            dbsafe::lock::Lock::reading(store.as_ref(), &entry.name.series_id())?
        }
        Source::Arg(_) => None,
    };
    let artifact = source.artifact();
    let meta = artifact.meta()?;
    let target = dbsafe::engine::open(
        args.target
            .as_deref()
            .expect("clap requires --target without --pgdata"),
    )?;
    let target_tables = if target.exists()? {
        target.tables()?
    } else {
        Vec::new()
    };
    let non_empty = !target_tables.is_empty();
    if !target.exists()? && !args.create && target.replace_needs_clean() {
        return Err(
            Error::not_found(format!("target {} does not exist", target.url()))
                .hint("pass --create to create it"),
        );
    }
    if non_empty && target.replace_needs_clean() && !args.clean && args.tables.is_empty() {
        return Err(
            Error::refused(format!("target {} is not empty", target.url()))
                .hint("pass --clean to replace it or choose another --target"),
        );
    }
    let safety = if non_empty && !args.no_safety_backup {
        Some(safety_location(&args, &cfg, &source)?)
    } else {
        None
    };
    // Verifying while restoring needs a new target to remove again, and a
    // recorded checksum to prove the bytes (a bare file gets the structural
    // check first: a truncated SQL dump restores without an error).
    let during = !target.exists()? && artifact.expected_sha256()?.is_some();
    let check = Check::of(&args, artifact.is_stdin(), target.as_ref(), during);
    let verify_first = check != Check::Skipped;
    let plan = Plan {
        artifact: artifact.describe(),
        target: target.url(),
        target_exists: target.exists()?,
        target_tables: target_tables.len(),
        verify_first,
        safety_backup: safety.as_ref().map(|s| s.describe()),
        confirmation: non_empty && !args.change.yes,
        tables: args.tables.clone(),
        steps: plan_steps(&args, check, non_empty, &safety, target.as_ref()),
    };
    if args.change.dry_run {
        if args.common.json {
            dbsafe::cli::print_json(&plan)?;
        } else {
            dbsafe::outln!("dbrestore plan (dry run, nothing changed):")?;
            for (i, s) in plan.steps.iter().enumerate() {
                dbsafe::outln!("  {}. {s}", i + 1)?;
            }
        }
        return Ok(ExitCode::Success);
    }
    // A confirmation that cannot be asked refuses now, not after a
    // verification that may take as long as the restore.
    if non_empty {
        args.change
            .require_confirmation_possible(&target.database())?;
    }

    let clock = Instant::now();
    let mut audit = AuditEntry::new("dbrestore", "restore", &artifact.describe(), &target.url());
    let audit_log = std::sync::Arc::new(dbsafe::audit::Log::open(&audit_path(&source, &safety))?);
    let restoring = Restoring {
        safety_taken: Default::default(),
        on_interrupt: Default::default(),
        audit: (std::sync::Arc::clone(&audit_log), audit.clone(), clock),
        args: &args,
        cfg: &cfg,
        log: &log,
        keys: &keys,
        artifact: &artifact,
        meta: meta.as_ref(),
        target: target.as_ref(),
        tmpdir: &tmpdir,
    };
    let result = restoring.execute(check, non_empty, safety.as_ref());
    // From here the entry below is written: an interrupt no longer writes
    // its own. Its guard was set when the restore began writing.
    let began = restoring.on_interrupt.take().is_some();
    audit.duration_seconds = clock.elapsed().as_secs_f64();
    let safety_name = restoring.safety_taken.take();
    let (problems, checked, err) = match result {
        Ok(r) => (r.problems, r.checked, None),
        Err(e) => (vec![e.to_string()], None, Some(e)),
    };
    // A refusal before anything was touched is not an action worth
    // auditing; a run that wrote into the target is, however it ended (a
    // store's credentials that fail mid-restore are exit 2).
    let touched = began
        || !matches!(
            err.as_ref().map(|e| e.code()),
            Some(ExitCode::Refused) | Some(ExitCode::Usage)
        );
    if touched {
        audit.result = if problems.is_empty() {
            "success"
        } else {
            "failure"
        }
        .into();
        // `selected_tables`: the --tables selection (empty: all);
        // `tables_checked`: how many were compared with the metadata's row counts.
        audit.details = serde_json::json!({
            "selected_tables": args.tables, "tables_checked": checked,
            "safety_backup": safety_name, "problems": problems,
            "verified_first": verify_first,
        });
        record(&audit_log, &audit, &log);
    }
    if let Some(e) = err {
        if let Some(name) = &safety_name {
            log.warn(safety_note(name));
        }
        return Err(e);
    }
    if args.common.json {
        dbsafe::cli::print_json(&Outcome {
            plan,
            result: if problems.is_empty() {
                "success"
            } else {
                "failure"
            }
            .into(),
            safety_backup: safety_name,
            problems: problems.clone(),
            duration_seconds: clock.elapsed().as_secs_f64(),
        })?;
    }
    if problems.is_empty() {
        log.info(format!(
            "restored {} into {} in {}",
            artifact.describe(),
            target.url(),
            dbsafe::units::human_duration(clock.elapsed())
        ));
        Ok(ExitCode::Success)
    } else {
        for p in &problems {
            dbsafe::errln!("dbrestore: problem after restore: {p}");
        }
        Ok(ExitCode::Failure)
    }
}

/// When the artifact is verified.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    /// Before anything is touched (level full), then restored from a second read.
    First,
    /// While it is decoded once into a file for parallel restore workers,
    /// before anything is touched.
    Spooled,
    /// While it is restored into a target this restore creates, which is
    /// removed again if the artifact fails (its recorded checksum, every
    /// layer): nothing that existed is touched by a bad artifact, and the
    /// artifact is read once.
    During,
    /// Only what the restore itself reads (--skip-verify, stdin).
    Skipped,
}

impl Check {
    fn of(args: &cli::Cli, stdin: bool, target: &dyn Engine, during: bool) -> Check {
        if stdin {
            Check::Skipped
        } else if args.jobs() > 1 && target.restores_in_parallel() {
            Check::Spooled
        } else if args.skip_verify {
            Check::Skipped
        } else if during {
            Check::During
        } else {
            Check::First
        }
    }
}

fn plan_steps(
    args: &cli::Cli,
    check: Check,
    non_empty: bool,
    safety: &Option<SafetyDest>,
    target: &dyn Engine,
) -> Vec<String> {
    let mut steps = Vec::new();
    let jobs = args.jobs();
    match check {
        Check::Spooled => steps.push(format!(
            "decode the artifact once into a private temporary file{}",
            if args.skip_verify {
                ""
            } else {
                ", verifying it (level full)"
            }
        )),
        Check::First => steps.push("verify the artifact (level full)".to_string()),
        Check::During | Check::Skipped => {}
    }
    if non_empty {
        steps.push(args.change.confirm_step(&target.database()));
    }
    if let Some(cmd) = &args.before_cmd {
        steps.push(format!("run --before-cmd `{cmd}`"));
    }
    if non_empty {
        match safety {
            Some(s) => steps.push(format!(
                "safety backup of {} into {}",
                target.url(),
                s.describe()
            )),
            None => steps.push("no safety backup (--no-safety-backup)".into()),
        }
    }
    if args.tables.is_empty() {
        steps.push(match check {
            Check::Spooled => format!(
                "restore into {} with {jobs} pg_restore workers",
                target.url()
            ),
            Check::During => format!(
                "restore into the new {}, verifying the artifact as it is read (level full: checksum, every layer); a failure removes it again",
                target.url()
            ),
            _ => format!("restore into {}", target.url()),
        });
    } else {
        steps.push(format!(
            "restore tables {} into {}",
            args.tables.join(", "),
            target.url()
        ));
    }
    steps.push("compare tables and row counts with the metadata".into());
    if let Some(cmd) = &args.after_cmd {
        steps.push(format!("run --after-cmd `{cmd}`, whatever happened"));
    }
    steps.push("append an audit entry".into());
    steps
}

fn resolve_source(args: &cli::Cli, cfg: &Config) -> Result<Source> {
    let selecting =
        args.latest || args.timestamp.is_some() || args.before.is_some() || args.name.is_some();
    match (&args.artifact, selecting) {
        (Some(_), true) => Err(Error::usage("give an artifact or a store selection (--latest, --timestamp, --before, --name), not both")),
        (Some(a), false) => Ok(Source::Arg(a.clone())),
        (None, false) => Err(Error::usage("nothing to restore").hint("name an artifact, `-` for stdin, or --store STORE --latest")),
        (None, true) => {
            let env = args.env.clone();
            let loc = args
                .store
                .clone()
                .or_else(|| cfg.store_for(env.as_deref().unwrap_or("default")))
                .ok_or_else(|| Error::usage("--latest, --timestamp, --before and --name need --store STORE (or DBSAFE_STORE)"))?;
            let store = dbsafe::store::open(&loc, false)?;
            let entries = catalog::list(store.as_ref())?;
            if let Some(t) = &args.timestamp {
                if chrono::NaiveDateTime::parse_from_str(t, "%Y%m%d_%H%M%S").is_err() {
                    return Err(Error::usage(format!(
                        "--timestamp {t:?}: backups are named to the second, YYYYMMDD_HHMMSS (e.g. 20250118_010000)"
                    ))
                    .hint("or --before TIME (RFC 3339 or \"YYYY-MM-DD HH:MM:SS\") for the newest at or before it"));
                }
            }
            let sel = Selector {
                env,
                database: args.database.clone(),
                latest: args.latest,
                timestamp: args.timestamp.clone(),
                before: args.before.as_deref().map(dbsafe::units::parse_time).transpose()?,
                name: args.name.clone(),
                // The target decides which engine's series: never another engine's backup.
                payload: args
                    .target
                    .as_deref()
                    .and_then(|t| dbsafe::engine::open(t).ok())
                    .map(|e| e.payload(false)),
            };
            let entry = catalog::select_one(&entries, &sel)?;
            Ok(Source::Store { store, entry })
        }
    }
}

/// Where a safety backup goes.
enum SafetyDest {
    Store(Box<dyn Store>),
    Dir(PathBuf),
    /// A dry run's store that does not exist yet (the run would create it).
    NewStore(String),
}

impl SafetyDest {
    fn describe(&self) -> String {
        match self {
            SafetyDest::Store(s) => s.describe(),
            SafetyDest::Dir(d) => d.display().to_string(),
            SafetyDest::NewStore(loc) => format!("{loc} (created)"),
        }
    }
}

fn safety_location(args: &cli::Cli, cfg: &Config, source: &Source) -> Result<SafetyDest> {
    if let Some(d) = &args.safety_dir {
        return Ok(SafetyDest::Dir(d.clone()));
    }
    if let Some(store) = source.store() {
        return Ok(SafetyDest::Store(dbsafe::store::open(
            &store.describe(),
            false,
        )?));
    }
    let env = args.env.clone().unwrap_or_else(|| "default".into());
    match args.store.clone().or_else(|| cfg.store_for(&env)) {
        // A dry run creates nothing, not even the store.
        Some(loc) if args.change.dry_run => match dbsafe::store::open(&loc, false) {
            Ok(store) => Ok(SafetyDest::Store(store)),
            Err(e) if e.code() == dbsafe::ExitCode::NotFound => Ok(SafetyDest::NewStore(loc)),
            Err(e) => Err(e),
        },
        Some(loc) => Ok(SafetyDest::Store(dbsafe::store::open(&loc, true)?)),
        None => Err(Error::usage(
            "the target is not empty and there is nowhere to put its safety backup",
        )
        .hint("pass --store STORE or --safety-dir DIR (or --no-safety-backup to go without one)")),
    }
}

fn audit_path(source: &Source, safety: &Option<SafetyDest>) -> PathBuf {
    match (source.store(), safety) {
        (Some(store), _) => dbsafe::audit::log_for(store),
        (_, Some(SafetyDest::Store(s))) => dbsafe::audit::log_for(s.as_ref()),
        _ => dbsafe::audit::default_log_path(),
    }
}

/// Safety backups are encrypted to the configured recipients, else to the
/// restored artifact's own recipients: data that was encrypted at rest stays so.
fn safety_encryption(
    cfg: &Config,
    keys: &Keyring,
    meta: Option<&Metadata>,
    artifact: &Artifact<'_>,
) -> Result<Encryption> {
    // Exactly as the artifact being restored: its recipients, or the same
    // passphrase; never weaker. Its bytes say whether it is encrypted,
    // whatever its name (`-` for stdin) or its metadata say.
    let encrypted = artifact.encrypted()? || meta.is_some_and(|m| m.encryption == "age");
    let like = keys.encryption_like(
        encrypted,
        meta.map(|m| m.recipients.as_slice()).unwrap_or(&[]),
    )?;
    if like.is_encrypted() {
        return Ok(like);
    }
    // A plain artifact: the environment's own recipients, when it has some.
    let mut inline: Vec<String> = std::env::var("DBSAFE_RECIPIENTS")
        .ok()
        .into_iter()
        .collect();
    let mut files: Vec<PathBuf> = std::env::var_os("DBSAFE_RECIPIENTS_FILE")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if inline.is_empty() && files.is_empty() {
        files.extend(cfg.defaults.recipients_file.clone());
        inline.extend(cfg.defaults.recipients.clone().unwrap_or_default());
    }
    Encryption::from_sources(&inline, &files, None)
}

/// Appends a restore's audit entry; a log that cannot take it only warns,
/// once the restore is done.
fn record(audit_log: &dbsafe::audit::Log, entry: &AuditEntry, log: &Log) {
    if let Err(e) = audit_log.append(entry) {
        log.warn(format!(
            "cannot write the audit log {}: {e}",
            audit_log.path().display()
        ));
    }
}

/// Where the target's contents went, for a restore that did not finish.
fn safety_note(name: &str) -> String {
    format!("the target's contents from before this restore are in the safety backup {name}")
}

/// One restore: what it restores, into what, with which keys and settings.
struct Restoring<'a> {
    /// Where the safety backup went, once taken: a restore that fails after
    /// it names it too.
    safety_taken: std::cell::RefCell<Option<String>>,
    /// Once the restore writes into the target (from there the run is
    /// audited whatever its exit code says): what an interrupt (SIGINT,
    /// SIGTERM) writes to the audit log before the tool ends.
    on_interrupt: std::cell::RefCell<Option<dbsafe::cleanup::ActionGuard>>,
    /// The audit log, the run's entry, and when the run began.
    audit: (std::sync::Arc<dbsafe::audit::Log>, AuditEntry, Instant),
    args: &'a cli::Cli,
    cfg: &'a Config,
    log: &'a Log,
    keys: &'a Keyring,
    artifact: &'a Artifact<'a>,
    meta: Option<&'a Metadata>,
    target: &'a dyn Engine,
    tmpdir: &'a std::path::Path,
}

impl Restoring<'_> {
    /// Verifies, confirms, takes the safety backup of a non-empty target, then
    /// restores; returns where the safety backup went and the problems found.
    fn execute(
        &self,
        check: Check,
        non_empty: bool,
        safety: Option<&SafetyDest>,
    ) -> Result<Restored> {
        let Restoring {
            args,
            log,
            keys,
            artifact,
            target,
            tmpdir,
            ..
        } = *self;
        let flow = Flow {
            keys,
            tables: args.tables.clone(),
        };
        let spool = match check {
            Check::Spooled => {
                // Decoded once, verified on the way, restored by parallel workers.
                let (report, spool) = flow.spool(artifact, tmpdir, Progress::hidden())?;
                self.verified(report.passed(), &report.all_problems())?;
                match spool {
                    Ok(spool) => Some(spool),
                    Err(why) => {
                        log.warn(format!(
                            "restoring from the stream: no decoded copy on disk ({why})"
                        ));
                        None
                    }
                }
            }
            Check::First => {
                let rec = verify::verify(
                    artifact,
                    &Settings {
                        level: Level::Full,
                        keys,
                        scratch: None,
                        tmpdir: tmpdir.to_path_buf(),
                        tool: "dbrestore",
                        wal: None,
                        no_roles: false,
                    },
                    Progress::hidden(),
                )?;
                self.verified(rec.passed(), &rec.problems)?;
                None
            }
            Check::During | Check::Skipped => None,
        };
        if non_empty {
            args.change.confirm(
                "dbrestore",
                &format!("replace the contents of {}", target.url()),
                &target.database(),
            )?;
        }
        // The after hook runs whatever happened once the before hook was
        // tried: what it stopped is started again.
        let restored = match self.hook("--before-cmd", args.before_cmd.as_deref(), None) {
            Ok(()) => self.replace(check, non_empty, safety, spool.as_ref(), &flow),
            Err(e) => Err(e.context("nothing was changed")),
        };
        let after = self.hook("--after-cmd", args.after_cmd.as_deref(), Some(&restored));
        let restored = restored?;
        after?;
        Ok(restored)
    }

    /// The audit entry of a restore interrupted once it touched the target,
    /// written by the interrupt, naming the safety backup there too.
    fn audit_on_interrupt(&self) -> dbsafe::cleanup::ActionGuard {
        let (log, mut entry, started) = self.audit.clone();
        let safety = self.safety_taken.borrow().clone();
        let out = *self.log;
        dbsafe::cleanup::ActionGuard::new(move || {
            entry.result = "interrupted".into();
            entry.duration_seconds = started.elapsed().as_secs_f64();
            entry.details = serde_json::json!({
                "safety_backup": safety, "problems": ["interrupted (SIGINT or SIGTERM)"],
            });
            record(&log, &entry, &out);
            if let Some(name) = &safety {
                out.warn(safety_note(name));
            }
        })
    }

    /// Runs a --before-cmd/--after-cmd hook with the target in its
    /// environment (and, after, how the restore went); a hook that fails is
    /// a failed run.
    fn hook(
        &self,
        flag: &str,
        cmd: Option<&str>,
        outcome: Option<&Result<Restored>>,
    ) -> Result<()> {
        let Some(cmd) = cmd else {
            return Ok(());
        };
        let mut env = vec![
            ("DBSAFE_TOOL", "dbrestore".to_string()),
            ("DBSAFE_ACTION", "restore".to_string()),
            ("DBSAFE_TARGET", self.target.url()),
            ("DBSAFE_DATABASE", self.target.database()),
            ("DBSAFE_BACKUP", self.artifact.describe()),
        ];
        if let Some(outcome) = outcome {
            let (result, message) = match outcome {
                Ok(r) if r.problems.is_empty() => ("success", String::new()),
                Ok(r) => ("failure", r.problems.join("; ")),
                Err(e) => ("failure", e.to_string()),
            };
            env.push(("DBSAFE_RESULT", result.to_string()));
            env.push(("DBSAFE_MESSAGE", message));
        }
        self.log.debug(format!("running {flag} `{cmd}`"));
        dbsafe::notify::run_shell(cmd, &env, None)
            .map_err(|why| Error::failed(format!("{flag} failed: {why}")))
    }

    /// Takes the safety backup of a non-empty target, then restores into it
    /// (from the decoded copy when there is one).
    fn replace(
        &self,
        check: Check,
        non_empty: bool,
        safety: Option<&SafetyDest>,
        spool: Option<&dbsafe::restore::Spool>,
        flow: &Flow<'_>,
    ) -> Result<Restored> {
        let Restoring {
            args,
            log,
            artifact,
            target,
            tmpdir,
            ..
        } = *self;
        let jobs = args.jobs();
        if let Some(dest) = safety.filter(|_| non_empty) {
            let name = self.safety_backup(dest)?;
            *self.safety_taken.borrow_mut() = Some(name);
        }
        let opts = RestoreOptions {
            tables: args.tables.clone(),
            clean: args.clean,
            create: args.create,
            tmpdir: tmpdir.to_path_buf(),
            no_owner: args.no_owner,
            no_roles: args.no_roles,
            jobs,
            ..Default::default()
        };
        *self.on_interrupt.borrow_mut() = Some(self.audit_on_interrupt());
        let report = match spool {
            Some(spool) => {
                log.info(format!(
                    "restoring with {jobs} pg_restore workers from the decoded copy"
                ));
                flow.restore_spooled(artifact, spool, target, &opts)?
            }
            None => {
                let progress = Progress::new("dbrestore", artifact.size(), args.common.quiet);
                flow.restore(artifact, Target::Engine(target), &opts, progress)?
            }
        }
        .finished();
        let report = match report {
            Err(e) if check == Check::During => {
                // Whatever the engine left of its new target goes too.
                let _ = target.drop_target();
                return Err(e.context(format!("{} was removed again", target.url())));
            }
            r => r?,
        };
        if check == Check::During && report.damaged {
            // The target is this restore's own: a bad artifact leaves nothing behind.
            let dropped = target.drop_target();
            self.verified(false, &report.problems)?;
            dropped?;
        }
        match report.compared {
            Some(n) => log.info(format!(
                "{n} tables checked against the metadata's row counts"
            )),
            None => log.warn("no metadata: row counts after the restore were not compared"),
        }
        Ok(Restored {
            problems: report.problems,
            checked: report.compared,
        })
    }

    /// The gate before the target is touched: an artifact that failed
    /// verification is refused unless --skip-verify.
    fn verified(&self, passed: bool, problems: &[String]) -> Result<()> {
        let Restoring {
            args,
            log,
            artifact,
            ..
        } = *self;
        if passed {
            if !args.skip_verify {
                log.info(format!("verified {} (level full)", artifact.describe()));
            }
            return Ok(());
        }
        if args.skip_verify {
            for p in problems {
                log.warn(format!("restoring anyway (--skip-verify): {p}"));
            }
            return Ok(());
        }
        Err(Error::failed(format!(
            "{} failed verification: {}",
            artifact.describe(),
            problems.join("; ")
        ))
        .hint("nothing was changed; pick another backup, or --skip-verify to restore it anyway"))
    }

    /// An unencrypted safety backup where the target's own backups in the
    /// store are encrypted would keep its data weaker than its backups do:
    /// refused unless --no-encrypt.
    fn refuse_weaker_safety(
        args: &cli::Cli,
        enc: &Encryption,
        dest: &SafetyDest,
        target: &dyn Engine,
    ) -> Result<()> {
        let SafetyDest::Store(store) = dest else {
            return Ok(());
        };
        if enc.is_encrypted() || args.no_encrypt {
            return Ok(());
        }
        let encrypted_series = catalog::list(store.as_ref())?.iter().any(|e| {
            e.name.encrypted
                && e.name.database == target.database()
                && e.name.payload == target.payload(false)
        });
        if encrypted_series {
            return Err(Error::refused(format!(
            "the safety backup of {} would be unencrypted, while its backups in {} are encrypted; nothing was changed",
            target.url(),
            store.describe()
        ))
        .hint("give recipients (-r, --recipients-file, DBSAFE_RECIPIENTS) for it, or pass --no-encrypt"));
        }
        Ok(())
    }

    /// Takes the safety backup of the target about to be replaced; returns where it went.
    fn safety_backup(&self, dest: &SafetyDest) -> Result<String> {
        let Restoring {
            args,
            cfg,
            log,
            keys,
            artifact,
            meta,
            target,
            tmpdir,
            ..
        } = *self;
        let req = SnapshotRequest {
            env: format!(
                "{}{}",
                meta.map(|m| m.environment.clone())
                    .or(args.env.clone())
                    .unwrap_or_else(|| "default".into()),
                catalog::SAFETY_SUFFIX
            ),
            compression: dbsafe::Compression::Zstd,
            level: None,
            threads: 0,
            encryption: {
                let enc = safety_encryption(cfg, keys, meta, artifact)?;
                Self::refuse_weaker_safety(args, &enc, dest, target)?;
                enc
            },
            max_size: None,
            labels: [(
                "purpose".to_string(),
                "safety backup before dbrestore".to_string(),
            )]
            .into(),
            engine: SnapshotOptions {
                tmpdir: tmpdir.to_path_buf(),
                ..Default::default()
            },
            tool: "dbrestore",
            progress: Progress::new("dbrestore", None, args.common.quiet),
        };
        let report = match dest {
            SafetyDest::Store(store) => snapshot::take(
                target,
                req,
                Destination::Store {
                    stores: vec![store.as_ref()],
                    update_latest: false,
                    min_free: None,
                    lock_timeout: Duration::ZERO,
                },
            )?,
            SafetyDest::NewStore(_) => unreachable!("a dry run takes no safety backup"),
            SafetyDest::Dir(dir) => {
                dbsafe::fsutil::create_private_dir(dir)?;
                // Two restores into one directory take their names in turn:
                // the second sees the first's, never replaces it.
                let _naming = dbsafe::lock::Lock::on_host_for(
                    dir,
                    "safety-names",
                    Duration::from_secs(3600),
                )?;
                let mut name = ArtifactName {
                    env: req.env.clone(),
                    database: target.database(),
                    kind: dbsafe::Kind::Full,
                    timestamp: chrono::Utc::now(),
                    payload: target.payload(false),
                    compression: req.compression,
                    encrypted: req.encryption.is_encrypted(),
                };
                // Two restores in one second never share a name: the second waits for the next.
                while dir.join(name.to_string()).exists()
                    || dir.join(Sidecar::Meta.of(&name.to_string())).exists()
                {
                    std::thread::sleep(Duration::from_millis(100));
                    name.timestamp = chrono::Utc::now();
                }
                snapshot::take(target, req, Destination::File(dir.join(name.to_string())))?
            }
        };
        log.info(format!("safety backup: {}", report.location));
        Ok(report.location)
    }
}
