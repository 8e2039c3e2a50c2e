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
use dbsafe::{units, Error, ExitCode, Keyring, Kind, Result};
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
    let spec = args
        .target_time
        .as_deref()
        .expect("clap requires --target-time with --pgdata");
    let target = if spec == "latest" {
        RecoveryTarget::Latest
    } else {
        RecoveryTarget::Time(units::parse_time(spec)?)
    };

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
    let chosen = match &target {
        RecoveryTarget::Time(t) => bases.iter().rev().find(|b| b.0 <= *t).ok_or_else(|| {
            Error::not_found(format!(
                "no base backup finished before {}: the store can recover from {} onwards",
                t.to_rfc3339(),
                oldest.to_rfc3339()
            ))
        })?,
        _ => bases.last().expect("non-empty"),
    };
    let (finished, entry, meta) = chosen;
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::refused(format!("{} is not empty", dir.display()))
            .hint("restore into an empty or new directory; nothing was changed"));
    }
    let wal = keys.wal_source(&loc)?;
    let recovery = Recovery {
        target: target.clone(),
        exclusive: false,
        action: pgdata::TargetAction::Promote,
        timeline: "latest".into(),
        start: args.start,
        port: args.port,
        socket_dir: args.socket_dir.clone(),
        archive: !args.no_archive,
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
    if args.dry_run {
        println!("dbrestore plan (dry run, nothing changed):");
        println!(
            "  1. base backup {} (finished {})",
            entry.file(),
            finished.to_rfc3339()
        );
        println!(
            "  2. verify its sha256 while unpacking it into {}",
            dir.display()
        );
        println!("  3. configure recovery to {target_desc} with WAL from {} (restore_command walship fetch)", store.describe());
        if args.start {
            println!("  4. start the server on port {}, wait for recovery, promote, report the time reached", args.port);
        }
        return Ok(ExitCode::Success);
    }
    log.info(format!(
        "base backup {} (finished {}), recovering to {target_desc}",
        entry.file(),
        finished.to_rfc3339()
    ));
    let clock = Instant::now();
    let pg = PgData::new(dir.clone(), recovery, Origin::of(Some(meta)));
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
    if let Err(e) = audit.append(&dbsafe::audit::log_for(store.as_ref())) {
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
