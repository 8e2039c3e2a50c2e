//! dbverify: prove a backup is good.
#![forbid(unsafe_code)]

pub mod cli;

use dbsafe::artifact::{self, Artifact};
use dbsafe::catalog::{self, Entry};
use dbsafe::cli::Log;
use dbsafe::config::Config;
use dbsafe::meta::VerifyRecord;
use dbsafe::progress::Progress;
use dbsafe::verify::{self, Settings};
use dbsafe::{Error, ExitCode, Result};

/// Runs dbverify with parsed arguments.
pub fn run(args: cli::Cli) -> Result<ExitCode> {
    let log = args.common.log("dbverify");
    let cfg = Config::load(args.common.config.as_deref())?;
    dbsafe::notify::configure_from(&cfg, args.series.env.as_deref().unwrap_or("default"));
    dbsafe::notify::about(dbsafe::notify::About {
        action: Some(if args.status {
            "status"
        } else if args.list {
            "list"
        } else {
            "verify"
        }),
        store: args.store.as_deref(),
        env: args.series.env.as_deref(),
        database: args.series.database.as_deref(),
        ..Default::default()
    });
    let keys = args.keys.keyring(&cfg)?;
    let settings = Settings {
        level: args.level,
        keys: &keys,
        scratch: args.scratch.clone(),
        tmpdir: args.tmpdir.dir(),
        tool: "dbverify",
        wal: args
            .store
            .as_deref()
            .map(|store| keys.wal_source(store))
            .transpose()?,
        no_roles: args.no_roles,
    };
    if args.status {
        return status(&args, &log, &cfg);
    }
    if args.list {
        return list(&args, &cfg);
    }
    let explicit_store =
        args.store.is_some() && (args.latest || args.all || !args.artifacts.is_empty());
    let records = if args.artifacts.is_empty() && !explicit_store {
        if args.store.is_none() {
            return Err(Error::usage("nothing to verify")
                .hint("name artifact files, `-` for stdin, or --store STORE --latest|--all"));
        }
        return Err(Error::usage(
            "--store needs --latest, --all or backup names",
        ));
    } else if explicit_store {
        verify_store(&args, &settings, &log)?
    } else {
        args.artifacts
            .iter()
            .map(|a| verify_file(a, &args, &settings, &log))
            .collect::<Result<Vec<_>>>()?
    };
    if args.common.json {
        dbsafe::cli::print_json(&records)?;
    }
    let mut samples = Vec::new();
    for rec in records.iter().filter(|r| !r.is_unverified()) {
        // Metrics are per series: artifacts whose names say which.
        let Ok(name) = dbsafe::ArtifactName::parse(&rec.file) else {
            continue;
        };
        let sample = |n, h, v| dbsafe::metrics::Sample::new(n, h, &name.env, &name.database, v);
        samples.push(
            sample(
                "dbsafe_verify_integrity_score",
                "Integrity score of the last verification (matching tables / tables).",
                rec.integrity_score,
            )
            .label("level", &rec.level),
        );
        if rec.passed() {
            let when = chrono::DateTime::parse_from_rfc3339(&rec.verified_at)
                .map(|t| t.timestamp() as f64)
                .unwrap_or(0.0);
            samples.push(sample(
                "dbsafe_verify_last_success_timestamp_seconds",
                "When a verification last passed (Unix time).",
                when,
            ));
        }
    }
    args.common.metrics(&cfg).record("dbverify", &samples);
    Ok(if records.iter().all(VerifyRecord::passed) {
        ExitCode::Success
    } else if records.iter().any(|r| !r.passed() && !r.is_unverified()) {
        ExitCode::Failure
    } else {
        // Nothing failed; something could not be judged (a key, a scratch server).
        ExitCode::Usage
    })
}

fn report(log: &Log, rec: &VerifyRecord) {
    if rec.passed() {
        log.info(format!(
            "PASS {} (level {}, integrity {:.2}, {:.1}s)",
            rec.file, rec.level, rec.integrity_score, rec.duration_seconds
        ));
    } else if rec.is_unverified() {
        dbsafe::errln!(
            "dbverify: COULD NOT VERIFY {} (level {})",
            rec.file,
            rec.level
        );
        for p in &rec.problems {
            dbsafe::errln!("dbverify:   because: {p}");
        }
    } else {
        dbsafe::errln!("dbverify: FAIL {} (level {})", rec.file, rec.level);
        for p in &rec.problems {
            dbsafe::errln!("dbverify:   problem: {p}");
        }
    }
    for c in &rec.checks {
        log.debug(format!("  check: {c}"));
    }
}

fn verify_file(
    artifact: &str,
    args: &cli::Cli,
    s: &Settings<'_>,
    log: &Log,
) -> Result<VerifyRecord> {
    let mut a = Artifact::from_arg(artifact);
    if let Some(h) = &args.sha256 {
        a = a.with_sha256(h);
    }
    if let Some(m) = &args.meta {
        a = a.with_meta(artifact::read_meta_file(m)?);
    }
    let rec = verify_one(&a, s, log)?;
    keep_record(&a, &rec, log);
    Ok(rec)
}

/// Verifies one artifact; what stops the check without judging the
/// artifact (no key, a key that does not fit, no scratch server) is a
/// record of its own.
fn verify_one(a: &Artifact<'_>, s: &Settings<'_>, log: &Log) -> Result<VerifyRecord> {
    let progress = if a.is_stdin() {
        Progress::hidden()
    } else {
        Progress::new("dbverify", a.size(), log.quiet)
    };
    let rec = match verify::verify(a, s, progress) {
        Ok(rec) => rec,
        Err(e) if e.kind == dbsafe::error::Kind::Unavailable => {
            log.warn(format!("could not verify {}: {e}", a.describe()));
            VerifyRecord::unverified(a.file_name(), s.level.as_str(), s.tool, e.to_string())
        }
        Err(e) => return Err(e),
    };
    report(log, &rec);
    Ok(rec)
}

/// Records a verification next to its artifact (a file with sidecars, a
/// store entry). A record that could not judge the artifact never replaces
/// an earlier pass; a place that cannot be written to only warns.
fn keep_record(a: &Artifact<'_>, rec: &VerifyRecord, log: &Log) {
    if rec.is_unverified() && a.verify_record().ok().flatten().is_some_and(|r| r.passed()) {
        log.info(format!(
            "{}: the earlier passing verification stays on record",
            a.describe()
        ));
        return;
    }
    match a.write_verify_record(rec) {
        Ok(true) => log.debug(format!("recorded the verification of {}", a.describe())),
        Ok(false) => {}
        Err(e) => log.warn(format!(
            "the verification of {} could not be recorded: {e}",
            a.describe()
        )),
    }
}

fn verify_store(args: &cli::Cli, s: &Settings<'_>, log: &Log) -> Result<Vec<VerifyRecord>> {
    let loc = args.store.as_deref().expect("checked");
    let store = dbsafe::store::open(loc, false)?;
    let entries = catalog::list(store.as_ref())?;
    let filtered: Vec<Entry> = entries
        .into_iter()
        .filter(|e| args.series.matches(&e.name))
        .collect();
    let chosen: Vec<Entry> = if args.all {
        filtered
    } else if args.latest {
        catalog::newest_per_series(&filtered)
    } else {
        args.artifacts
            .iter()
            .map(|n| {
                catalog::select_one(
                    &filtered,
                    &catalog::Selector {
                        name: Some(n.clone()),
                        ..Default::default()
                    },
                )
            })
            .collect::<Result<_>>()?
    };
    if chosen.is_empty() {
        return Err(Error::not_found(format!(
            "no backup to verify in store {}",
            store.describe()
        )));
    }
    chosen
        .iter()
        .map(|e| {
            // While it is read, dbprune deletes nothing of its series.
            let _reading = dbsafe::lock::Lock::reading(store.as_ref(), &e.name.series_id())?;
            let a = Artifact::entry(store.as_ref(), e);
            let rec = verify_one(&a, s, log)?;
            keep_record(&a, &rec, log);
            Ok(rec)
        })
        .collect()
}

/// The store `--status` or `--list` (`what`) reports on: the flag, else
/// the environment's or the default store of the config file.
fn report_store(
    args: &cli::Cli,
    cfg: &dbsafe::config::Config,
    what: &str,
) -> Result<Box<dyn dbsafe::Store>> {
    let loc = args
        .store
        .clone()
        .or_else(|| cfg.store_for(args.series.env.as_deref().unwrap_or("default")))
        .ok_or_else(|| {
            Error::usage(format!(
                "{what} needs --store STORE (or DBSAFE_STORE, or store in the config file)"
            ))
        })?;
    dbsafe::store::open(&loc, false)
}

/// `--list`: what the store holds.
fn list(args: &cli::Cli, cfg: &dbsafe::config::Config) -> Result<ExitCode> {
    let store = report_store(args, cfg, "--list")?;
    let l = dbsafe::listing::list(
        store.as_ref(),
        args.series.env.as_deref(),
        args.series.database.as_deref(),
        chrono::Utc::now(),
    )?;
    if args.common.json {
        dbsafe::cli::print_json(&l)?;
        return Ok(ExitCode::Success);
    }
    dbsafe::outln!("store {}", l.store)?;
    for (title, rows) in [
        ("backups", &l.backups),
        ("safety backups (taken before restores)", &l.safety),
    ] {
        dbsafe::outln!("{title}: {}", rows.len())?;
        for b in rows.iter() {
            let verified = match (&b.verified, &b.verified_level) {
                (Some(r), Some(level)) => format!("{r} ({level})"),
                _ => "not verified".into(),
            };
            dbsafe::outln!(
                "  {}  {:<4}  {:<8}  {:>10}  {:<4}  {:<16}{}  {}",
                b.time,
                b.kind,
                b.engine,
                dbsafe::units::human_bytes(b.size_bytes),
                b.encryption,
                verified,
                if b.pinned { "  pinned" } else { "" },
                b.file
            )?;
        }
    }
    for w in &l.recovery_windows {
        dbsafe::outln!(
            "recovery window, timeline {} ({}): {} to {}{}",
            w.timeline,
            w.role,
            w.from.as_deref().unwrap_or("(no base backup)"),
            w.to.as_deref().unwrap_or("-"),
            if w.gaps.is_empty() {
                String::new()
            } else {
                format!("; gaps {}", w.gaps.join(", "))
            }
        )?;
    }
    Ok(ExitCode::Success)
}

fn status(args: &cli::Cli, log: &Log, cfg: &dbsafe::config::Config) -> Result<ExitCode> {
    let store = report_store(args, cfg, "--status")?;
    let t = dbsafe::health::Thresholds {
        max_age: dbsafe::units::parse_duration(&args.max_age)?,
        min_count: args.min_count,
        max_wal_lag: args
            .max_wal_lag
            .as_deref()
            .map(dbsafe::units::parse_duration)
            .transpose()?,
        env: args.series.env.clone(),
        database: args.series.database.clone(),
    };
    let h = dbsafe::health::assess(store.as_ref(), &t, chrono::Utc::now())?;
    if args.common.json {
        dbsafe::cli::print_json(&h)?;
    } else {
        dbsafe::outln!("store {}: {}", h.store, h.readiness)?;
        for s in &h.series {
            dbsafe::outln!(
                "  {}: {} backups, {}, newest {} ({} old), {} verified{}",
                s.series,
                s.count,
                dbsafe::units::human_bytes(s.total_bytes),
                s.newest,
                dbsafe::units::human_duration(std::time::Duration::from_secs(
                    s.newest_age_seconds.max(0) as u64
                )),
                s.verified_count,
                s.newest_verification
                    .as_deref()
                    .map(|v| format!(", last verification {v}"))
                    .unwrap_or_default()
            )?;
        }
        if !h.safety.is_empty() {
            dbsafe::outln!("  safety backups (taken before restores; not counted in readiness):")?;
            for s in &h.safety {
                dbsafe::outln!("    {}: {} backups, newest {}", s.series, s.count, s.newest)?;
            }
        }
        if let Some(w) = &h.wal {
            dbsafe::outln!("  WAL: {}", w.summary())?;
            for t in &w.timelines {
                dbsafe::outln!("    {}", t.summary())?;
            }
        }
        for p in &h.problems {
            log.warn(p);
        }
    }
    Ok(if h.readiness == "good" {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
