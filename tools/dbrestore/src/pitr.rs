//! Point-in-time recovery: a base backup plus archived WAL, replayed by PostgreSQL.

use crate::cli::Cli;
use dbsafe::artifact::Artifact;
use dbsafe::audit::AuditEntry;
use dbsafe::catalog;
use dbsafe::cli::Log;
use dbsafe::config::Config;
use dbsafe::engine::pgdata::{self, PgData, Recovery, RecoveryTarget};
use dbsafe::engine::Origin;
use dbsafe::progress::Progress;
use dbsafe::restore::Flow;
use dbsafe::timeline::{Lsn, Target, Timeline};
use dbsafe::{units, Error, ExitCode, Keyring, Kind, Result, Store};
use std::time::Instant;

/// Restores the newest base backup that finished before the target time into `--pgdata`.
pub fn run(args: &Cli, log: &Log, cfg: &Config, keys: &Keyring) -> Result<ExitCode> {
    let dir = args.pgdata.clone().expect("checked by the caller");
    let loc = args
        .store
        .clone()
        .or_else(|| cfg.store_for(args.env.as_deref().unwrap_or("default")))
        .ok_or_else(|| Error::usage("--pgdata needs --store STORE (or DBSAFE_STORE): base backups and WAL come from a store"))?;
    let store = dbsafe::store::open(&loc, false)?;
    let (target, spec, recorded_lsn) = recovery_target(args, store.as_ref())?;

    // Base backups of the selected series, with their metadata.
    let mut bases = Vec::new();
    for e in catalog::list(store.as_ref())? {
        if e.name.kind != Kind::Base
            || args.env.as_ref().is_some_and(|v| &e.name.env != v)
            || args
                .database
                .as_ref()
                .is_some_and(|d| &e.name.database != d)
        {
            continue;
        }
        let meta = catalog::read_meta(store.as_ref(), &e)?.ok_or_else(|| {
            Error::failed(format!(
                "{} has no metadata; cannot tell when it finished",
                e.file()
            ))
        })?;
        let finished = units::parse_time(&meta.finished_at)?;
        bases.push((finished, e, meta));
    }
    bases.sort_by_key(|b| b.0);
    let mut series: Vec<String> = bases.iter().map(|b| b.1.name.series()).collect();
    series.sort();
    series.dedup();
    if series.len() > 1 {
        return Err(Error::usage(format!(
            "several base backup series match: {}",
            series.join(", ")
        ))
        .hint("narrow with --env and --database"));
    }
    let Some(oldest) = bases.first().map(|b| b.0) else {
        return Err(
            Error::not_found(format!("no base backup in store {}", store.describe()))
                .hint("take one with dbsnap --base"),
        );
    };
    let stop_lsn =
        |m: &dbsafe::meta::Metadata| m.wal.as_ref().and_then(|w| Lsn::parse(&w.stop_lsn));
    let before_lsn = |l: Lsn| {
        bases
            .iter()
            .rev()
            .find(|b| stop_lsn(&b.2).is_some_and(|s| s <= l))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "no base backup ends before position {l}: the store can recover from {} onwards",
                    bases.first().and_then(|b| stop_lsn(&b.2)).map(|l| l.to_string()).unwrap_or_default()
                ))
            })
    };
    let chosen = match (&target, recorded_lsn) {
        (RecoveryTarget::Time(t), _) => {
            bases.iter().rev().find(|b| b.0 <= *t).ok_or_else(|| {
                Error::not_found(format!(
                    "no base backup finished before {}: the store can recover from {} onwards",
                    t.to_rfc3339(),
                    oldest.to_rfc3339()
                ))
            })?
        }
        (RecoveryTarget::Lsn(l), _) => before_lsn(*l)?,
        // A restore point the store recorded: the newest base backup before it.
        (RecoveryTarget::Name(_), Some(l)) => before_lsn(l)?,
        // A transaction or a restore point of unknown position may lie
        // before any but the oldest base backup: recovery from that one
        // reaches every point after it.
        (RecoveryTarget::Xid(_) | RecoveryTarget::Name(_), None) => {
            let b = bases.first().expect("non-empty");
            log.info(format!(
                "the target's position is not known: recovering from the oldest base backup, {}",
                b.1.file()
            ));
            b
        }
        _ => bases.last().expect("non-empty"),
    };
    let (finished, entry, meta) = chosen;
    // While it recovers, dbprune deletes neither its series nor WAL.
    let _reading = dbsafe::lock::Lock::reading(store.as_ref(), &entry.name.series_id())?;
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::refused(format!("{} is not empty", dir.display()))
            .hint("restore into an empty or new directory; nothing was changed"));
    }
    let wal = keys.wal_source(&loc)?;
    let timeline = choose_timeline(args, store.as_ref(), keys, meta, &target, recorded_lsn)?;
    log.info(format!("recovering along timeline {timeline}"));
    let recovery = Recovery {
        target: target.clone(),
        exclusive: args.target_exclusive,
        action: args.target_action,
        timeline,
        start: args.start,
        port: args.port,
        socket_dir: args.socket_dir.clone(),
        archive: args.archive,
        timeout: units::parse_duration(&args.recovery_timeout)?,
    };
    let target_desc = match &target {
        RecoveryTarget::Time(t) => t.to_rfc3339(),
        RecoveryTarget::Latest => "the end of the archived WAL".into(),
        RecoveryTarget::Immediate => "the end of the backup".into(),
        RecoveryTarget::Lsn(l) => format!("position {l}"),
        RecoveryTarget::Xid(x) => format!("transaction {x}"),
        RecoveryTarget::Name(n) => format!("restore point {n}"),
    };
    if args.change.dry_run {
        dbsafe::outln!("dbrestore plan (dry run, nothing changed):")?;
        dbsafe::outln!(
            "  1. base backup {} (finished {})",
            entry.file(),
            finished.to_rfc3339()
        )?;
        dbsafe::outln!(
            "  2. verify its sha256 while unpacking it into {}",
            dir.display()
        )?;
        dbsafe::outln!("  3. configure recovery to {target_desc} with WAL from {} (restore_command walship fetch)", store.describe())?;
        if args.start {
            dbsafe::outln!("  4. start the server on port {}, wait for recovery, promote, report the time reached", args.port)?;
        }
        return Ok(ExitCode::Success);
    }
    log.info(format!(
        "base backup {} (finished {}), recovering to {target_desc}",
        entry.file(),
        finished.to_rfc3339()
    ));
    let audit_log = dbsafe::audit::Log::of(store.as_ref())?;
    let clock = Instant::now();
    let pg = PgData::new(dir.clone(), recovery, Origin::of(Some(meta)));
    let local_store = dbsafe::store::directory_of(&loc);
    pg.check_server_reads(
        &keys
            .files()
            .into_iter()
            .chain(local_store)
            .collect::<Vec<_>>(),
    )?;
    let artifact = Artifact::entry(store.as_ref(), entry).with_meta(meta.clone());
    let mut audit = AuditEntry::new(
        "dbrestore",
        "pitr",
        &entry.file(),
        &format!("pgdata:{}", dir.display()),
    );
    let result = (|| {
        let mut reached = None;
        let report = Flow::new(keys)
            .run(&artifact, Progress::hidden(), &mut |_, _, input, _| {
                reached = pgdata::restore_base(&pg, input, Some(&wal))?;
                Ok(None)
            })?
            .finished()?;
        if !report.problems.is_empty() {
            return Err(Error::failed(format!(
                "{}: {}",
                entry.file(),
                report.problems.join("; ")
            )));
        }
        Ok(reached)
    })();
    audit.duration_seconds = clock.elapsed().as_secs_f64();
    audit.result = if result.is_ok() { "success" } else { "failure" }.into();
    audit.details = serde_json::json!({
        "target_time": spec,
        "started": args.start,
        "port": args.port,
        "reached": result.as_ref().ok().and_then(|r| r.as_ref()).and_then(|r| r.last_transaction.clone()),
        "error": result.as_ref().err().map(|e| e.to_string()),
    });
    if let Err(e) = audit_log.append(&audit) {
        log.warn(format!("cannot write the audit log: {e}"));
    }
    match result {
        Err(e) => {
            if !args.start {
                // A half-unpacked directory is worth nothing: leave it empty as found.
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e)
        }
        Ok(Some(reached)) => {
            log.info(format!(
                "recovered and promoted in {}; last transaction replayed: {}",
                units::human_duration(clock.elapsed()),
                reached
                    .last_transaction
                    .as_deref()
                    .unwrap_or("none recorded")
            ));
            if args.common.json {
                dbsafe::cli::print_json(&serde_json::json!({
                    "base_backup": entry.file(), "pgdata": dir, "port": args.port,
                    "target_time": spec, "reached": reached.last_transaction,
                    "duration_seconds": clock.elapsed().as_secs_f64(), "log": reached.log,
                }))?;
            }
            Ok(ExitCode::Success)
        }
        Ok(None) => {
            log.info(format!(
                "{} is ready: start it (as its owner) with pg_ctl -D {} start; it recovers to {target_desc} and promotes",
                dir.display(),
                dir.display()
            ));
            Ok(ExitCode::Success)
        }
    }
}

/// The recovery target the flags name, how to say it in the audit log, and
/// for a restore point the store recorded, where it is.
fn recovery_target(args: &Cli, store: &dyn Store) -> Result<(RecoveryTarget, String, Option<Lsn>)> {
    if let Some(spec) = &args.target_time {
        let t = if spec == "latest" {
            RecoveryTarget::Latest
        } else {
            RecoveryTarget::Time(units::parse_time(spec)?)
        };
        return Ok((t, spec.clone(), None));
    }
    if let Some(l) = &args.target_lsn {
        let lsn = Lsn::parse(l).ok_or_else(|| {
            Error::usage(format!(
                "--target-lsn {l:?}: a WAL position is written like 0/3000158"
            ))
        })?;
        return Ok((RecoveryTarget::Lsn(lsn), lsn.to_string(), None));
    }
    if let Some(x) = args.target_xid {
        return Ok((RecoveryTarget::Xid(x), format!("xid {x}"), None));
    }
    let name = args
        .target_name
        .clone()
        .expect("clap requires a recovery target with --pgdata");
    // A restore point walship recorded in the store says where it is.
    if let Some(rp) = dbsafe::walarchive::restore_point(store, &name)? {
        return Ok((
            RecoveryTarget::Name(name.clone()),
            format!("restore point {name} at {}", rp.lsn),
            Some(rp.lsn),
        ));
    }
    Ok((
        RecoveryTarget::Name(name.clone()),
        format!("restore point {name}"),
        None,
    ))
}

/// The timeline to recover along, chosen rather than left to PostgreSQL:
/// the one timeline reachable from the base backup that holds the target;
/// several are exit 2 (listed), none is exit 3.
fn choose_timeline(
    args: &Cli,
    store: &dyn Store,
    keys: &Keyring,
    meta: &dbsafe::meta::Metadata,
    target: &RecoveryTarget,
    recorded_lsn: Option<Lsn>,
) -> Result<String> {
    let wal = meta
        .wal
        .as_ref()
        .ok_or_else(|| Error::failed("the base backup's metadata has no WAL range"))?;
    let base_start = Lsn::parse(&wal.start_lsn)
        .ok_or_else(|| Error::failed(format!("bad start LSN {}", wal.start_lsn)))?;
    let timelines = dbsafe::walarchive::timelines_with_keys(store, keys)?;
    let reachable: Vec<&Timeline> = timelines.reachable(wal.timeline, base_start);
    if let Some(t) = &args.target_timeline {
        if t == "latest" || t == "current" {
            return Ok(t.clone());
        }
        let n: u32 = t.parse().map_err(|_| {
            Error::usage(format!(
                "--target-timeline {t:?}: a number, current or latest"
            ))
        })?;
        if !reachable.iter().any(|r| r.id == n) {
            return Err(Error::usage(format!(
                "timeline {n} cannot be reached from the base backup (timeline {}); reachable: {}",
                wal.timeline,
                reachable
                    .iter()
                    .map(|r| r.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        return Ok(n.to_string());
    }
    let wanted = match (target, recorded_lsn) {
        (RecoveryTarget::Time(t), _) => Some(Target::Time(*t)),
        (RecoveryTarget::Lsn(l), _) => Some(Target::Lsn(*l)),
        (RecoveryTarget::Latest, _) => Some(Target::Latest),
        (_, Some(l)) => Some(Target::Lsn(l)),
        _ => None,
    };
    let ids: Vec<u32> = match wanted {
        Some(w) => timelines.containing(wal.timeline, base_start, w),
        // A transaction id or an unrecorded restore point: any reachable timeline may hold it.
        None => reachable.iter().map(|t| t.id).collect(),
    };
    match ids[..] {
        [one] => Ok(one.to_string()),
        [] => Err(Error::not_found(format!(
            "no timeline reachable from the base backup holds the target; the archive has: {}",
            describe(&reachable)
        ))),
        _ => Err(Error::usage(format!(
            "the target lies on {} timelines: {}",
            ids.len(),
            describe(
                &reachable
                    .iter()
                    .copied()
                    .filter(|t| ids.contains(&t.id))
                    .collect::<Vec<_>>()
            )
        ))
        .hint("choose one with --target-timeline N")),
    }
}

fn describe(timelines: &[&Timeline]) -> String {
    timelines
        .iter()
        .map(|t| {
            format!(
                "timeline {}{} (newest WAL {}{})",
                t.id,
                t.parent()
                    .map(|p| format!(", branched from {} at {}", p.parent, p.switch))
                    .unwrap_or_default(),
                t.newest.as_ref().map(|n| n.0.as_str()).unwrap_or("none"),
                t.newest
                    .as_ref()
                    .map(|n| format!(", archived {}", n.1.to_rfc3339()))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
