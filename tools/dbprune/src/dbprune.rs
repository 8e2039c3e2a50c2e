//! dbprune: rotate backups.
#![forbid(unsafe_code)]

pub mod cli;

use chrono::Utc;
use dbsafe::artifact::Sidecar;
use dbsafe::audit::{self, AuditEntry};
use dbsafe::catalog::{self, Entry};
use dbsafe::config::Config;
use dbsafe::lock::Lock;
use dbsafe::retention::{self, Candidate, Decision, Policy};
use dbsafe::wal::{self, WalName};
use dbsafe::{store, units, ExitCode, Result, Store};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Serialize)]
struct Report {
    store: String,
    dry_run: bool,
    backups: Vec<Decision>,
    deleted: usize,
    deleted_bytes: u64,
    temporaries_removed: Vec<String>,
    orphan_sidecars_removed: Vec<String>,
    wal_deleted: Vec<String>,
    warnings: Vec<String>,
}

/// Runs dbprune with parsed arguments.
pub fn run(args: cli::Cli) -> Result<ExitCode> {
    let log = args.common.log("dbprune");
    let cfg = Config::load(args.common.config.as_deref())?;
    dbsafe::notify::configure_from(&cfg, args.series.env.as_deref().unwrap_or("default"));
    dbsafe::notify::about(dbsafe::notify::About {
        store: Some(&args.store),
        ..Default::default()
    });
    let store = store::open(&args.store, false)?;
    let _lock = Lock::on_store(store.as_ref(), "dbprune", Duration::ZERO)?;
    let now = Utc::now();
    let flags = flag_policy(&args)?;
    let entries: Vec<Entry> = catalog::list(store.as_ref())?
        .into_iter()
        .filter(|e| args.series.matches(&e.name))
        .collect();
    let pins = dbsafe::release::pinned(store.as_ref())?;
    let mut decisions = Vec::new();
    let mut by_env: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for e in &entries {
        let verified = catalog::read_verify(store.as_ref(), e)?.is_some_and(|v| v.passed());
        by_env
            .entry(e.name.env.clone())
            .or_default()
            .push(Candidate {
                id: e.file(),
                series: e.name.series_id(),
                time: e.name.timestamp,
                verified,
                pinned: pins.contains(&e.file()) || pins.contains(&e.name.backup_name()),
                size: e.object.size,
            });
    }
    for (env, candidates) in by_env {
        // Safety backups are kept by their own rule: the config's for that
        // environment (`[env.production-safety]`), else seven days (and, as
        // for every series, the newest). Rule flags reach them only in a
        // run that names their environment (`--env production-safety`).
        let safety = env.ends_with(catalog::SAFETY_SUFFIX);
        let named = args.series.env.as_deref() == Some(env.as_str());
        let policy = match &flags {
            Some(p) if !safety || named => p.clone(),
            _ if safety => cfg
                .env(&env)
                .and_then(|e| e.retention.clone())
                .unwrap_or_else(retention::Policy::safety_default),
            _ => cfg.retention_for(&env),
        };
        decisions.extend(retention::decide(&candidates, &policy, now));
    }
    let mut warnings = Vec::new();
    if let Some(max) = args
        .max_total
        .as_deref()
        .map(units::parse_size)
        .transpose()?
    {
        let total: u64 = decisions.iter().map(|d| d.size).sum();
        if !retention::make_room(&mut decisions, "--max-total", |freed| {
            total.saturating_sub(freed) > max
        }) {
            warnings.push(format!(
                "--max-total {}: protected backups alone exceed it",
                units::human_bytes(max)
            ));
        }
    }
    if let Some(min) = args
        .min_free
        .as_deref()
        .map(units::parse_size)
        .transpose()?
    {
        match store.free_space() {
            Some(free) => {
                if !retention::make_room(&mut decisions, "--min-free", |freed| free + freed < min) {
                    warnings.push(format!(
                        "--min-free {}: protected backups stop further deletion; the filesystem will have less free",
                        units::human_bytes(min)
                    ));
                }
            }
            None => warnings.push("--min-free: this store cannot report free space".into()),
        }
    }
    decisions.sort_by(|a, b| a.series.cmp(&b.series).then(a.time.cmp(&b.time)));
    // A series one of whose backups is being verified or restored (on this
    // host) keeps its backups this run; the locks are held until the end.
    let mut deleting = BTreeMap::new();
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        if !deleting.contains_key(&d.series) {
            let lock = Lock::for_deleting(store.as_ref(), &d.series)?;
            deleting.insert(d.series.clone(), lock);
        }
        if deleting[&d.series].is_none() {
            d.keep = true;
            d.protected = true;
            d.reasons = vec!["in use: a restore or verification of its series is reading".into()];
        }
    }
    let in_use: Vec<&String> = deleting
        .iter()
        .filter(|(_, l)| l.is_none())
        .map(|(s, _)| s)
        .collect();
    if !in_use.is_empty() {
        let in_use: Vec<&str> = in_use.iter().map(|s| s.as_str()).collect();
        warnings.push(format!(
            "kept this run, being read by a restore or verification: the backups of {}",
            in_use.join(", ")
        ));
    }

    let stale = units::parse_duration(&args.stale_tmp)?;
    let mut report = Report {
        store: store.describe(),
        dry_run: args.dry_run,
        deleted: decisions.iter().filter(|d| !d.keep).count(),
        deleted_bytes: decisions.iter().filter(|d| !d.keep).map(|d| d.size).sum(),
        temporaries_removed: Vec::new(),
        orphan_sidecars_removed: Vec::new(),
        wal_deleted: Vec::new(),
        warnings,
        backups: decisions,
    };
    let by_file: BTreeMap<String, &Entry> = entries.iter().map(|e| (e.file(), e)).collect();
    // Deletions the audit log cannot record are not made.
    let audit_log = (!args.dry_run && report.backups.iter().any(|d| !d.keep))
        .then(|| audit::Log::of(store.as_ref()))
        .transpose()?;
    // Pointers move off the backups first: a deletion that fails or is
    // killed midway never leaves one pointing at nothing.
    if !args.dry_run {
        repoint_latest(store.as_ref(), &report.backups, &by_file)?;
    }
    for d in report.backups.iter().filter(|d| !d.keep) {
        let e = by_file[&d.id];
        let Some(audit_log) = &audit_log else {
            // A dry run: its plan is the report, on stdout (unless --json says it whole).
            if !args.common.json {
                dbsafe::outln!("would delete {} ({})", d.id, d.reasons.join("; "))?;
            }
            continue;
        };
        delete_backup(store.as_ref(), e, d, audit_log)?;
        log.info(format!("deleted {} ({})", d.id, d.reasons.join("; ")));
    }
    for d in report.backups.iter().filter(|d| d.keep) {
        log.debug(format!("keep {} ({})", d.id, d.reasons.join("; ")));
    }
    let leftovers = Leftovers {
        store: store.as_ref(),
        cutoff: now - chrono::Duration::from_std(stale).unwrap_or(chrono::Duration::MAX),
        dry_run: args.dry_run,
    };
    report.temporaries_removed = leftovers.temporaries()?;
    report.orphan_sidecars_removed = leftovers.orphan_sidecars()?;
    if args.wal {
        // A base series being read keeps its backups this run (above), and
        // with them the WAL after their start, which a recovery reads.
        let (deleted, warn) = prune_wal(store.as_ref(), &report.backups, args.dry_run)?;
        report.wal_deleted = deleted;
        report.warnings.extend(warn);
    }
    for w in &report.warnings {
        log.warn(w);
    }
    log.info(format!(
        "{} {} backups ({}), kept {}; {} temporaries, {} WAL files",
        if args.dry_run {
            "would delete"
        } else {
            "deleted"
        },
        report.deleted,
        units::human_bytes(report.deleted_bytes),
        report.backups.len() - report.deleted,
        report.temporaries_removed.len(),
        report.wal_deleted.len()
    ));
    if !args.dry_run {
        let mut per_series: BTreeMap<String, f64> = BTreeMap::new();
        for d in &report.backups {
            *per_series.entry(d.series.clone()).or_default() += if d.keep { 0.0 } else { 1.0 };
        }
        let samples: Vec<_> = per_series
            .into_iter()
            .filter_map(|(series, n)| {
                let e = entries.iter().find(|e| e.name.series_id() == series)?;
                Some(dbsafe::metrics::Sample::new(
                    "dbsafe_prune_deleted_total",
                    "Backups dbprune deleted.",
                    &e.name.env,
                    &e.name.database,
                    n,
                ))
            })
            .collect();
        args.common.metrics(&cfg).record("dbprune", &samples);
    }
    if args.common.json {
        dbsafe::cli::print_json(&report)?;
    }
    Ok(
        if report
            .warnings
            .iter()
            .any(|w| w.starts_with("--min-free") || w.starts_with("--max-total"))
        {
            ExitCode::Failure
        } else {
            ExitCode::Success
        },
    )
}

fn flag_policy(args: &cli::Cli) -> Result<Option<Policy>> {
    let p = Policy {
        keep_last: args.keep_last,
        keep_within: args
            .keep_within
            .as_deref()
            .map(units::parse_duration)
            .transpose()?,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
    };
    Ok((!p.is_empty()).then_some(p))
}

/// Deletes the artifact first, then its sidecars: a crash in between leaves
/// only orphan sidecars, which the next run removes.
fn delete_backup(store: &dyn Store, e: &Entry, d: &Decision, log: &audit::Log) -> Result<()> {
    let clock = std::time::Instant::now();
    let mut audit = AuditEntry::new("dbprune", "prune-delete", &e.file(), &store.describe());
    let result = store.delete(e.key()).and_then(|_| {
        for s in Sidecar::ALL {
            store.delete(&e.sidecar(s))?;
        }
        Ok(())
    });
    audit.duration_seconds = clock.elapsed().as_secs_f64();
    audit.result = if result.is_ok() { "success" } else { "failure" }.into();
    audit.details =
        serde_json::json!({ "reasons": d.reasons, "size_bytes": d.size, "series": d.series });
    log.append(&audit)?;
    result
}

/// A series' `_latest` pointer (one for each layering: `.sqlite.zst`,
/// `.sqlite.zst.age`) on a backup this run deletes moves to the newest kept
/// backup of the same layers, or goes when none is left: never dangling.
fn repoint_latest(
    store: &dyn Store,
    decisions: &[Decision],
    by_file: &BTreeMap<String, &Entry>,
) -> Result<()> {
    let kept: Vec<&Entry> = decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| by_file[&d.id])
        .collect();
    for d in decisions.iter().filter(|d| !d.keep) {
        let gone = by_file[&d.id];
        let pointer = store::key(store::BACKUPS, &gone.name.latest_name());
        if store.pointer(&pointer)?.as_deref() != Some(gone.key()) {
            continue;
        }
        let next = kept
            .iter()
            .filter(|e| e.name.latest_name() == gone.name.latest_name())
            .max_by_key(|e| e.name.timestamp);
        match next {
            Some(e) => store.set_pointer(&pointer, e.key())?,
            None => store.delete(&pointer)?,
        }
    }
    Ok(())
}

/// What crashed writers left, older than `--stale-tmp` (`cutoff`).
struct Leftovers<'a> {
    store: &'a dyn Store,
    cutoff: chrono::DateTime<Utc>,
    dry_run: bool,
}

impl Leftovers<'_> {
    fn remove(&self, id: &str, how: impl FnOnce() -> Result<()>) -> Result<String> {
        if !self.dry_run {
            how()?;
        }
        Ok(id.to_string())
    }

    /// Temporaries of writers that are gone.
    fn temporaries(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for prefix in [store::BACKUPS, store::WAL] {
            for t in self.store.temporaries(prefix)? {
                // A live writer's temporary stays, whatever --stale-tmp says.
                if t.started < self.cutoff && !t.writer_alive {
                    removed.push(self.remove(&t.id, || self.store.remove_temporary(&t.id))?);
                }
            }
        }
        Ok(removed)
    }

    /// Sidecars whose artifact is not there.
    fn orphan_sidecars(&self) -> Result<Vec<String>> {
        let (store, cutoff) = (self.store, self.cutoff);
        let objects = store.list(store::BACKUPS)?;
        let keys: BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let mut removed = Vec::new();
        for o in &objects {
            if let Some(a) = Sidecar::artifact_of(&o.key) {
                // Sidecars are committed before their artifact: a young one may
                // be a writer's about to commit it (on another host of a shared
                // bucket, whose lock this one cannot see), as may one whose
                // series' lock a writer holds.
                if o.modified < cutoff
                    && !keys.contains(a)
                    && catalog_name(a)
                    && !being_written(store, a)
                {
                    removed.push(self.remove(&o.key, || store.delete(&o.key))?);
                }
            }
        }
        Ok(removed)
    }
}

/// Whether a writer holds the series lock of the artifact `key`.
fn being_written(store: &dyn Store, key: &str) -> bool {
    let Ok(name) = dbsafe::ArtifactName::parse(key.rsplit('/').next().unwrap_or(key)) else {
        return false;
    };
    matches!(
        dbsafe::lock::Lock::on_store(store, &name.series(), Duration::ZERO),
        Err(e) if e.kind == dbsafe::error::Kind::Busy
    )
}

fn catalog_name(key: &str) -> bool {
    dbsafe::ArtifactName::parse(key.rsplit('/').next().unwrap_or(key)).is_ok()
}

/// Deletes archived WAL older than the start of the oldest base backup the
/// store keeps: of every series, not only those the run's filters chose.
fn prune_wal(
    store: &dyn Store,
    decisions: &[Decision],
    dry_run: bool,
) -> Result<(Vec<String>, Vec<String>)> {
    // A real run has deleted its backups already: the store says what is kept.
    let leaving: BTreeSet<String> = decisions
        .iter()
        .filter(|d| dry_run && !d.keep)
        .map(|d| d.id.clone())
        .collect();
    let Some(oldest) = dbsafe::walarchive::oldest_needed(store, &leaving)? else {
        return Ok((
            Vec::new(),
            vec!["--wal: no kept base backup; no WAL deleted".into()],
        ));
    };
    let mut deleted = Vec::new();
    for f in dbsafe::walarchive::list(store)? {
        let Some(n) = WalName::parse(&f.wal_file) else {
            continue;
        };
        if wal::prunable(&n, oldest) {
            if !dry_run {
                dbsafe::walarchive::delete(store, &f.key)?;
            }
            deleted.push(f.wal_file);
        }
    }
    Ok((deleted, Vec::new()))
}
