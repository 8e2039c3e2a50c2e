//! A refresh: data moves down. A verified backup of the source is restored
//! into a side database next to the target, sanitized, migrated and
//! checked there, and swapped in by rename; the target's old database is
//! kept as the rollback point.

use crate::ops::{self, Backup, Parts, SideDb};
use crate::record::Recorder;
use crate::{Ctx, Plan};
use dbsafe::engine::side;
use dbsafe::engine::Engine;
use dbsafe::release::{self as rel, Kind};
use dbsafe::{Error, ExitCode, Result, Store};

pub(crate) fn run(ctx: &Ctx) -> Result<ExitCode> {
    let a = &ctx.args;
    let source = ctx.source()?;
    let target = ctx.target()?;
    rel::refresh_route(&ctx.chain(), &source.name, &target.name)?;
    if source.sensitive && a.sanitize.is_none() {
        return Err(Error::refused(format!(
            "{} is marked sensitive: a refresh from it needs --sanitize FILE.sql to mask personal data; nothing was changed",
            source.name
        ))
        .hint("pass --sanitize with the SQL that masks it (run on the copy before it is swapped in)"));
    }
    if let Some(f) = &a.sanitize {
        if !f.is_file() {
            return Err(Error::usage(format!(
                "--sanitize {}: no such file",
                f.display()
            )));
        }
    }
    let src_engine = dbsafe::engine::open(&source.url)?;
    let engine = dbsafe::engine::open(&target.url)?;
    if src_engine.engine() != engine.engine() {
        return Err(Error::usage(format!(
            "{} is {} and {} is {}: a refresh copies between databases of one engine",
            source.name,
            src_engine.engine(),
            target.name,
            engine.engine()
        )));
    }
    let home = side::home(&target.url)?;
    if a.backup.is_none() && !a.latest_verified {
        ctx.require_identity(&source, "refresh")?;
    }
    ctx.args
        .change
        .require_confirmation_possible(&target.name)?;
    let store = ops::open_store(&target.store, a.change.dry_run)?;
    let take_snapshot = a.backup.is_none() && !a.latest_verified;
    let src_store = match dbsafe::store::open(&source.store, take_snapshot && !a.change.dry_run) {
        Ok(s) => Some(s),
        // A dry run of a refresh whose snapshot would be the store's first.
        Err(_) if a.change.dry_run && take_snapshot => None,
        Err(e) => return Err(e.context(format!("{}'s store", source.name))),
    };
    let hold = ops::lock_target(ctx, store.as_deref(), home.as_ref(), &target.name)?;
    if !engine.exists()? {
        return Err(Error::not_found(format!(
            "the target database {} does not exist",
            engine.url()
        ))
        .hint("a refresh swaps a copy in for an existing database; create an empty one first"));
    }
    // Sessions now refuse at once, rather than after the copy is made; the swap checks again.
    let sessions = home.sessions(&[&home.target()])?;
    if !sessions.is_empty() && ctx.grace.is_none() && !a.change.dry_run {
        return Err(Error::refused(format!(
            "{} session(s) connected to {}: {}; nothing was changed",
            sessions.len(),
            home.target(),
            sessions
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("stop the clients, or pass --grace D: PostgreSQL sessions are ended after D, a process holding a file is waited for up to D"));
    }
    // Two refreshes in one second must not share a manifest.
    let mut version = rel::refresh_version(chrono::Utc::now());
    if let Some(store) = &store {
        let base = version.clone();
        let mut n = 1;
        while rel::read(store.as_ref(), &target.name, &version)?.is_some() {
            n += 1;
            version = format!("{base}-{n}");
        }
    }
    let parts = Parts {
        version: &version,
        source: &source,
        target: &target,
        engine: engine.as_ref(),
        home: home.as_ref(),
    };
    if a.change.dry_run {
        return plan(ctx, &parts, sessions.len()).print(ctx);
    }
    let store = store.expect("opened with create outside dry runs");
    let audit_log = &hold.as_ref().expect("held outside dry runs").audit;
    let src_store = src_store.expect("opened with create outside dry runs");
    let mut m = parts.manifest(Kind::Refresh);
    if let Some(f) = &a.sanitize {
        m.sanitize = Some(format!("{} (sha256 {})", f.display(), ops::file_sha256(f)?));
    }
    // The manifest also goes to the source's store, so the backup it names is pinned there.
    let mut stores: Vec<&dyn Store> = vec![store.as_ref()];
    if src_store.describe() != store.describe() {
        stores.push(src_store.as_ref());
    }
    let mut rec = Recorder::new(ctx, m, stores, audit_log, "refresh");
    let outcome = execute(
        ctx,
        &mut rec,
        &parts,
        src_engine.as_ref(),
        src_store.as_ref(),
    );
    rec.conclude(outcome)
}

/// The steps, from the backup of the source (in `src_store`) to the cleanup.
fn execute(
    ctx: &Ctx,
    rec: &mut Recorder<'_>,
    parts: &Parts<'_>,
    src_engine: &dyn Engine,
    src_store: &dyn Store,
) -> Result<()> {
    let Parts {
        version,
        source,
        target,
        home,
        ..
    } = *parts;
    let a = &ctx.args;
    let backup: Backup = rec.step("backup", |d| {
        let b = if a.backup.is_some() || a.latest_verified {
            ops::existing_backup(
                src_store,
                &source.name,
                &src_engine.database(),
                a.backup.as_deref(),
            )?
        } else {
            let labels = ops::labels(
                format!("refresh of {} (dbpromote)", target.name),
                "refresh",
                version,
            );
            ops::take_backup(ctx, src_engine, src_store, &source.name, labels)?
        };
        *d = format!("{} (store {})", b.r.name, b.r.store);
        Ok(b)
    })?;
    rec.pin_verified(src_store, &backup, |m| &mut m.source_backup)?;

    let b = &target.name;
    let side = SideDb::new(home, home.side_name(&side::owned_tag("refresh")))?;
    let env = ops::command_env(home, &side.name, b, version, "rehearsal");
    let prepared = (|| -> Result<()> {
        rec.restore("restore", src_store, &backup, side.engine())?;
        match &a.sanitize {
            Some(f) => rec.step("sanitize", |d| {
                home.run_sql_file(&side.name, f)?;
                *d = format!("{} on {}", f.display(), side.name);
                Ok(())
            })?,
            None => rec.skip("sanitize", "no --sanitize script"),
        }
        rec.optional_shell(
            "migrate",
            "migrate",
            target.commands.migrate.as_deref(),
            &env,
            "migrate",
        )?;
        rec.health_check(target, &env)?;
        rec.confirm(
            &format!(
                "replace {b}'s database {} with a copy of {}'s (the old one is kept)",
                home.target(),
                source.name
            ),
            b,
        )?;
        let prev = home.side_name(&side::stamped_tag("prev"));
        let swap = rec.step("swap", |d| {
            let s = home.swap(&side.name, &prev, ctx.grace)?;
            *d = swap_detail(&s, &home.target(), &prev);
            Ok(s)
        })?;
        rec.m.swap_ms = Some(swap.duration.as_millis() as u64);
        rec.m.previous_database = Some(prev);
        Ok(())
    })();
    match prepared {
        Ok(()) => side.keep(),
        Err(e) => {
            let _ = rec.step("drop-side", |d| {
                *d = side.remove()?;
                Ok(())
            });
            return Err(e.context(format!("{b} was not changed")));
        }
    }
    rec.step("cleanup", |d| {
        let prevs = home.sides("prev_")?;
        let drop_n = prevs.len().saturating_sub(a.keep_previous as usize);
        let mut dropped = Vec::new();
        for p in &prevs[..drop_n] {
            home.remove(p)?;
            dropped.push(p.clone());
        }
        *d = if dropped.is_empty() {
            format!("{} previous database(s) kept", prevs.len())
        } else {
            format!(
                "dropped older previous databases {} (--keep-previous {})",
                dropped.join(", "),
                a.keep_previous
            )
        };
        Ok(())
    })
}

/// The swap's line in the report and the manifest.
pub(crate) fn swap_detail(s: &side::Swap, target: &str, kept: &str) -> String {
    let mut d = format!(
        "swapped in {} ms; old database kept as {kept}",
        s.duration.as_millis()
    );
    if !s.ended.is_empty() {
        d.push_str(&format!(
            "; after {} of grace, ended {} session(s) on {target}: {}",
            dbsafe::units::human_duration(s.waited),
            s.ended.len(),
            s.ended
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for n in &s.notes {
        d.push_str(&format!("; warning: {n}"));
    }
    d
}

fn plan(ctx: &Ctx, parts: &Parts<'_>, sessions: usize) -> Plan {
    let (source, target, home) = (parts.source, parts.target, parts.home);
    let a = &ctx.args;
    let b = &target.name;
    let mut steps = vec![parts.lock_step()];
    steps.push(match (&a.backup, a.latest_verified) {
        (Some(n), _) => format!("use backup {n} from store {}", source.store),
        (None, true) => format!(
            "use the newest verified backup of {} from store {}",
            source.name, source.store
        ),
        (None, false) => format!("snapshot {} into store {}", source.name, source.store),
    });
    steps.push("verify it (level full)".into());
    let side = home.side_name("refresh_XXXXXXXX");
    steps.push(format!("restore it into the side database {side}"));
    steps.push(match &a.sanitize {
        Some(f) => format!("run {} on {side} in one transaction", f.display()),
        None => "no sanitize script".into(),
    });
    for (what, cmd) in [
        ("migrate", &target.commands.migrate),
        ("health check", &target.commands.health_check),
    ] {
        steps.push(match cmd {
            Some(c) => format!("{what}: run `{c}` with DATABASE_URL set to {side}"),
            None => format!("no {what} command"),
        });
    }
    steps.push(ctx.args.change.confirm_step(b));
    let prev = home.side_name("prev_YYYYMMDD_HHMMSS_XXXX");
    steps.push(match (sessions, ctx.grace) {
        (0, _) => format!("swap: rename {} to {prev} and {side} to {} (no sessions connected now)", home.target(), home.target()),
        (n, Some(g)) => format!(
            "swap: {n} session(s) connected now would be ended after {}; rename {} to {prev} and {side} to {}",
            dbsafe::units::human_duration(g),
            home.target(),
            home.target()
        ),
        (n, None) => format!("swap: would be refused (exit 4): {n} session(s) connected and no --grace"),
    });
    steps.push(format!(
        "drop previous databases beyond the newest {}",
        a.keep_previous
    ));
    steps.push(parts.record_step(Some(&source.store)));
    steps.push(format!(
        "on failure before the swap: drop {side}; {} is not changed",
        parts.engine.url()
    ));
    parts.plan("refresh", steps)
}
